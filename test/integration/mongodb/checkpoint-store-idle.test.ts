import { randomBytes } from 'node:crypto';
import { MongoClient, type Collection, type Document } from 'mongodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Position } from '../../../src/core/model.js';
import { checkpointsCollectionName, MongoCheckpointStore } from '../../../src/mongodb/checkpoint-store.js';

// Issue 12: every checkpoint save also wrote `lastChangeId` and `status.lastCheckpointAt` into the settings
// document, which the supervisor watches: idle mappings, saving on every pull, woke it again and again.

let client: MongoClient;

beforeAll(async () => {
  client = new MongoClient(process.env.MBA_TEST_MONGODB_URI ?? '');
  await client.connect();
});

afterAll(async () => {
  await client.close();
});

const SCOPE = 'bidding.ad_cpta -> ds.t';
const rowsPosition: Position = { token: '8265A1B2C3000000012B', clusterTime: { t: 1_705_095_875, i: 1 } };
const idlePosition: Position = { token: '8265A1B2D0000000012B', clusterTime: { t: 1_705_095_888, i: 1 } };

/** A settings document and its checkpoint store (fenced, as under a lease), in a database of its own. */
async function mapping(): Promise<{
  settings: Collection;
  checkpoints: Collection;
  id: unknown;
  store: MongoCheckpointStore;
}> {
  const db = client.db(`idle_${randomBytes(4).toString('hex')}`);
  const settings = db.collection('bigquery_archiver_settings');
  const checkpoints = db.collection(checkpointsCollectionName(settings.collectionName));
  const { insertedId } = await settings.insertOne({
    mongo_database: 'bidding',
    mongo_collection: 'ad_cpta',
    bigquery_table: 't',
  });
  const store = new MongoCheckpointStore({
    checkpoints,
    settings,
    settingsId: insertedId,
    scope: SCOPE,
    fence: 3,
  });
  return { settings, checkpoints, id: insertedId, store };
}

describe('checkpoint store, idle saves (issue 12)', () => {
  it('an idle save moves the position in the checkpoints collection and leaves the settings document untouched', async () => {
    const { settings, checkpoints, id, store } = await mapping();
    const signal = new AbortController().signal;
    await store.load(signal);
    await store.save({ position: rowsPosition }, signal);
    const before = await settings.findOne({ _id: id } as Document);
    expect(before?.lastChangeId).toEqual({ _data: rowsPosition.token });

    await store.save({ position: idlePosition, idle: true }, signal);

    // Byte for byte the same document: no `lastChangeId`, no `status.lastCheckpointAt`, no fence write.
    expect(await settings.findOne({ _id: id } as Document)).toEqual(before);
    const checkpoint = await checkpoints.findOne({ _id: id } as Document);
    expect(checkpoint?.position).toMatchObject({ token: idlePosition.token });
    expect(await store.load(signal)).toEqual({ position: idlePosition });
  });

  it('a save covering rows still copies lastChangeId and status.lastCheckpointAt into the settings document', async () => {
    const { settings, id, store } = await mapping();
    const signal = new AbortController().signal;
    await store.load(signal);
    await store.save({ position: idlePosition, idle: true }, signal);
    const idleOnly = await settings.findOne({ _id: id } as Document);
    // Only the load's copy (no position yet: no lastChangeId), not the idle save's.
    expect(idleOnly?.lastChangeId).toBeUndefined();
    const loadedAt = (idleOnly?.status as Document | undefined)?.lastCheckpointAt as Date | undefined;

    const later: Position = { token: '8265A1B2E0000000012B', clusterTime: { t: 1_705_095_900, i: 1 } };
    await store.save({ position: later }, signal);
    const after = await settings.findOne({ _id: id } as Document);
    expect(after?.lastChangeId).toEqual({ _data: later.token });
    const status = after?.status as Document | undefined;
    expect(status?.lastCheckpointAt).toBeInstanceOf(Date);
    expect((status?.lastCheckpointAt as Date).getTime()).toBeGreaterThanOrEqual(loadedAt?.getTime() ?? 0);
    expect(status?.fence).toBe(3);
  });

  it('an idle save by an instance fenced out is refused, as any other save', async () => {
    const { settings, checkpoints, id, store } = await mapping();
    const signal = new AbortController().signal;
    await store.load(signal);
    await store.save({ position: rowsPosition }, signal);
    // A newer owner wrote.
    await checkpoints.updateOne({ _id: id } as Document, { $set: { fence: 4 } });
    await expect(store.save({ position: idlePosition, idle: true }, signal)).rejects.toMatchObject({
      disposition: 'fenced-out',
    });
    expect((await checkpoints.findOne({ _id: id } as Document))?.position).toMatchObject({
      token: rowsPosition.token,
    });
    expect((await settings.findOne({ _id: id } as Document))?.lastChangeId).toEqual({
      _data: rowsPosition.token,
    });
  });
});
