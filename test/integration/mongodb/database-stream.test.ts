import { randomBytes } from 'node:crypto';
import { MongoClient } from 'mongodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BSON_DECODE_OPTIONS } from '../../../src/base/bson-kind.js';
import { type RawChange } from '../../../src/core/ports.js';
import {
  databaseStreamsUnavailable,
  MongoDatabaseStreamSource,
} from '../../../src/mongodb/database-stream.js';
import { MongoRawChangeSource } from '../../../src/mongodb/raw-change-source.js';

const uri = process.env.MBA_TEST_MONGODB_URI ?? '';
let client: MongoClient;

beforeAll(async () => {
  client = new MongoClient(uri, BSON_DECODE_OPTIONS);
  await client.connect();
});

afterAll(async () => {
  await client.close();
});

describe('database-level change streams on the test peer (issue 12)', () => {
  it('the peer is not offered one: its hello reports no replica set, and it gets per-collection streams', async () => {
    expect(await databaseStreamsUnavailable(client, new AbortController().signal)).toMatch(
      /neither a replica set \(setName\) nor mongos/,
    );
  });

  it('why not: the peer accepts the database-level aggregate and reports nothing, where the collection stream reports the same inserts', async () => {
    const db = client.db(`dbstream_${randomBytes(4).toString('hex')}`);
    const items = db.collection<{ _id: number }>('items');
    const watched = db.collection('items');
    await items.insertOne({ _id: 0 });
    const signal = new AbortController().signal;
    const start = {
      kind: 'startAt',
      clusterTime: await new MongoRawChangeSource(client, watched).currentTime(signal),
    } as const;
    const shared = await new MongoDatabaseStreamSource(client, db.databaseName, { maxAwaitMs: 200 }).open(
      start,
      ['items'],
      signal,
    );
    const own = await new MongoRawChangeSource(client, watched, { maxAwaitMs: 200 }).open(start, signal);
    try {
      await items.insertMany([{ _id: 1 }, { _id: 2 }]);
      const fromOwn: RawChange[] = [];
      const fromShared: RawChange[] = [];
      const deadline = Date.now() + 5_000;
      while (fromOwn.length < 2 && Date.now() < deadline) {
        fromOwn.push(...(await own.next(100, signal)).changes);
        fromShared.push(...(await shared.next(100, signal)).changes);
      }
      expect(fromOwn.length).toBeGreaterThanOrEqual(2);
      expect(fromShared).toEqual([]);
    } finally {
      await Promise.all([shared.close(), own.close()]);
    }
  });
});
