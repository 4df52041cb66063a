import { randomBytes } from 'node:crypto';
import { Long, MongoClient, ObjectId, Timestamp, type Collection, type Document } from 'mongodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FencedOutError } from '../../../src/errors.js';
import {
  checkpointsCollectionName,
  decodeId,
  encodeId,
  MongoCheckpointStore,
  recordResyncRequest,
} from '../../../src/mongodb/checkpoint-store.js';
import { MongoSettingsStore } from '../../../src/mongodb/settings-store.js';

let client: MongoClient;

beforeAll(async () => {
  client = new MongoClient(process.env.MBA_TEST_MONGODB_URI ?? '');
  await client.connect();
});

afterAll(async () => {
  await client.close();
});

/** The checkpoint store of the mapping whose settings document is `settingsId`, as the runner builds it. */
function storeFor(
  settings: Collection,
  settingsId: unknown,
  scope = '',
  fence?: number,
  resyncRequestedAt?: string,
): MongoCheckpointStore {
  return new MongoCheckpointStore({
    checkpoints: client.db(settings.dbName).collection(checkpointsCollectionName(settings.collectionName)),
    settings,
    settingsId,
    scope,
    resyncRequestedAt,
    ...(fence !== undefined && { fence }),
  });
}

describe('checkpoint store in the settings document', () => {
  it('saves and loads the position and the backfill progress, leaving the configuration alone', async () => {
    const settings = client
      .db(`cfg_${randomBytes(4).toString('hex')}`)
      .collection('bigquery_archiver_settings');
    const { insertedId } = await settings.insertOne({
      mongo_database: 'bidding',
      mongo_collection: 'ad_cpta',
      bigquery_table: 't',
    });
    const store = storeFor(settings, insertedId);
    const signal = new AbortController().signal;
    expect(await store.load(signal)).toEqual({ position: undefined });

    const lastId = new ObjectId('65a1b2c3d4e5f60718293a4b');
    await store.save(
      {
        position: { token: '8265A1B2C3000000012B', clusterTime: { t: 1_705_095_875, i: 1 } },
        backfill: {
          snapshotStart: { t: 1_705_095_800, i: 3 },
          lastId: encodeId(lastId),
          copied: 1_000,
          done: false,
        },
      },
      signal,
    );
    const loaded = await store.load(signal);
    expect(loaded).toEqual({
      position: { token: '8265A1B2C3000000012B', clusterTime: { t: 1_705_095_875, i: 1 } },
      backfill: {
        snapshotStart: { t: 1_705_095_800, i: 3 },
        lastId: encodeId(lastId),
        copied: 1_000,
        done: false,
      },
    });
    expect(decodeId(loaded.backfill?.lastId ?? '')).toEqual(lastId);
    const doc = await settings.findOne({ _id: insertedId });
    expect(doc).toMatchObject({ mongo_database: 'bidding', lastChangeId: { _data: '8265A1B2C3000000012B' } });
  });

  it("issue 12: keeps a position marked as a database stream's (resumed at its cluster time)", async () => {
    const settings = client
      .db(`cfg_${randomBytes(4).toString('hex')}`)
      .collection('bigquery_archiver_settings');
    const { insertedId } = await settings.insertOne({
      mongo_database: 'bidding',
      mongo_collection: 'ad_cpta',
      bigquery_table: 't',
    });
    const store = storeFor(settings, insertedId);
    const signal = new AbortController().signal;
    const position = {
      token: '8265A1B2C3000000012B',
      clusterTime: { t: 1_705_095_875, i: 1 },
      shared: true as const,
    };
    await store.save({ position }, signal);
    expect((await store.load(signal)).position).toEqual(position);
    // Saved without the mark, it loads without it.
    await store.save({ position: { token: position.token, clusterTime: position.clusterTime } }, signal);
    expect((await store.load(signal)).position?.shared).toBeUndefined();
  });

  it('keeps ids of every type exact', () => {
    for (const id of [
      1,
      2.5,
      'a',
      { tenant: 'x', n: 2 },
      new ObjectId(),
      Long.fromString('9223372036854775807'),
    ]) {
      expect(decodeId(encodeId(id))).toEqual(id);
    }
  });
});

describe('issue 10: checkpoints that settings edits cannot erase', () => {
  const at = (i: number) => ({
    token: `8265A1B2C3${String(i).padStart(10, '0')}`,
    clusterTime: { t: 1_705_095_875, i },
  });
  const original = { mongo_database: 'bidding', mongo_collection: 'ad_cpta', bigquery_table: 't' };
  const signal = () => new AbortController().signal;

  it('issue 10 item 3: a settings document replaced wholesale (GUI edit, original format re-saved) keeps the position and the fence', async () => {
    const settings = client
      .db(`cfg_${randomBytes(4).toString('hex')}`)
      .collection('bigquery_archiver_settings');
    const { insertedId } = await settings.insertOne({ ...original });
    const scope = 'bidding.ad_cpta -> ds.t';
    const owner = storeFor(settings, insertedId, scope, 2);
    await owner.save({ position: at(7) }, signal());
    // Replaced, not updated: the document is exactly what the user wrote, nothing the service wrote survives.
    await settings.replaceOne({ _id: insertedId }, { ...original });
    const restarted = storeFor(settings, insertedId, scope, 3);
    expect((await restarted.load(signal())).position).toEqual(at(7));
    // An owner older than the newest that wrote cannot write after the replacement either.
    const stale = storeFor(settings, insertedId, scope, 1);
    await expect(stale.save({ position: at(3) }, signal())).rejects.toBeInstanceOf(FencedOutError);
    expect((await restarted.load(signal())).position).toEqual(at(7));
  });

  it('issue 10 item 9: a checkpoint of a new scope (other table, resync, new snapshot) never inherits the old position', async () => {
    const settings = client
      .db(`cfg_${randomBytes(4).toString('hex')}`)
      .collection('bigquery_archiver_settings');
    const { insertedId } = await settings.insertOne({ ...original });
    const before = storeFor(settings, insertedId, 'bidding.ad_cpta -> ds.t', 1);
    await before.save({ position: at(7) }, signal());
    const backfill = {
      snapshotStart: { t: 1_705_096_000, i: 1 },
      lastId: encodeId(5),
      copied: 5,
      done: false,
    };

    // bigquery_table changed: the new target starts with a backfill, and is interrupted after one chunk.
    const moved = storeFor(settings, insertedId, 'bidding.ad_cpta -> ds.t2', 1);
    expect((await moved.load(signal())).position).toBeUndefined();
    await moved.save({ position: undefined, backfill }, signal());
    expect(await moved.load(signal())).toEqual({ position: undefined, backfill });

    // Same scope, new snapshot (on_history_lost: resnapshot): the lost position goes with the new backfill.
    await moved.save({ position: at(9) }, signal());
    const fresh = { ...backfill, snapshotStart: { t: 1_705_097_000, i: 1 }, lastId: undefined, copied: 0 };
    await moved.save({ position: undefined, backfill: fresh }, signal());
    expect(await moved.load(signal())).toEqual({ position: undefined, backfill: fresh });
  });

  it('issue 10 item 3: a resync request and its backfill survive a replacement that drops resync_requested_at, and an old one re-saved starts nothing', async () => {
    const settings = client
      .db(`cfg_${randomBytes(4).toString('hex')}`)
      .collection('bigquery_archiver_settings');
    const { insertedId } = await settings.insertOne({ ...original });
    const scope = 'bidding.ad_cpta -> ds.t';
    await storeFor(settings, insertedId, scope, 1).save({ position: at(7) }, signal());
    // `resync` records the request in the checkpoint document and in the settings document.
    const requested = new Date('2026-12-01T10:00:00.000Z');
    await recordResyncRequest(
      client.db(settings.dbName).collection(checkpointsCollectionName(settings.collectionName)),
      insertedId,
      requested,
    );
    const resync = storeFor(settings, insertedId, scope, 1, requested.toISOString());
    expect(await resync.load(signal())).toEqual({ position: undefined, resync: true });
    const backfill = {
      snapshotStart: { t: 1_764_583_200, i: 1 },
      lastId: encodeId(5),
      copied: 5,
      done: false,
    };
    await resync.save({ position: undefined, backfill }, signal());

    // The user re-saves the original document: resync_requested_at is gone; the resync goes on where it was.
    await settings.replaceOne({ _id: insertedId }, { ...original });
    const afterReplace = storeFor(settings, insertedId, scope, 2);
    expect(await afterReplace.load(signal())).toEqual({ position: undefined, backfill, resync: true });
    await afterReplace.save({ position: undefined, backfill: { ...backfill, done: true } }, signal());
    await afterReplace.save({ position: at(20) }, signal());

    // An older copy of the document, with the request already served (or an older one), copies nothing again.
    await settings.replaceOne({ _id: insertedId }, { ...original, resync_requested_at: requested });
    expect(await storeFor(settings, insertedId, scope, 3, requested.toISOString()).load(signal())).toEqual({
      position: at(20),
      backfill: { ...backfill, done: true },
      resync: true,
    });
    expect(
      (await storeFor(settings, insertedId, scope, 3, '2026-11-01T00:00:00.000Z').load(signal())).position,
    ).toEqual(at(20));
    // A newer request starts over.
    expect(await storeFor(settings, insertedId, scope, 3, '2026-12-02T00:00:00Z').load(signal())).toEqual({
      position: undefined,
      resync: true,
    });
  });

  it('issue 10 item 3: a checkpoint the previous release kept in the settings document is read once, and then survives a replacement', async () => {
    const settings = client
      .db(`cfg_${randomBytes(4).toString('hex')}`)
      .collection('bigquery_archiver_settings');
    const backfill = {
      snapshotStart: { t: 1_705_095_800, i: 3 },
      lastId: encodeId(9),
      copied: 9,
      done: true,
    };
    // As the previous release wrote it: the token in lastChangeId, the rest under status.checkpoint.
    const { insertedId } = await settings.insertOne({
      ...original,
      resync_requested_at: new Date('2026-11-30T08:00:00.000Z'),
      lastChangeId: { _data: at(7).token },
      status: {
        state: 'streaming',
        fence: 4,
        checkpoint: {
          scope: 'bidding.ad_cpta -> ds.t @ resync 2026-11-30T08:00:00.000Z',
          clusterTime: new Timestamp({ t: at(7).clusterTime.t, i: at(7).clusterTime.i }),
          backfill: {
            snapshotStart: new Timestamp({ t: 1_705_095_800, i: 3 }),
            lastId: encodeId(9),
            copied: 9,
            done: true,
          },
        },
      },
    });
    const upgraded = storeFor(settings, insertedId, 'bidding.ad_cpta -> ds.t', 5, '2026-11-30T08:00:00.000Z');
    expect(await upgraded.load(signal())).toEqual({ position: at(7), backfill, resync: true });
    // Read once: the old copy is gone from the settings document (lastChangeId stays, as the copy).
    const afterUpgrade = await settings.findOne({ _id: insertedId });
    expect(afterUpgrade?.status).not.toHaveProperty('checkpoint');
    expect(afterUpgrade?.lastChangeId).toEqual({ _data: at(7).token });
    await settings.replaceOne({ _id: insertedId }, { ...original });
    expect(await storeFor(settings, insertedId, 'bidding.ad_cpta -> ds.t', 6).load(signal())).toEqual({
      position: at(7),
      backfill,
      resync: true,
    });
    // Deleting the checkpoint document starts afresh: the old copy is not read a second time.
    await client
      .db(settings.dbName)
      .collection(checkpointsCollectionName(settings.collectionName))
      .deleteOne({ _id: insertedId });
    expect(
      (await storeFor(settings, insertedId, 'bidding.ad_cpta -> ds.t', 7).load(signal())).position,
    ).toBeUndefined();
    // A checkpoint of another target is not taken over.
    const other = await settings.insertOne({
      ...original,
      lastChangeId: { _data: at(7).token },
      status: {
        checkpoint: { scope: 'bidding.ad_cpta -> ds.old', clusterTime: new Timestamp({ t: 1, i: 1 }) },
      },
    });
    expect(await storeFor(settings, other.insertedId, 'bidding.ad_cpta -> ds.t').load(signal())).toEqual({
      position: undefined,
    });
  });

  it('issue 10 item 3: the lease floor (fenceOf) and the fencing of settings writes survive a replacement of the settings document', async () => {
    const database = `cfg_${randomBytes(4).toString('hex')}`;
    const store = new MongoSettingsStore(client, { database });
    await store.ensure(signal());
    await store.collection.insertOne({ _id: 'orders', ...original } as Document);
    await store.list(signal());
    const owner = new MongoCheckpointStore({
      checkpoints: store.checkpoints,
      settings: store.collection,
      settingsId: 'orders',
      scope: 'bidding.ad_cpta -> ds.t',
      fence: 7,
    });
    await owner.save({ position: at(1) }, signal());
    expect(await store.fenceOf('orders', signal())).toBe(7);
    await store.collection.replaceOne({ _id: 'orders' } as Document, { ...original });
    expect(await store.fenceOf('orders', signal())).toBe(7);
    expect(await store.collection.findOne({ _id: 'orders' } as Document)).not.toHaveProperty('status');
    // Nor can an older owner write a state or columns into the replaced document.
    await expect(store.reportStatus('orders', { state: 'streaming' }, 6)).rejects.toBeInstanceOf(
      FencedOutError,
    );
    await expect(store.saveColumns('orders', [{ name: 'x', type: 'STRING' }], 6)).rejects.toBeInstanceOf(
      FencedOutError,
    );
    await store.reportStatus('orders', { state: 'streaming' }, 7);
    expect(await store.collection.findOne({ _id: 'orders' } as Document)).toMatchObject({
      status: { state: 'streaming', fence: 7 },
    });
  });
});

describe('issue 11: the stream and the backfill save one checkpoint concurrently', () => {
  const at = (i: number) => ({
    token: `8265A1B2C3${String(i).padStart(10, '0')}`,
    clusterTime: { t: 1_705_095_875, i },
  });
  const signal = () => new AbortController().signal;
  const snapshotStart = { t: 1_705_095_800, i: 3 };
  const progress = (n: number) => ({
    snapshotStart,
    lastId: undefined,
    copied: 2 * n,
    done: false,
    estimated: 500,
    ranges: [
      { after: undefined, upTo: encodeId(100), lastId: encodeId(n), copied: n, done: false },
      { after: encodeId(100), upTo: undefined, lastId: encodeId(100 + n), copied: n, done: n >= 40 },
    ],
  });

  it('concurrent position saves and backfill progress saves both survive, ranges and estimate included', async () => {
    const settings = client
      .db(`cfg_${randomBytes(4).toString('hex')}`)
      .collection('bigquery_archiver_settings');
    const { insertedId } = await settings.insertOne({ mongo_database: 'a', mongo_collection: 'b' });
    const store = storeFor(settings, insertedId, 'a.b -> ds.t', 1);
    // A new backfill: the whole checkpoint, no position yet.
    await store.save({ position: undefined, backfill: progress(0) }, signal());
    // Each role saves one at a time, in order; the two roles save at the same time.
    const stream = async () => {
      for (let n = 1; n <= 40; n++) await store.save({ position: at(n) }, signal());
    };
    const backfill = async () => {
      for (let n = 1; n <= 40; n++) await store.saveBackfill(progress(n), signal());
    };
    await Promise.all([stream(), backfill()]);
    const loaded = await store.load(signal());
    expect(loaded.position).toEqual(at(40));
    expect(loaded.backfill).toEqual(progress(40));
    // The compatibility copy follows the position, and a progress save leaves it there.
    await store.saveBackfill(progress(41), signal());
    expect(await settings.findOne({ _id: insertedId })).toMatchObject({
      lastChangeId: { _data: at(40).token },
    });
    expect((await store.load(signal())).position).toEqual(at(40));
  });

  it('a new backfill (save with progress) still clears the position; the one-range form without ranges still loads', async () => {
    const settings = client
      .db(`cfg_${randomBytes(4).toString('hex')}`)
      .collection('bigquery_archiver_settings');
    const { insertedId } = await settings.insertOne({ mongo_database: 'a', mongo_collection: 'b' });
    const store = storeFor(settings, insertedId, 'a.b -> ds.t', 1);
    await store.save({ position: at(9) }, signal());
    const oneRange = { snapshotStart, lastId: encodeId(7), copied: 7, done: false };
    await store.save({ position: undefined, backfill: oneRange }, signal());
    expect(await store.load(signal())).toEqual({ position: undefined, backfill: oneRange });
  });
});
