import { describe, expect, it } from 'vitest';
import { backfillRecord, changeRecord } from '../../../src/core/history-rows.js';
import { parseColumnSpecs } from '../../../src/schema/column-spec.js';
import { historyTableSchema } from '../../../src/schema/table-schema.js';
import { compileRowMapper } from '../../../src/transform/row-mapper.js';
import { rowProblems } from '../../support/row-oracle.js';

const mapper = compileRowMapper(
  parseColumnSpecs([
    { name: 'id', type: 'INTEGER', mongo_field: '_id', primary_key: true },
    { name: 'v', type: 'INTEGER' },
  ]).columns,
);
const NOW = new Date('2026-01-02T03:04:05.678Z');
const base = { token: 'tok1', clusterTime: { t: 1_700_000_000, i: 2 } };

// The insertAll body is these rows' JSON: user columns, `_unmapped`, then the metadata in a fixed order.
describe('history rows', () => {
  it('a change row carries the user columns, then its metadata columns in a fixed order', () => {
    const upsert = changeRecord(
      mapper,
      { ...base, kind: 'upsert', operationType: 'update', documentId: 7, document: { _id: 7, v: 1, x: 2 } },
      NOW,
    );
    expect(JSON.stringify(upsert.row())).toBe(
      '{"id":7,"v":1,"_unmapped":"{\\"x\\":2}","time_archived":"2026-01-02T03:04:05.678Z",' +
        '"_cluster_time":"2023-11-14T22:13:20.000Z","_seq":"6553f10000000002tok1","_event_id":"tok1",' +
        '"operationType":"update","_doc_id":"{\\"$numberInt\\":\\"7\\"}"}',
    );
    expect(upsert.document()).toBe('{"_id":7,"v":1,"x":2}');
    const deleted = changeRecord(mapper, { ...base, kind: 'delete', documentId: 7 }, NOW);
    expect(deleted.row()).toMatchObject({
      id: 7,
      v: null,
      operationType: 'delete',
      _doc_id: '{"$numberInt":"7"}',
    });
    const dropped = changeRecord(mapper, { ...base, kind: 'collection-gone', operationType: 'rename' }, NOW);
    expect(dropped.row()).toMatchObject({
      id: null,
      operationType: 'drop',
      _doc_id: null,
      _event_id: 'tok1',
    });
  });

  it('formats every time right when changes of different seconds and pulls of different times interleave', () => {
    const times = [1_700_000_000, 1_700_000_000, 1_700_000_001, 1_600_000_000, 1_700_000_001];
    const nows = [NOW, new Date(NOW.getTime() + 1), NOW];
    times.forEach((t, i) => {
      const now = nows[i % nows.length] ?? NOW;
      const row = changeRecord(
        mapper,
        { ...base, clusterTime: { t, i: 1 }, kind: 'delete', documentId: i },
        now,
      ).row();
      expect(row._cluster_time).toBe(new Date(t * 1000).toISOString());
      expect(row.time_archived).toBe(now.toISOString());
    });
  });

  it('a backfill row carries the snapshot start as its position and a per-document event id', () => {
    const row = backfillRecord(mapper, { _id: 7, v: 1 }, { t: 1_700_000_000, i: 2 }, NOW).row();
    expect(JSON.stringify(row)).toBe(
      '{"id":7,"v":1,"_unmapped":null,"time_archived":"2026-01-02T03:04:05.678Z","operationType":"backfill",' +
        '"_cluster_time":"2023-11-14T22:13:20.000Z","_seq":"6553f10000000002",' +
        '"_doc_id":"{\\"$numberInt\\":\\"7\\"}","_event_id":"backfill:6553f10000000002:{\\"$numberInt\\":\\"7\\"}"}',
    );
  });

  it('rows of different events never share an object', () => {
    const event = { ...base, kind: 'upsert' as const, operationType: 'insert' as const, documentId: 1 };
    const a = changeRecord(mapper, { ...event, document: { _id: 1, v: 1 } }, NOW).row();
    const b = changeRecord(mapper, { ...event, document: { _id: 1, v: 2 } }, NOW).row();
    expect(a).not.toBe(b);
    expect([a.v, b.v]).toEqual([1, 2]);
  });
});

describe('issue 10 item 2: REQUIRED columns never refuse a delete or a drop marker', () => {
  // BigQuery refuses a row without a value for a REQUIRED field ("Missing required field: ..."); the
  // oracle applies that rule to the history table's schema as the archiver creates it.
  const declared = parseColumnSpecs([
    { name: 'id', type: 'STRING', mongo_field: '_id', primary_key: true, mode: 'REQUIRED' },
    { name: 'name', type: 'STRING', mode: 'REQUIRED' },
    {
      name: 'address',
      type: 'RECORD',
      mode: 'REQUIRED',
      fields: [{ name: 'city', type: 'STRING', mode: 'REQUIRED' }],
    },
  ]).columns;
  const requiredMapper = compileRowMapper(declared);

  it('issue 10 item 2: the history table accepts delete rows and drop markers of a mapping with REQUIRED columns', () => {
    const schema = historyTableSchema(declared);
    const deleted = changeRecord(requiredMapper, { ...base, kind: 'delete', documentId: 'a' }, NOW);
    const dropped = changeRecord(
      requiredMapper,
      { ...base, kind: 'collection-gone', operationType: 'drop' },
      NOW,
    );
    expect(rowProblems(schema, deleted.row())).toEqual([]);
    expect(rowProblems(schema, dropped.row())).toEqual([]);
  });

  it('issue 10 item 2: the declared mode stays in the column specs (only the table relaxes it)', () => {
    expect(declared.map((c) => c.mode)).toEqual(['REQUIRED', 'REQUIRED', 'REQUIRED']);
    expect(historyTableSchema(declared).every((f) => f.mode !== 'REQUIRED')).toBe(true);
  });
});
