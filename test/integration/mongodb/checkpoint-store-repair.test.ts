import { randomBytes } from 'node:crypto';
import { MongoClient, type Collection } from 'mongodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FencedOutError } from '../../../src/errors.js';
import {
  checkpointsCollectionName,
  encodeId,
  MongoCheckpointStore,
  recordRepairRequest,
  type RepairProgress,
} from '../../../src/mongodb/checkpoint-store.js';
import { type IdRange } from '../../../src/core/ports.js';

let client: MongoClient;
const never = new AbortController().signal;
const RANGE_A: IdRange = { after: undefined, upTo: encodeId(10) };
const RANGE_B: IdRange = { after: encodeId(50), upTo: undefined };

beforeAll(async () => {
  client = new MongoClient(process.env.MBA_TEST_MONGODB_URI ?? '');
  await client.connect();
});

afterAll(async () => {
  await client.close();
});

async function setup(fence?: number) {
  const settings = client.db(`repair_cp_${randomBytes(4).toString('hex')}`).collection('settings');
  const checkpoints: Collection = client
    .db(settings.dbName)
    .collection(checkpointsCollectionName(settings.collectionName));
  const { insertedId } = await settings.insertOne({ mongo_database: 'd', mongo_collection: 'c' });
  const store = (options: { fence?: number; scope?: string } = {}) => {
    const token = options.fence ?? fence;
    return new MongoCheckpointStore({
      checkpoints,
      settings,
      settingsId: insertedId,
      scope: options.scope ?? 'd.c -> ds.t',
      ...(token !== undefined && { fence: token }),
    });
  };
  return { checkpoints, settingsId: insertedId, store };
}

function progress(through: Date, requests: readonly string[] = ['r0']): RepairProgress {
  return {
    through,
    requests,
    reason: 'verify',
    ranges: [RANGE_A, RANGE_B],
    backfill: {
      snapshotStart: { t: 1_765_000_000, i: 3 },
      lastId: undefined,
      copied: 4,
      done: false,
      ranges: [
        { ...RANGE_A, lastId: encodeId(4), copied: 4, done: false },
        { ...RANGE_B, lastId: undefined, copied: 0, done: false },
      ],
      estimated: 0,
    },
    deletesDone: [false, false],
    deletes: 0,
  };
}

describe('repair requests in the checkpoint document (issue 14)', () => {
  it('keeps requests until served; a served repair removes only the requests it covered and is kept for status', async () => {
    const { checkpoints, settingsId, store } = await setup(3);
    const first = new Date('2026-12-06T10:00:00Z');
    const second = new Date('2026-12-06T10:05:00Z');
    const firstId = await recordRepairRequest(checkpoints, settingsId, {
      ranges: [RANGE_A],
      reason: 'verify',
      requestedAt: first,
    });
    const secondId = await recordRepairRequest(checkpoints, settingsId, {
      ranges: [RANGE_B],
      reason: 'background',
      requestedAt: second,
    });
    const mapping = store();
    await mapping.load(never);
    let state = await mapping.loadRepair(never);
    expect(state.pending).toEqual([
      { id: firstId, ranges: [RANGE_A], reason: 'verify', requestedAt: first },
      { id: secondId, ranges: [RANGE_B], reason: 'background', requestedAt: second },
    ]);
    expect(state.progress).toBeUndefined();

    await mapping.saveRepair(progress(first, [firstId]), never);
    expect((await mapping.loadRepair(never)).progress).toEqual(progress(first, [firstId]));
    // Recorded after the repair began, stamped earlier than what it serves (another host's clock): not
    // served by it, so it stays.
    const skewed = new Date('2026-12-06T09:59:00Z');
    await recordRepairRequest(checkpoints, settingsId, {
      ranges: [RANGE_B],
      reason: 'verify',
      requestedAt: skewed,
    });

    const result = {
      through: first,
      reason: 'verify' as const,
      finishedAt: new Date('2026-12-06T10:06:00Z'),
      ranges: 2,
      documents: 12,
      deletes: 1,
    };
    await mapping.repairServed(result, [firstId], never);
    state = await mapping.loadRepair(never);
    expect(state.progress).toBeUndefined();
    expect(state.last).toEqual(result);
    expect(state.servedAt).toEqual(first);
    // The later request is still owed.
    expect(state.pending.map((r) => r.requestedAt)).toEqual([skewed, second]);
  });

  it('serves requests by their id: one recorded in the same millisecond after the repair began stays owed (finding 14)', async () => {
    const { checkpoints, settingsId, store } = await setup(3);
    const at = new Date('2026-12-06T10:00:00Z');
    const first = await recordRepairRequest(checkpoints, settingsId, {
      ranges: [RANGE_A],
      reason: 'verify',
      requestedAt: at,
    });
    const mapping = store();
    await mapping.load(never);
    await mapping.saveRepair(progress(at, [first]), never);
    const second = await recordRepairRequest(checkpoints, settingsId, {
      ranges: [RANGE_B],
      reason: 'background',
      requestedAt: at,
    });
    expect(second).not.toBe(first);

    await mapping.repairServed(
      { through: at, reason: 'verify', finishedAt: at, ranges: 1, documents: 1, deletes: 0 },
      [first],
      never,
    );

    const state = await mapping.loadRepair(never);
    expect(state.pending.map((r) => [r.id, r.ranges])).toEqual([[second, [RANGE_B]]]);
  });

  it('a resync or a new target clears the repair under way; the history-lost mark is cleared only for its own loss', async () => {
    const { store } = await setup();
    const mapping = store();
    await mapping.load(never);
    await mapping.saveRepair(progress(new Date('2026-12-06T10:00:00Z')), never);
    const lost = new Date('2026-12-06T11:00:00Z');
    await mapping.markHistoryLost(lost, never);
    expect((await mapping.loadRepair(never)).historyLostAt).toEqual(lost);
    await mapping.historyLostVerified(new Date('2026-12-06T10:59:00Z'), never);
    expect((await mapping.loadRepair(never)).historyLostAt).toEqual(lost);
    await mapping.historyLostVerified(lost, never);
    expect((await mapping.loadRepair(never)).historyLostAt).toBeUndefined();

    const retargeted = store({ scope: 'd.c -> ds.other' });
    await retargeted.load(never);
    expect((await retargeted.loadRepair(never)).progress).toBeUndefined();
  });

  it('a resync clears the repair requests and the history-lost mark: its full copy makes both moot (finding 9)', async () => {
    const { checkpoints, settingsId, store } = await setup();
    const mapping = store();
    await mapping.load(never);
    await recordRepairRequest(checkpoints, settingsId, {
      ranges: [RANGE_A],
      reason: 'history-lost',
      requestedAt: new Date('2026-12-06T10:00:00Z'),
    });
    await mapping.markHistoryLost(new Date('2026-12-06T10:00:00Z'), never);

    const resync = new MongoCheckpointStore({
      checkpoints,
      settings: client.db(checkpoints.dbName).collection('settings'),
      settingsId,
      scope: 'd.c -> ds.t',
      resyncRequestedAt: '2026-12-06T11:00:00Z',
    });
    expect((await resync.load(never)).resync).toBe(true);

    const state = await resync.loadRepair(never);
    expect(state.pending).toEqual([]);
    expect(state.historyLostAt).toBeUndefined();
  });

  it('progress writes are fenced: an instance that lost the mapping cannot save a repair', async () => {
    const { store } = await setup();
    const newer = store({ fence: 5 });
    await newer.load(never);
    await newer.saveRepair(progress(new Date('2026-12-06T10:00:00Z')), never);
    const older = store({ fence: 4 });
    await expect(older.saveRepair(progress(new Date('2026-12-06T10:00:00Z')), never)).rejects.toBeInstanceOf(
      FencedOutError,
    );
  });
});
