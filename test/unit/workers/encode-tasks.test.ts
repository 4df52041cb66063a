import { serialize, Timestamp } from 'bson';
import { describe, expect, it } from 'vitest';
import { type EncodingSpec, type MappingSpec } from '../../../src/core/prepared.js';
import { type ColumnSpec } from '../../../src/schema/types.js';
import { compileRowEncoder } from '../../../src/bigquery/proto-encoder.js';
import {
  CompiledConfigs,
  compileRowBytes,
  EncodedRowsReader,
  encodeChanges,
  encodeDocuments,
  fragmentCounts,
  packDocuments,
  unpackDocuments,
  type ChangesTask,
} from '../../../src/workers/encode-tasks.js';

const COLUMNS: readonly ColumnSpec[] = [
  { name: '_id', type: 'INTEGER', mongo_field: '_id' },
  { name: 'n', type: 'INTEGER' },
];
const MAPPING: MappingSpec = { columns: COLUMNS, captureUnmapped: true, planned: COLUMNS };
const INSERT_ALL: EncodingSpec = { format: 'insert-all', idColumn: '_event_id' };

function insert(id: number, document: Record<string, unknown>): Uint8Array {
  return serialize({
    _id: { _data: `8269000000000000${id.toString(16).padStart(2, '0')}2B` },
    operationType: 'insert',
    clusterTime: new Timestamp({ t: 1_765_000_000, i: id }),
    fullDocument: { _id: id, ...document },
    documentKey: { _id: id },
  });
}

function changesTask(changes: Uint8Array[][], checkEvolution: boolean): ChangesTask {
  return {
    kind: 'changes',
    configId: 1,
    mapping: MAPPING,
    encoding: INSERT_ALL,
    nowMs: Date.UTC(2026, 0, 2),
    checkEvolution,
    bytes: packDocuments(changes.flat()),
    fragments: fragmentCounts(changes),
  };
}

describe('encode tasks (issue 11, build 6)', () => {
  it('packs BSON documents into one buffer of its own and reads them back as they were', () => {
    const documents = [serialize({ a: 1 }), serialize({ b: 'two', c: [3] }), serialize({})];
    const packed = packDocuments(documents);
    expect(packed.byteOffset).toBe(0);
    expect(packed.buffer.byteLength).toBe(documents.reduce((n, d) => n + d.length, 0));
    expect(unpackDocuments(packed).map((d) => Buffer.from(d))).toEqual(documents.map((d) => Buffer.from(d)));
    expect(() => unpackDocuments(packed.subarray(0, packed.length - 1))).toThrow(/cut short/);
  });

  it('reports a document with a field planning would add, and encodes nothing; unchecked, it maps the batch', () => {
    const configs = new CompiledConfigs();
    const changes = [[insert(1, { n: 1 })], [insert(2, { n: 2, colour: 'red' })]];
    const reported = encodeChanges(changesTask(changes, true), configs);
    expect(reported).toMatchObject({ evolve: true, changes: [] });
    expect(reported.rows.count).toBe(0);
    const mapped = encodeChanges(changesTask(changes, false), configs);
    expect(mapped.evolve).toBe(false);
    const rows = new EncodedRowsReader(mapped.rows);
    expect(rows.count).toBe(2);
    const entry = JSON.parse(Buffer.from(rows.bytes(1) ?? []).toString('utf8')) as {
      insertId: string;
      json: Record<string, unknown>;
    };
    expect(entry.insertId).toBe(rows.eventId(1));
    expect(entry.json).toMatchObject({ _id: 2, n: 2, _unmapped: '{"colour":"red"}' });
  });

  it('keeps a null _doc_id apart from an empty one, and ids that are not ASCII', () => {
    const drop = serialize({
      _id: { _data: '82690000000000000AFF' },
      operationType: 'drop',
      clusterTime: new Timestamp({ t: 1_765_000_000, i: 10 }),
    });
    const result = encodeChanges(
      changesTask([[drop], [insert(3, { n: 'ü' })]], false),
      new CompiledConfigs(),
    );
    const rows = new EncodedRowsReader(result.rows);
    expect(result.changes.map((c) => c.row)).toEqual([0, 1]);
    expect(rows.docId(0)).toBeNull();
    expect(rows.eventId(0)).toBe('82690000000000000AFF');
    expect(rows.docId(1)).toBe('{"$numberInt":"3"}');
  });

  it('compiles a config once per id and keeps the most recently used ones', () => {
    const configs = new CompiledConfigs(2);
    const first = configs.get(1, MAPPING, INSERT_ALL);
    expect(configs.get(1, MAPPING, INSERT_ALL)).toBe(first);
    configs.get(2, MAPPING, INSERT_ALL);
    configs.get(1, MAPPING, INSERT_ALL);
    // 2 is now the least recently used: 3 pushes it out, 1 stays.
    configs.get(3, MAPPING, INSERT_ALL);
    expect(configs.get(1, MAPPING, INSERT_ALL)).toBe(first);
    const second = configs.get(2, MAPPING, INSERT_ALL);
    expect(configs.get(2, MAPPING, INSERT_ALL)).toBe(second);
  });

  it('maps backfill documents one row each, in order', () => {
    const result = encodeDocuments(
      {
        kind: 'documents',
        configId: 1,
        mapping: MAPPING,
        encoding: INSERT_ALL,
        nowMs: 0,
        checkEvolution: true,
        bytes: packDocuments([serialize({ _id: 1, n: 1 }), serialize({ _id: 2, n: 2 })]),
        snapshotStart: { t: 5, i: 1 },
      },
      new CompiledConfigs(),
    );
    const rows = new EncodedRowsReader(result.rows);
    expect(result.evolve).toBe(false);
    expect([rows.eventId(0), rows.eventId(1)]).toEqual([
      'backfill:0000000500000001:{"$numberInt":"1"}',
      'backfill:0000000500000001:{"$numberInt":"2"}',
    ]);
  });
});

describe('compileRowBytes with an accepted schema (issue 11 review)', () => {
  it('encodes a row that fits the accepted schema with it, and one beyond it with the newest, saying which', () => {
    const accepted = [
      { name: '_doc_id', type: 'STRING', mode: 'NULLABLE' },
      { name: 'n', type: 'INTEGER', mode: 'NULLABLE' },
    ] as const;
    const newest = [...accepted, { name: 'added', type: 'STRING', mode: 'NULLABLE' }] as const;
    const encode = compileRowBytes({ format: 'storage-write', schema: newest, accepted });
    const plain = { _doc_id: 'd', n: 1, added: null };
    const carrying = { _doc_id: 'c', n: 2, added: 'x' };
    const hex = (bytes: Uint8Array | undefined) => Buffer.from(bytes ?? []).toString('hex');
    expect(encode(plain)).toMatchObject({ schema: 'accepted' });
    expect(hex(encode(plain).bytes)).toBe(hex(compileRowEncoder(accepted).encode(plain)));
    expect(encode(carrying)).toMatchObject({ schema: 'beyond-accepted' });
    expect(hex(encode(carrying).bytes)).toBe(hex(compileRowEncoder(newest).encode(carrying)));
    // Without an accepted schema, every row is the newest schema's.
    expect(compileRowBytes({ format: 'storage-write', schema: newest })(plain).schema).toBeUndefined();
  });
});
