import {
  Binary,
  BSONRegExp,
  Code,
  Decimal128,
  Double,
  Int32,
  Long,
  ObjectId,
  Timestamp,
  UUID,
  deserialize,
  serialize,
} from 'bson';
import { describe, expect, it } from 'vitest';
import { parseColumnSpecs } from '../../../src/schema/column-spec.js';
import { planEvolution } from '../../../src/schema/evolve.js';
import { inferColumns } from '../../../src/schema/infer.js';
import { historyTableSchema } from '../../../src/schema/table-schema.js';
import { type ColumnSpec } from '../../../src/schema/types.js';
import { compileRowMapper } from '../../../src/transform/row-mapper.js';
import { lostLeaves, rowProblems } from '../../support/row-oracle.js';

const bsonExact = (doc: Record<string, unknown>) => deserialize(serialize(doc), { promoteValues: false });

function typesOf(columns: readonly ColumnSpec[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const c of columns) {
    out[c.name] = `${c.mode === 'REPEATED' ? 'REPEATED ' : ''}${c.type}`;
    if (c.fields) for (const [k, v] of Object.entries(typesOf(c.fields))) out[`${c.name}.${k}`] = v;
  }
  return out;
}

describe('schema inference', () => {
  it('follows the type lattice', async () => {
    const columns = await inferColumns([
      bsonExact({
        _id: new ObjectId(),
        i: new Int32(1),
        mix: new Int32(1),
        dec: Decimal128.fromString('1.5'),
        when: new Date(0),
        ref: new ObjectId(),
        bin: new Binary(Buffer.from('x')),
        u: new UUID(),
        flag: true,
        sub: { a: 'x' },
        tags: ['a'],
        nested: [[1]],
        odd: 'x',
      }),
      bsonExact({
        _id: new ObjectId(),
        i: Long.fromNumber(2),
        mix: new Double(2.5),
        dec: new Int32(2),
        sub: { b: 1 },
        tags: [],
        odd: 1,
        onlyNull: null,
        empty: [],
      }),
    ]);
    expect(typesOf(columns)).toEqual({
      _id: 'STRING',
      bin: 'BYTES',
      dec: 'BIGNUMERIC',
      flag: 'BOOLEAN',
      i: 'INTEGER',
      mix: 'FLOAT',
      nested: 'JSON',
      odd: 'JSON',
      ref: 'STRING',
      sub: 'RECORD',
      'sub.a': 'STRING',
      'sub.b': 'INTEGER',
      tags: 'REPEATED STRING',
      u: 'STRING',
      when: 'TIMESTAMP',
    });
    expect(columns[0]).toEqual({ name: '_id', type: 'STRING', mongo_field: '_id', primary_key: true });
  });

  // Defect 5 of the original: inference scanned the whole collection and silently dropped fields with
  // conflicting or unsupported types (Decimal128, non-_id ObjectId, Binary, Timestamp).
  it('defect 5: reads a bounded sample and gives every field a column, JSON when nothing else holds it', async () => {
    let produced = 0;
    async function* endless() {
      for (;;) {
        await Promise.resolve();
        produced++;
        yield bsonExact({
          _id: produced,
          price: Decimal128.fromString('9.99'),
          owner: new ObjectId(),
          blob: new Binary(Buffer.from('b'), 5),
          ts: new Timestamp({ t: produced, i: 1 }),
          conflict: produced % 2 === 0 ? 'text' : new Int32(produced),
          re: new BSONRegExp('a', 'i'),
          code: new Code('x'),
        });
      }
    }
    const columns = await inferColumns(endless(), { maxSamples: 50 });
    expect(produced).toBeLessThanOrEqual(51);
    expect(typesOf(columns)).toEqual({
      _id: 'STRING',
      blob: 'JSON',
      code: 'JSON',
      conflict: 'JSON',
      owner: 'STRING',
      price: 'BIGNUMERIC',
      re: 'JSON',
      ts: 'JSON',
    });
  });

  it('makes names legal, unique regardless of case, and clear of metadata and reserved prefixes', async () => {
    const columns = await inferColumns([
      {
        _id: 1,
        'a b': 1,
        a_b: 2,
        Name: 'x',
        name: 'y',
        $weird: 1,
        '': 2,
        '1st': 3,
        time_archived: 'x',
        _PARTITIONTIME: 1,
        é: 1,
      },
    ]);
    expect(columns.map((c) => [c.name, c.mongo_field])).toEqual([
      ['_id', '_id'],
      ['_empty', ''],
      ['_weird', '$weird'],
      ['_1st', '1st'],
      ['Name', 'Name'],
      ['x_PARTITIONTIME', '_PARTITIONTIME'],
      ['a_b_2', 'a b'],
      ['a_b', 'a_b'],
      ['name_2', 'name'],
      ['time_archived_2', 'time_archived'],
      ['_', 'é'],
    ]);
    expect(() => parseColumnSpecs(columns)).not.toThrow();
  });

  it('is deterministic whatever the sample order', async () => {
    const docs = [
      { _id: 1, a: 1, B: 'x', b: { c: 1 } },
      { _id: 2, a: 2.5, b: { d: [1, 2] }, 'a.x': true },
      { _id: 3, A: null, e: [{ f: 1 }, { g: 'x' }] },
    ];
    const forward = await inferColumns(docs);
    const backward = await inferColumns([...docs].reverse());
    expect(backward).toEqual(forward);
  });

  it('degrades to JSON past 15 levels and with arrays of arrays', async () => {
    let deep: Record<string, unknown> = { leaf: 1 };
    for (let i = 0; i < 20; i++) deep = { [`l${i}`]: deep };
    const columns = await inferColumns([{ _id: 1, deep, grid: [[1, 2], [3]] }]);
    let depth = 0;
    let c: ColumnSpec | undefined = columns.find((x) => x.name === 'deep');
    while (c?.type === 'RECORD') {
      depth++;
      c = c.fields?.[0];
    }
    expect(depth).toBe(14);
    expect(c?.type).toBe('JSON');
    expect(columns.find((x) => x.name === 'grid')?.type).toBe('JSON');
    expect(() => parseColumnSpecs(columns)).not.toThrow();
  });

  it('stays within 10,000 columns; the fields beyond wait in _unmapped', async () => {
    const wide: Record<string, unknown> = { _id: 1 };
    for (let i = 0; i < 20_000; i++) wide[`f${String(i).padStart(5, '0')}`] = i;
    const columns = await inferColumns([wide]);
    expect(historyTableSchema(columns)).toHaveLength(10_000);
    const mapper = compileRowMapper(columns);
    const { row } = mapper.map(wide);
    expect(rowProblems(historyTableSchema(columns), { ...row })).toEqual(
      expect.not.arrayContaining([expect.stringMatching(/not in schema/)]),
    );
    expect(lostLeaves(columns, row, wide)).toEqual([]);
    expect(Object.keys(JSON.parse(String(row._unmapped)) as object)).toHaveLength(20_000 - (10_000 - 8));
  });
});

describe('schema evolution', () => {
  const base = parseColumnSpecs([
    { name: '_id', type: 'STRING', mongo_field: '_id', primary_key: true },
    { name: 'n', type: 'INTEGER', mongo_field: 'n' },
    { name: 'sub', type: 'RECORD', mongo_field: 'sub', fields: [{ name: 'a', type: 'STRING' }] },
    {
      name: 'items',
      type: 'RECORD',
      mode: 'REPEATED',
      mongo_field: 'items',
      fields: [{ name: 'sku', type: 'STRING' }],
    },
  ]).columns;

  it('adds new columns and RECORD sub-fields, never changes a type', () => {
    const { columns, additions } = planEvolution(base, {
      _id: 1,
      n: 'not a number',
      sub: { a: 'x', b: new Date(0) },
      items: [{ sku: 'a', qty: 2 }],
      fresh: [1.5],
      N: true,
    });
    expect(
      additions.map((a) => [a.parent.join('.'), a.column.name, a.column.type, a.column.mode ?? 'NULLABLE']),
    ).toEqual([
      ['sub', 'b', 'TIMESTAMP', 'NULLABLE'],
      ['items', 'qty', 'INTEGER', 'NULLABLE'],
      ['', 'N_2', 'BOOLEAN', 'NULLABLE'],
      ['', 'fresh', 'FLOAT', 'REPEATED'],
    ]);
    expect(typesOf(columns).n).toBe('INTEGER');
    expect(() => parseColumnSpecs(columns)).not.toThrow();
    // Everything the document holds now has a column, except the misfit, which stays in _unmapped.
    const { row } = compileRowMapper(columns).map({
      _id: 1,
      n: 'x',
      sub: { a: 'x', b: new Date(0) },
      N: true,
    });
    expect(row._unmapped).toBe('{"n":"x"}');
  });

  it('returns the same columns when nothing is new', () => {
    const evolution = planEvolution(base, { _id: 1, n: 2, sub: { a: 'x' }, items: [] });
    expect(evolution.additions).toEqual([]);
    expect(evolution.columns).toBe(base);
  });
});
