import { Timestamp } from 'bson';
import { describe, expect, it } from 'vitest';
import { mappingOverview, renderStatusTable } from '../../../src/cli/status-view.js';

/** 2024-01-12T21:43:20Z, in milliseconds. */
const T0 = 1_705_095_800_000;
const settings = {
  _id: 'orders',
  mongo_database: 'shop',
  mongo_collection: 'orders',
  bigquery_table: 'orders',
  status: { state: 'streaming' },
};
const range = (after: number, upTo: number, done: boolean) => ({
  after: `{"id":{"$numberInt":"${String(after)}"}}`,
  upTo: `{"id":{"$numberInt":"${String(upTo)}"}}`,
  lastId: null,
  copied: done ? 10 : 3,
  done,
});

describe('status: repairs and the last verification (issue 14)', () => {
  it('shows a repair under way with its progress, the requests waiting behind it, and the last verification', () => {
    const checkpoint = {
      _id: 'orders',
      repair: {
        through: new Date(T0 - 60_000),
        requests: ['a'],
        reason: 'verify',
        backfill: {
          snapshotStart: new Timestamp({ t: T0 / 1_000 - 60, i: 1 }),
          copied: 13,
          done: false,
          ranges: [range(9, 19, true), range(59, 69, false)],
        },
        deletesDone: [true, false],
        deletes: 2,
      },
      repairRequests: [
        { id: 'a', ranges: [], reason: 'verify', requestedAt: new Date(T0 - 60_000) },
        { id: 'b', ranges: [], reason: 'background', requestedAt: new Date(T0 - 30_000) },
      ],
      lastVerification: {
        finishedAt: new Date(T0 - 120_000),
        rangesChecked: 16,
        rangesDiffering: 2,
        missing: 5,
        extra: 3,
        differing: 1,
        bytesScanned: 1_024,
      },
    };
    const overview = mappingOverview({ settings, checkpoint, holder: 'host-1' }, T0);
    expect(overview.repair).toEqual({
      pending: 1,
      running: { reason: 'verify', ranges: 2, rangesDone: 1, documents: 13, deletes: 2 },
      last: null,
    });
    expect(overview.lastVerification).toMatchObject({ rangesChecked: 16, rangesDiffering: 2, missing: 5 });
    const lines = renderStatusTable([overview], T0, 160);
    expect(lines.slice(2)).toEqual([
      '  ↳ repair (verify) under way: 1/2 ranges, 13 documents and 2 deletes written',
      '  ↳ 1 repair request(s) waiting',
      '  ↳ verified 2m00s ago: 16 ranges, 2 ranges differ (5 missing, 3 extra, 1 differing)',
    ]);
  });

  it('says what the last repair wrote once it is done, and nothing for a mapping never verified or repaired', () => {
    const checkpoint = {
      _id: 'orders',
      repairServedAt: new Date(T0 - 10_000),
      lastRepair: {
        through: new Date(T0 - 10_000),
        reason: 'history-lost',
        finishedAt: new Date(T0 - 5_000),
        ranges: 3,
        documents: 120,
        deletes: 7,
      },
    };
    const overview = mappingOverview({ settings, checkpoint, holder: null }, T0);
    expect(renderStatusTable([overview], T0, 160).slice(2)).toEqual([
      '  ↳ last repair (history-lost) 5s ago: wrote 127 rows (120 documents, 7 deletes) over 3 ranges',
    ]);
    const plain = mappingOverview({ settings, checkpoint: { _id: 'orders' }, holder: null }, T0);
    expect(plain.repair).toBeNull();
    expect(plain.lastVerification).toBeNull();
    expect(renderStatusTable([plain], T0, 160)).toHaveLength(2);
  });
});
