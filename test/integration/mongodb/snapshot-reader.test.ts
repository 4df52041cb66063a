import { randomBytes } from 'node:crypto';
import { MongoClient, ObjectId } from 'mongodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SnapshotReader } from '../../../src/mongodb/snapshot-reader.js';

let client: MongoClient;

beforeAll(async () => {
  client = new MongoClient(process.env.MBA_TEST_MONGODB_URI ?? '');
  await client.connect();
});

afterAll(async () => {
  await client.close();
});

describe('snapshot reader', () => {
  it('copies every document once, in _id order, across id types, chunk by chunk', async () => {
    const db = client.db(`snap_${randomBytes(4).toString('hex')}`);
    const collection = db.collection('items');
    const numeric = Array.from({ length: 2_500 }, (_, i) => ({ _id: i, v: i }));
    const strings = ['a', 'b', 'c'].map((s) => ({ _id: s, v: s }));
    const oids = [1, 2].map((n) => ({ _id: new ObjectId(n.toString(16).padStart(24, '0')), v: n }));
    await db
      .collection<{ _id: unknown }>('items')
      .insertMany([...oids, ...strings, ...numeric].sort(() => 0.5 - Math.random()));
    const reader = new SnapshotReader(collection, 1_000);
    const seen: unknown[] = [];
    let last: unknown;
    let chunks = 0;
    for (;;) {
      const chunk = await reader.nextChunk(last, new AbortController().signal);
      if (chunk.length === 0) break;
      expect(chunk.length).toBeLessThanOrEqual(1_000);
      chunks++;
      seen.push(...chunk.map((d) => d._id as unknown));
      last = chunk.at(-1)?._id;
    }
    // BSON order: numbers, then strings, then ObjectIds.
    expect(seen).toEqual([...numeric.map((d) => d._id), 'a', 'b', 'c', ...oids.map((d) => d._id)]);
    expect(chunks).toBeGreaterThanOrEqual(3);
    expect(await reader.estimatedCount()).toBe(2_505);
  });

  it('issue 10 item 7: a string _id starting with $ at a type boundary is compared as a literal, not a field path', async () => {
    const db = client.db(`snap_${randomBytes(4).toString('hex')}`);
    const collection = db.collection<{ _id: unknown; v: number }>('items');
    // BSON order: numbers, strings, documents, ObjectIds. "$x" ends the strings and `{ z: '$v' }` the
    // documents: the chunks after them cross a type boundary, where an unquoted "$x" is a field path and
    // `{ z: '$v' }` an expression object.
    const ids: unknown[] = [1, 2, '$a', '$x', { z: '$v' }, new ObjectId('0000000000000000000000a1')];
    await collection.insertMany(ids.map((_id, v) => ({ _id, v })));
    const reader = new SnapshotReader(db.collection('items'), 1);
    const seen: unknown[] = [];
    let last: unknown;
    for (let guard = 0; guard < 20; guard++) {
      const chunk = await reader.nextChunk(last, new AbortController().signal);
      if (chunk.length === 0) break;
      seen.push(...chunk.map((d) => d._id as unknown));
      last = chunk.at(-1)?._id;
    }
    expect(seen).toEqual(ids);
  });
});
