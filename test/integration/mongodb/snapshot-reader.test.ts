import { randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { EJSON } from 'bson';
import { Binary, type Collection, MongoClient, ObjectId, type ReadPreference } from 'mongodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type IdRange } from '../../../src/core/ports.js';
import { encodeId } from '../../../src/mongodb/checkpoint-store.js';
import { decodeDocument } from '../../../src/mongodb/raw-documents.js';
import { MongoSnapshotSource, SnapshotReader } from '../../../src/mongodb/snapshot-reader.js';

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

/** Every chunk of `range` until an empty one, the last id kept between chunks as a checkpoint keeps it. */
async function readRange(source: MongoSnapshotSource, range: IdRange): Promise<string[]> {
  const seen: string[] = [];
  let lastId: string | undefined;
  for (let guard = 0; guard < 10_000; guard++) {
    const chunk = await source.nextChunk(range, lastId, new AbortController().signal);
    if (chunk.length === 0) return seen;
    seen.push(...chunk.map((document) => encodeId(document._id)));
    lastId = seen.at(-1);
  }
  throw new Error('the range did not end');
}

/** The collection's ids in the server's own `_id` order. */
async function idsInServerOrder(collection: Collection): Promise<string[]> {
  const documents = await collection
    .find({}, { projection: { _id: 1 } })
    .sort({ _id: 1 })
    .toArray();
  return documents.map((document) => encodeId(document._id));
}

/** Ids of several BSON types, as a collection whose ids mix types may hold them. */
const arbId: fc.Arbitrary<unknown> = fc.oneof(
  fc.integer({ min: -50, max: 50 }),
  fc.double({ min: -50, max: 50, noNaN: true, noDefaultInfinity: true }),
  fc.string({ maxLength: 4 }).map((s) => s.replace(/\0/g, '')),
  fc.constantFrom('$a', '$x', 'a.b'),
  fc.integer({ min: 0, max: 40 }).map((n) => new ObjectId(n.toString(16).padStart(24, '0'))),
  fc.record({ k: fc.integer({ min: 0, max: 5 }), s: fc.constantFrom('x', '$v') }),
  fc.integer({ min: 0, max: 30 }).map((n) => new Date(n * 1_000)),
  fc.boolean(),
  fc.uint8Array({ maxLength: 3 }).map((bytes) => new Binary(bytes)),
);

describe('snapshot source: a collection split into _id ranges (issue 11)', () => {
  it('issue 11: reading every range to its end yields every document once, in order within each range, whatever the id types and the number of parts', async () => {
    const db = client.db(`ranges_${randomBytes(4).toString('hex')}`);
    let run = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.uniqueArray(arbId, { maxLength: 90, selector: (id) => encodeId(id) }),
        fc.integer({ min: 1, max: 8 }),
        fc.integer({ min: 1, max: 7 }),
        fc.integer({ min: 1, max: 3 }),
        // Small samples take the `$sample` path (the collection holds more than 20 samples' worth), large
        // ones the `_id` index walk. mongo-java-server fails `$sample` of more than ~31 at random.
        fc.constantFrom(1, 2, 3, 1_000),
        async (ids, parts, chunkSize, minRangeDocuments, sampleSize) => {
          const collection = db.collection<{ _id: unknown; v: number }>(`items_${String(run++)}`);
          // Numbers equal in value are one id to MongoDB (1 and 1.0): keep the first.
          const unique = [
            ...new Map(ids.map((id) => [typeof id === 'number' ? `n${id}` : encodeId(id), id])).values(),
          ];
          if (unique.length > 0) await collection.insertMany(unique.map((_id, v) => ({ _id, v })));
          const raw = db.collection(collection.collectionName);
          const source = new MongoSnapshotSource(raw, { chunkSize, minRangeDocuments, sampleSize });
          const ranges = await source.split(parts, new AbortController().signal);
          expect(ranges.length).toBeGreaterThanOrEqual(1);
          expect(ranges.length).toBeLessThanOrEqual(parts);
          expect(ranges[0]?.after).toBeUndefined();
          const order = await idsInServerOrder(raw);
          // The copy ends at the greatest id there was: later ones are the change stream's.
          expect(ranges.at(-1)?.upTo).toBe(order.at(-1));
          for (let i = 1; i < ranges.length; i++) expect(ranges[i]?.after).toBe(ranges[i - 1]?.upTo);
          const read: string[] = [];
          for (const range of ranges) read.push(...(await readRange(source, range)));
          expect(read).toEqual(order);
        },
      ),
      { numRuns: 40 },
    );
    await db.dropDatabase();
  });

  it('issue 11: an empty or tiny collection is one range covering everything', async () => {
    const db = client.db(`ranges_${randomBytes(4).toString('hex')}`);
    const collection = db.collection<{ _id: unknown }>('items');
    const source = new MongoSnapshotSource(db.collection('items'), { chunkSize: 10 });
    expect(await source.split(8, new AbortController().signal)).toEqual([
      { after: undefined, upTo: undefined },
    ]);
    await collection.insertMany(Array.from({ length: 15 }, (_, i) => ({ _id: i })));
    // 15 documents: fewer than two ranges of at least one chunk each; it ends at the greatest id.
    const whole = { after: undefined, upTo: encodeId(14) };
    expect(await source.split(8, new AbortController().signal)).toEqual([whole]);
    expect(await readRange(source, whole)).toHaveLength(15);
  });

  it('issue 11: split points fall at even quantiles of the ids, so ranges hold about as many documents each', async () => {
    const db = client.db(`ranges_${randomBytes(4).toString('hex')}`);
    const collection = db.collection<{ _id: unknown }>('items');
    // Unevenly spread ids: a dense run of numbers, then sparse strings.
    const ids = [
      ...Array.from({ length: 3_000 }, (_, i) => i),
      ...Array.from({ length: 1_000 }, (_, i) => `s${String(i * 97).padStart(6, '0')}`),
    ];
    await collection.insertMany(ids.map((_id) => ({ _id })));
    const source = new MongoSnapshotSource(db.collection('items'), { chunkSize: 100 });
    const ranges = await source.split(4, new AbortController().signal);
    expect(ranges).toHaveLength(4);
    const sizes = await Promise.all(ranges.map(async (range) => (await readRange(source, range)).length));
    expect(sizes.reduce((a, b) => a + b)).toBe(4_000);
    for (const size of sizes) expect(size).toBe(1_000);
  });

  it('issue 11: documents inserted into the ranges during the copy are read at most once, and every document there before is read once', async () => {
    const db = client.db(`ranges_${randomBytes(4).toString('hex')}`);
    const collection = db.collection<{ _id: number }>('items');
    const before = Array.from({ length: 2_000 }, (_, i) => 2 * i);
    await collection.insertMany(before.map((_id) => ({ _id })));
    const source = new MongoSnapshotSource(db.collection('items'), { chunkSize: 50 });
    const ranges = await source.split(4, new AbortController().signal);
    expect(ranges).toHaveLength(4);
    let inserted = 0;
    const perRange = await Promise.all(
      ranges.map(async (range) => {
        const seen: unknown[] = [];
        let lastId: string | undefined;
        for (;;) {
          const chunk = await source.nextChunk(range, lastId, new AbortController().signal);
          if (chunk.length === 0) return seen;
          seen.push(...chunk.map((document) => document._id));
          lastId = encodeId(chunk.at(-1)?._id);
          // Odd ids land everywhere: behind the readers, ahead of them, in other ranges, past the last.
          const fresh = Array.from({ length: 5 }, () => 2 * Math.floor(Math.random() * 2_100) + 1);
          const result = await collection.bulkWrite(
            fresh.map((_id) => ({
              updateOne: { filter: { _id }, update: { $setOnInsert: { v: 1 } }, upsert: true },
            })),
          );
          inserted += result.upsertedCount;
        }
      }),
    );
    expect(inserted).toBeGreaterThan(0);
    for (const seen of perRange) {
      const numbers = seen as number[];
      expect(new Set(numbers).size).toBe(numbers.length);
      expect(numbers).toEqual([...numbers].sort((a, b) => a - b));
    }
    const all = perRange.flat() as number[];
    expect(new Set(all).size).toBe(all.length);
    const evens = all.filter((id) => id % 2 === 0);
    expect(evens.sort((a, b) => a - b)).toEqual(before);
  });
});

describe('snapshot source: chunks handed over as BSON bytes (issue 11, build 6)', () => {
  it('issue 11: nextRawChunk reads the same documents and lastIds as nextChunk, range by range, whatever the id types', async () => {
    const db = client.db(`raw_${randomBytes(4).toString('hex')}`);
    let run = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.uniqueArray(arbId, { maxLength: 60, selector: (id) => encodeId(id) }),
        fc.integer({ min: 1, max: 4 }),
        fc.integer({ min: 1, max: 7 }),
        async (ids, parts, chunkSize) => {
          const collection = db.collection<{ _id: unknown; v: number }>(`items_${String(run++)}`);
          const unique = [
            ...new Map(ids.map((id) => [typeof id === 'number' ? `n${id}` : encodeId(id), id])).values(),
          ];
          if (unique.length > 0) await collection.insertMany(unique.map((_id, v) => ({ _id, v })));
          const source = new MongoSnapshotSource(db.collection(collection.collectionName), {
            chunkSize,
            minRangeDocuments: 1,
          });
          const signal = new AbortController().signal;
          let read = 0;
          for (const range of await source.split(parts, signal)) {
            let lastId: string | undefined;
            for (;;) {
              const decoded = await source.nextChunk(range, lastId, signal);
              const raw = await source.nextRawChunk(range, lastId, signal);
              expect(
                raw.documents.map((bytes) => EJSON.stringify(decodeDocument(bytes), { relaxed: false })),
              ).toEqual(decoded.map((document) => EJSON.stringify(document, { relaxed: false })));
              const last = decoded.at(-1);
              if (last === undefined) {
                expect(raw.lastId).toBeUndefined();
                break;
              }
              expect(raw.lastId).toBe(encodeId(last._id));
              read += raw.documents.length;
              lastId = raw.lastId;
            }
          }
          expect(read).toBe(unique.length);
        },
      ),
      { numRuns: 25 },
    );
    await db.dropDatabase();
  });
});

describe('snapshot reads (issue 14, review findings 3 and 12)', () => {
  it('reads the primary with readConcern majority, whatever the connection string prefers', async () => {
    // The snapshot start is the primary's majority-committed time: a copy read from a lagging secondary,
    // or at readConcern local, would write older (or uncommitted) versions at that start.
    const uri = new URL(process.env.MBA_TEST_MONGODB_URI ?? '');
    uri.searchParams.set('readPreference', 'secondaryPreferred');
    const monitored = new MongoClient(uri.toString(), { monitorCommands: true });
    const commands: { name: string; command: Record<string, unknown> }[] = [];
    monitored.on('commandStarted', (event) => {
      commands.push({ name: event.commandName, command: event.command });
    });
    await monitored.connect();
    const db = monitored.db(`snap_${randomBytes(4).toString('hex')}`);
    try {
      await db
        .collection<{ _id: number }>('items')
        .insertMany(Array.from({ length: 30 }, (_, i) => ({ _id: i })));
      // On a standalone server the driver sends no $readPreference, so the preference the driver selects a
      // server with is read from the cursors themselves.
      const cursors: { readonly readPreference: ReadPreference }[] = [];
      const real = db.collection('items');
      const collection = new Proxy(real, {
        get(target, key, receiver) {
          const value: unknown = Reflect.get(target, key, receiver);
          if ((key !== 'find' && key !== 'aggregate') || typeof value !== 'function') return value;
          return (...args: unknown[]) => {
            const cursor = (value as (...a: unknown[]) => { readonly readPreference: ReadPreference }).apply(
              target,
              args,
            );
            cursors.push(cursor);
            return cursor;
          };
        },
      });
      const signal = new AbortController().signal;
      const source = new MongoSnapshotSource(collection, {
        chunkSize: 4,
        minRangeDocuments: 5,
        sampleSize: 1,
      });
      commands.length = 0;
      for (const range of await source.split(3, signal)) {
        let lastId: string | undefined;
        for (;;) {
          const chunk = await source.nextRawChunk(range, lastId, signal);
          if (chunk.lastId === undefined) break;
          lastId = chunk.lastId;
        }
      }
      await new SnapshotReader(collection, 7).nextChunk(undefined, signal);
      const reads = commands.filter((c) => c.name === 'find' || c.name === 'aggregate');
      expect(reads.map((c) => c.name)).toContain('aggregate');
      expect(reads.length).toBeGreaterThan(5);
      for (const read of reads) {
        expect(read.command.readConcern, read.name).toEqual({ level: 'majority' });
      }
      expect(cursors.length).toBe(reads.length);
      expect(new Set(cursors.map((cursor) => cursor.readPreference.mode))).toEqual(new Set(['primary']));
    } finally {
      await db.dropDatabase();
      await monitored.close();
    }
  });
});
