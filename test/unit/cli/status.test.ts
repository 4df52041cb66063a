import { Timestamp } from 'bson';
import { describe, expect, it } from 'vitest';
import { backfillFields, positionOf } from '../../../src/cli/status.js';

const snapshotStart = { t: 1_705_095_800, i: 3 };

describe('status: backfill progress (issue 11)', () => {
  it('issue 11: a backfilling mapping shows copied / estimated with the percent, the rate, the ETA and the ranges done', () => {
    const checkpoint = {
      backfill: {
        snapshotStart,
        copied: 25_000,
        estimated: 100_000,
        done: false,
        ranges: [
          { after: null, upTo: '{"id":1}', lastId: '{"id":1}', copied: 12_500, done: true },
          { after: '{"id":1}', upTo: null, lastId: '{"id":0}', copied: 12_500, done: false },
        ],
      },
    };
    const status = { state: 'backfilling', backfillRate: 512.4, backfillEtaSeconds: 147 };
    expect(backfillFields(status, checkpoint)).toEqual([
      'backfill=25000/100000(25.0%)',
      'rate=512/s',
      'eta=2m27s',
      'ranges=1/2',
    ]);
  });

  it('issue 11: without an estimate in the checkpoint, the one the owner reported; without any, no percent', () => {
    const checkpoint = { backfill: { snapshotStart, lastId: null, copied: 10, done: false } };
    expect(backfillFields({ state: 'backfilling', backfillEstimated: 40 }, checkpoint)).toEqual([
      'backfill=10/40(25.0%)',
      'rate=-',
      'eta=-',
    ]);
    expect(backfillFields({ state: 'backfilling' }, checkpoint)).toEqual([
      'backfill=10/?',
      'rate=-',
      'eta=-',
    ]);
  });

  it('issue 11: a mapping not backfilling now (retrying, stopped) shows its progress but no stale rate or ETA', () => {
    const checkpoint = { backfill: { snapshotStart, copied: 500, estimated: 1_000, done: false } };
    const status = { state: 'retrying', backfillRate: 100, backfillEtaSeconds: 5 };
    expect(backfillFields(status, checkpoint)).toEqual(['backfill=500/1000(50.0%)']);
  });

  it('issue 11: nothing once the backfill is done, or without one', () => {
    const done = { backfill: { snapshotStart, copied: 1_000, estimated: 1_000, done: true } };
    expect(backfillFields({ state: 'streaming' }, done)).toEqual([]);
    expect(backfillFields({ state: 'streaming' }, {})).toEqual([]);
    expect(backfillFields(undefined, undefined)).toEqual([]);
  });
});

describe('status: position (issue 11)', () => {
  it("issue 11: during a backfill the position is the change stream's once it saved one, the copy's progress before", () => {
    const backfill = { snapshotStart: new Timestamp({ t: 1, i: 0 }), copied: 500, done: false };
    const position = { token: '82aa', clusterTime: new Timestamp({ t: 1_705_095_800, i: 3 }) };
    expect(positionOf({ backfill, position })).toBe('2024-01-12T21:43:20.000Z');
    expect(positionOf({ backfill })).toBe('backfill:500');
    expect(positionOf({ backfill: { ...backfill, done: true } })).toBe('-');
  });
});
