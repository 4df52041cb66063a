import { randomBytes } from 'node:crypto';
import { Long, MongoClient, ObjectId } from 'mongodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeId, encodeId, SettingsCheckpointStore } from '../../../src/mongodb/checkpoint-store.js';

let client: MongoClient;

beforeAll(async () => {
  client = new MongoClient(process.env.MBA_TEST_MONGODB_URI ?? '');
  await client.connect();
});

afterAll(async () => {
  await client.close();
});

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
    const store = new SettingsCheckpointStore(settings, insertedId);
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
