import { readFileSync } from 'node:fs';
import { Decimal128, Int32, Long, ObjectId, Timestamp, deserialize, serialize } from 'bson';
import { describe, expect, it } from 'vitest';
import { parseColumnSpecs } from '../../../src/schema/column-spec.js';
import { historyTableSchema } from '../../../src/schema/table-schema.js';
import { InvalidUtf8String } from '../../../src/base/invalid-utf8.js';
import { compileRowMapper } from '../../../src/transform/row-mapper.js';
import { lostLeaves, rowProblems } from '../../support/row-oracle.js';

const settings = JSON.parse(
  readFileSync(new URL('../../fixtures/original-readme-settings.json', import.meta.url), 'utf8'),
) as { columns: unknown };

/** As the driver hands documents over: BSON bytes decoded with the default options. */
function wire(doc: Record<string, unknown>): Record<string, unknown> {
  return deserialize(serialize(doc));
}

describe('document to row', () => {
  const { columns } = parseColumnSpecs(settings.columns);
  const mapper = compileRowMapper(columns);

  it('maps a document shaped like the original README example (golden)', () => {
    const doc = wire({
      _id: new ObjectId('65a1b2c3d4e5f60718293a4b'),
      tracking_code: 48213,
      midnight_to_timestamp: {
        cpta: 2.75,
        activations: 12,
        spend: 33,
        date_start: '2018-05-01',
        ad_spend_id: 'as_981',
      },
      created_on_timestamp: 1525132800.5,
      lifetime_to_timestamp: { cpta: 3.1, activations: new Int32(140), spend: 434 },
      campaign: 'spring',
    });
    const { row, missingRequired } = mapper.map(doc);
    expect(row).toEqual({
      tracking_code: 48213,
      midnight_to_timestamp: {
        cpta: 2.75,
        activations: 12,
        spend: 33,
        date_start: '2018-05-01',
        ad_spend_id: 'as_981',
      },
      created_on_timestamp: 1525132800.5,
      lifetime_to_timestamp: { cpta: 3.1, activations: 140, spend: 434 },
      _unmapped: '{"campaign":"spring"}',
    });
    expect(missingRequired).toBeUndefined();
    expect(rowProblems(historyTableSchema(columns), { ...row, ...metadata() })).toEqual([]);
  });

  it('fills missing values with NULL and keeps a misfit in _unmapped at its path', () => {
    const { row } = mapper.map(
      wire({ _id: 1, tracking_code: 'T-1', midnight_to_timestamp: { cpta: 'n/a', extra: [1] } }),
    );
    expect(row).toEqual({
      tracking_code: null,
      midnight_to_timestamp: {
        cpta: null,
        activations: null,
        spend: null,
        date_start: null,
        ad_spend_id: null,
      },
      created_on_timestamp: null,
      lifetime_to_timestamp: null,
      _unmapped: '{"tracking_code":"T-1","midnight_to_timestamp":{"cpta":"n/a","extra":[1]}}',
    });
  });

  // Defect 1 of the original: deletes wrote the documentKey object into the STRING _id column.
  it('defect 1: a delete (document key only) puts the id string, not an object, into the _id column', () => {
    const idMapper = compileRowMapper(
      parseColumnSpecs([{ name: '_id', type: 'STRING', mongo_field: '_id', primary_key: true }, ...columns])
        .columns,
    );
    const documentKey = wire({ _id: new ObjectId('65a1b2c3d4e5f60718293a4b') });
    const { row } = idMapper.map(documentKey);
    expect(row._id).toBe('65a1b2c3d4e5f60718293a4b');
    expect(row._unmapped).toBeNull();
    expect(idMapper.map(wire({ _id: { tenant: 'a', n: 1 } })).row._id).toBe(
      '{"tenant":"a","n":{"$numberInt":"1"}}',
    );
  });

  it('keeps a whole array in _unmapped when an element cannot be stored, and the rest in the column', () => {
    const m = compileRowMapper(
      parseColumnSpecs([
        { name: 'tags', type: 'STRING', mode: 'REPEATED' },
        { name: 'items', type: 'RECORD', mode: 'REPEATED', fields: [{ name: 'qty', type: 'INTEGER' }] },
      ]).columns,
    );
    const doc = wire({
      _id: 1,
      tags: ['a', null, 'b'],
      items: [{ qty: 1 }, { qty: 2.5 }, { qty: 3, note: 'x' }],
    });
    const { row } = m.map(doc);
    expect(row.tags).toEqual(['a', 'b']);
    // Elements keep their place; the misfit sub-field is NULL there and the array is whole in _unmapped.
    expect(row.items).toEqual([{ qty: 1 }, { qty: null }, { qty: 3 }]);
    expect(JSON.parse(String(row._unmapped))).toEqual({
      tags: ['a', null, 'b'],
      items: [{ qty: 1 }, { qty: 2.5 }, { qty: 3, note: 'x' }],
    });
    expect(lostLeaves(m.columns, row, doc)).toEqual([]);
    expect(m.map(wire({ _id: 2 })).row).toEqual({ tags: [], items: [], _unmapped: null });
    expect(m.map(wire({ _id: 3, tags: null })).row).toEqual({
      tags: [],
      items: [],
      _unmapped: '{"tags":null}',
    });
  });

  it('reads dotted and escaped paths, and keeps unread siblings', () => {
    const m = compileRowMapper(
      parseColumnSpecs([
        { name: 'city', type: 'STRING', mongo_field: 'address.city' },
        { name: 'dotted', type: 'INTEGER', mongo_field: 'a\\.b' },
      ]).columns,
    );
    const doc = wire({ _id: 1, address: { city: 'Oslo', zip: '0150' }, 'a.b': 5, a: { b: 6 } });
    const { row } = m.map(doc);
    expect(row).toMatchObject({ city: 'Oslo', dotted: 5 });
    expect(JSON.parse(String(row._unmapped))).toEqual({ address: { zip: '0150' }, a: { b: 6 } });
  });

  it('does not read inherited properties for keys like constructor or __proto__', () => {
    const m = compileRowMapper(parseColumnSpecs([{ name: 'constructor', type: 'STRING' }]).columns);
    expect(m.map(wire({ _id: 1 })).row.constructor).toBeNull();
    const doc = deserialize(serialize({ _id: 1, ['__proto__']: { polluted: true } }));
    const { row } = m.map(doc);
    expect(JSON.parse(String(row._unmapped))).toEqual(JSON.parse('{"__proto__":{"polluted":true}}'));
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });

  it('reports REQUIRED columns without a value', () => {
    const m = compileRowMapper(
      parseColumnSpecs([{ name: 'must', type: 'STRING', mode: 'REQUIRED' }]).columns,
    );
    expect(m.map(wire({ _id: 1 })).missingRequired).toEqual(['must']);
    expect(m.map(wire({ _id: 1, must: 'x' })).missingRequired).toBeUndefined();
  });

  it('can opt out of _unmapped for fields no column reads, but still keeps misfits of its columns', () => {
    const m = compileRowMapper(parseColumnSpecs([{ name: 'a', type: 'INTEGER' }]).columns, {
      captureUnmapped: false,
    });
    expect(m.map(wire({ _id: 1, a: 3, b: 2 })).row).toEqual({ a: 3, _unmapped: null });
    expect(m.map(wire({ _id: 1, a: 'x', b: 2 })).row).toEqual({ a: null, _unmapped: '{"a":"x"}' });
  });

  it('keeps int64 beyond 2^53 and Decimal128 exact in _unmapped', () => {
    const m = compileRowMapper([]);
    const { row } = m.map(
      wire({
        _id: 1,
        big: Long.fromString('9223372036854775807'),
        d: Decimal128.fromString('1E+6000'),
        ts: new Timestamp({ t: 1, i: 2 }),
      }),
    );
    expect(row._unmapped).toBe(
      '{"big":{"$numberLong":"9223372036854775807"},"d":{"$numberDecimal":"1E+6000"},"ts":{"$timestamp":{"t":1,"i":2}}}',
    );
  });
});

function metadata(): Record<string, unknown> {
  return {
    time_archived: '2024-01-01T00:00:00.000Z',
    operationType: 'insert',
    _cluster_time: '2024-01-01T00:00:00.000Z',
    _seq: '0000000000000001',
    _doc_id: '65a1b2c3d4e5f60718293a4b',
    _event_id: 'e1',
  };
}

describe('strings that are not valid UTF-8 (issue 10 item 12)', () => {
  const bytes = new Uint8Array([0x61, 0xff, 0x62]);
  const marker = { $invalidUtf8: Buffer.from(bytes).toString('base64') };

  it('never lands in a column as its value; _unmapped and Extended JSON texts keep the bytes under the marker', () => {
    const bad = new InvalidUtf8String(bytes);
    const mapper = compileRowMapper([
      { name: 's', type: 'STRING' },
      { name: 'j', type: 'JSON' },
      { name: 'tags', type: 'STRING', mode: 'REPEATED' },
      { name: 'sub', type: 'STRING' },
      { name: 'b', type: 'BYTES' },
    ]);
    const { row } = mapper.map({ _id: 1, s: bad, j: bad, tags: ['ok', bad], sub: { inner: bad }, b: bad });
    expect(row).toMatchObject({ s: null, j: null, tags: ['ok'], b: null });
    expect(JSON.parse(String(row.sub))).toEqual({ inner: marker });
    expect(JSON.parse(String(row._unmapped))).toEqual({
      s: marker,
      j: marker,
      tags: ['ok', marker],
      b: marker,
    });
  });
});
