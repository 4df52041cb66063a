// Contract of the MongoDB test peer: the change-stream and paging behaviour the archiver relies on,
// checked against whichever peer `scripts/peers/cli.ts run` started (MBA_TEST_MONGODB_PEER).
//
// Neither peer is a real mongod. Where one diverges from MongoDB, the test names the gap in a comment and
// asserts what the peer really does, so a peer upgrade that changes the behaviour fails here first and the
// archiver's tests can be adjusted knowingly. Real-MongoDB shapes the peers cannot produce belong in
// test/fixtures/.
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  Binary,
  Code,
  type ChangeStream,
  type ChangeStreamDocument,
  type CommandSucceededEvent,
  type Db,
  type Document,
  Long,
  MongoClient,
  ObjectId,
  Timestamp,
} from 'mongodb';
import { describe, expect, it } from 'vitest';

const PEERS = ['mongo-java-server', 'poppydb'] as const;
type PeerName = (typeof PEERS)[number];

function currentPeer(): PeerName {
  const name = process.env.MBA_TEST_MONGODB_PEER;
  const peer = PEERS.find((p) => p === name);
  if (peer === undefined) {
    throw new Error(`MBA_TEST_MONGODB_PEER must be one of ${PEERS.join(', ')}, got ${String(name)}`);
  }
  return peer;
}

function mongoUri(): string {
  const uri = process.env.MBA_TEST_MONGODB_URI;
  if (!uri)
    throw new Error('MBA_TEST_MONGODB_URI is not set; run the tests through scripts/peers/cli.ts run');
  return uri;
}

const PEER = currentPeer();
/** Keeps an idle `tryNext` short on PoppyDB, which honours awaitData (mongo-java-server answers at once). */
const MAX_AWAIT_MS = 100;
const PULL_TIMEOUT_MS = 15_000;
/** How long a stream must stay silent to count as "nothing more to come". */
const QUIET_MS = 1_000;

interface Item {
  _id: number;
  v: number;
  w?: number;
}

/** Commands the server answered successfully, as seen through the driver's command monitoring. */
class CommandLog {
  readonly replies: { readonly name: string; readonly reply: Document }[] = [];

  constructor(client: MongoClient) {
    // Instrumentation only: the stream itself is always consumed by pulling.
    client.on('commandSucceeded', (event: CommandSucceededEvent) => {
      if (event.commandName === 'aggregate' || event.commandName === 'getMore') {
        this.replies.push({ name: event.commandName, reply: event.reply as Document });
      }
    });
  }

  aggregates(): Document[] {
    return this.replies.filter((r) => r.name === 'aggregate').map((r) => r.reply);
  }

  /** Id of the cursor the latest aggregate opened: the change stream's server-side cursor. */
  latestCursorId(): Long {
    const id: unknown = (this.aggregates().at(-1)?.cursor as Document | undefined)?.id;
    if (!(id instanceof Long) && typeof id !== 'number') throw new Error('no aggregate cursor seen yet');
    return Long.fromValue(id);
  }

  /** Sizes of every first/next batch returned so far. */
  batchSizes(): number[] {
    return this.replies.map(({ reply }) => {
      const cursor = reply.cursor as Document | undefined;
      const batch: unknown = cursor?.firstBatch ?? cursor?.nextBatch;
      return Array.isArray(batch) ? batch.length : 0;
    });
  }
}

interface TestDatabase {
  readonly db: Db;
  readonly commands: CommandLog;
}

/** One client and one freshly named database per test; both go away afterwards. */
async function withDatabase(body: (t: TestDatabase) => Promise<void>): Promise<void> {
  const client = new MongoClient(mongoUri(), { monitorCommands: true, serverSelectionTimeoutMS: 10_000 });
  const commands = new CommandLog(client);
  await client.connect();
  const db = client.db(`contract_${randomUUID().replaceAll('-', '').slice(0, 16)}`);
  try {
    await body({ db, commands });
  } finally {
    await db.dropDatabase().catch(() => undefined); // best effort: the peer is discarded after the run anyway
    await client.close();
  }
}

/** Pulls until `count` events arrived or the timeout passed; returns what it got. */
async function pull<T extends Document>(
  stream: ChangeStream<T>,
  count: number,
  timeoutMs = PULL_TIMEOUT_MS,
): Promise<ChangeStreamDocument<T>[]> {
  const events: ChangeStreamDocument<T>[] = [];
  const deadline = Date.now() + timeoutMs;
  while (events.length < count && Date.now() < deadline) {
    const event = await stream.tryNext();
    if (event) events.push(event);
    else await sleep(20);
  }
  return events;
}

/** Pulls for `ms` and returns whatever arrives: used to prove nothing more (no duplicate) comes. */
async function pullFor<T extends Document>(
  stream: ChangeStream<T>,
  ms = QUIET_MS,
): Promise<ChangeStreamDocument<T>[]> {
  return pull(stream, Number.POSITIVE_INFINITY, ms);
}

/** The document `_id` an archiver would extract: documentKey first, fullDocument as the fallback. */
function eventDocumentId(event: ChangeStreamDocument<Item>): unknown {
  const key = 'documentKey' in event ? (event.documentKey as Document) : undefined;
  const full = 'fullDocument' in event ? (event.fullDocument as Document | null | undefined) : undefined;
  return key?._id ?? full?._id;
}

function ids(events: readonly ChangeStreamDocument<Item>[]): unknown[] {
  return events.map(eventDocumentId);
}

function range(from: number, to: number): number[] {
  return Array.from({ length: to - from }, (_, i) => from + i);
}

async function insertRange(db: Db, collection: string, from: number, to: number): Promise<void> {
  await db.collection<Item>(collection).insertMany(range(from, to).map((i) => ({ _id: i, v: i })));
}

/**
 * A value to pass as `startAtOperationTime` that designates `event`.
 * Gap (PoppyDB): `clusterTime` is an Int64 of epoch milliseconds, not a Timestamp. Its own replies carry
 * timestamps whose 64-bit value is that same millisecond count, so that is the form it would understand.
 */
function operationTimeOf(event: ChangeStreamDocument<Item> | undefined): Timestamp {
  const clusterTime: unknown = event && 'clusterTime' in event ? event.clusterTime : undefined;
  if (clusterTime instanceof Timestamp) return clusterTime;
  if (typeof clusterTime === 'number' || clusterTime instanceof Long) {
    return new Timestamp(Long.fromValue(clusterTime));
  }
  throw new Error(`event has no usable clusterTime: ${JSON.stringify(clusterTime)}`);
}

describe(`MongoDB peer contract (${PEER})`, () => {
  it('reports insert, update, replace and delete through watch() with updateLookup', async () => {
    await withDatabase(async ({ db }) => {
      const items = db.collection<Item>('items');
      await items.insertOne({ _id: 0, v: 0 }); // creates the collection before the stream opens
      const stream = items.watch([], {
        fullDocument: 'updateLookup',
        batchSize: 10,
        maxAwaitTimeMS: MAX_AWAIT_MS,
      });
      try {
        expect(await stream.tryNext()).toBeNull(); // opens the cursor: later writes must all be seen

        // Each step is read before the next write, so updateLookup sees the document as that step left it.
        await items.insertOne({ _id: 1, v: 1 });
        const [insert] = await pull(stream, 1);
        await items.updateOne({ _id: 1 }, { $set: { v: 2 } });
        const [update] = await pull(stream, 1);
        await items.replaceOne({ _id: 1 }, { v: 3, w: 3 });
        const [replace] = await pull(stream, 1);
        await items.deleteOne({ _id: 1 });
        const [remove] = await pull(stream, 1);

        expect(insert).toMatchObject({
          operationType: 'insert',
          documentKey: { _id: 1 },
          fullDocument: { _id: 1, v: 1 },
        });
        expect(remove).toMatchObject({ operationType: 'delete', documentKey: { _id: 1 } });
        // The archiver's key extraction (documentKey._id, else fullDocument._id) finds the right document
        // on every event of both peers.
        expect(ids([insert, update, replace, remove].filter((e) => e !== undefined))).toEqual([1, 1, 1, 1]);
        for (const event of [insert, update, replace, remove]) {
          expect(event?._id).toHaveProperty('_data');
          // Gap (both): no `wallTime` on events (MongoDB 6.0+ sets it on every event).
          expect(event).not.toHaveProperty('wallTime');
        }

        switch (PEER) {
          case 'mongo-java-server':
            // Gap: update events carry the update specification as `documentKey` and have no
            // `updateDescription`; the post-image comes from updateLookup only.
            expect(update).toMatchObject({
              operationType: 'update',
              documentKey: { $set: { v: 2 } },
              fullDocument: { _id: 1, v: 2 },
            });
            expect(update).not.toHaveProperty('updateDescription');
            // Gap: replaceOne is reported as an `update` whose documentKey is the replacement document.
            expect(replace).toMatchObject({
              operationType: 'update',
              documentKey: { _id: 1, v: 3, w: 3 },
              fullDocument: { _id: 1, v: 3, w: 3 },
            });
            // Gap: no `ns` on any event.
            expect(insert).not.toHaveProperty('ns');
            // Gap: a delete event has a `fullDocument: null` field (MongoDB omits the field).
            expect(remove?.operationType === 'delete' && 'fullDocument' in remove).toBe(true);
            expect((remove as Document).fullDocument).toBeNull();
            expect(insert?.clusterTime).toBeInstanceOf(Timestamp);
            break;
          case 'poppydb':
            expect(update).toMatchObject({
              operationType: 'update',
              documentKey: { _id: 1 },
              fullDocument: { _id: 1, v: 2 },
              updateDescription: { updatedFields: { v: 2 }, removedFields: [] },
            });
            expect(replace).toMatchObject({
              operationType: 'replace',
              documentKey: { _id: 1 },
              fullDocument: { _id: 1, v: 3, w: 3 },
            });
            expect(insert).toMatchObject({ ns: { db: db.databaseName, coll: 'items' } });
            // Gap: a delete event carries the deleted document as `fullDocument` (MongoDB has none).
            expect(remove).toMatchObject({ fullDocument: { _id: 1, v: 3, w: 3 } });
            // Gap: `clusterTime` is an Int64 of epoch milliseconds (promoted to a JS number), not a
            // Timestamp.
            expect(typeof insert?.clusterTime).toBe('number');
            expect(Math.abs(Number(insert?.clusterTime) - Date.now())).toBeLessThan(60_000);
            // Gap: every event carries the writer's `lsid` and `txnNumber`, which MongoDB only sets on
            // events from multi-document transactions.
            expect(insert).toHaveProperty('lsid');
            expect(insert).toHaveProperty('txnNumber');
            break;
          default:
            PEER satisfies never;
        }
      } finally {
        await stream.close();
      }
    });
  });

  it('looks up the full document at read time, not at write time', async () => {
    await withDatabase(async ({ db }) => {
      const items = db.collection<Item>('lookups');
      await items.insertOne({ _id: 0, v: 0 });
      const stream = items.watch([], {
        fullDocument: 'updateLookup',
        batchSize: 10,
        maxAwaitTimeMS: MAX_AWAIT_MS,
      });
      try {
        expect(await stream.tryNext()).toBeNull();
        await items.insertOne({ _id: 1, v: 1 });
        await items.updateOne({ _id: 1 }, { $set: { v: 2 } });
        await items.replaceOne({ _id: 1 }, { v: 3, w: 3 });
        await items.deleteOne({ _id: 1 });
        // All four events are read only now, after the delete: MongoDB's lookup finds no document and
        // reports `fullDocument: null` on the update and the replace.
        const [, update, replace, remove] = await pull(stream, 4);
        expect(remove?.operationType).toBe('delete');
        switch (PEER) {
          case 'mongo-java-server':
            // Gap: a failed lookup yields the update's `$set` fields without `_id` (update) or an empty
            // document (replace), instead of null.
            expect(update).toMatchObject({ operationType: 'update', fullDocument: { v: 2 } });
            expect((update as Document).fullDocument).not.toHaveProperty('_id');
            expect(replace).toMatchObject({ operationType: 'update', fullDocument: {} });
            expect(Object.keys((replace as Document).fullDocument as Document)).toEqual([]);
            break;
          case 'poppydb':
            // Gap: fullDocument is the post-image captured at write time, so it is never null and can be
            // staler or fresher than what MongoDB's read-time lookup would return.
            expect(update).toMatchObject({ operationType: 'update', fullDocument: { _id: 1, v: 2 } });
            expect(replace).toMatchObject({ operationType: 'replace', fullDocument: { _id: 1, v: 3, w: 3 } });
            break;
          default:
            PEER satisfies never;
        }
      } finally {
        await stream.close();
      }
    });
  });

  it('honours batchSize on the aggregate and getMore replies while iterating with for await', async () => {
    await withDatabase(async ({ db, commands }) => {
      const total = 23;
      const batchSize = 5;
      const items = db.collection<Item>('batched');
      await items.insertOne({ _id: -1, v: -1 });
      const stream = items.watch([], { batchSize, maxAwaitTimeMS: MAX_AWAIT_MS });
      const seen: unknown[] = [];
      try {
        expect(await stream.tryNext()).toBeNull();
        await insertRange(db, 'batched', 0, total);
        const deadline = Date.now() + PULL_TIMEOUT_MS;
        for await (const event of stream) {
          seen.push(eventDocumentId(event));
          if (seen.length === total || Date.now() > deadline) break;
        }
      } finally {
        await stream.close();
      }
      expect(seen).toEqual(range(0, total));
      const sizes = commands.batchSizes();
      switch (PEER) {
        case 'mongo-java-server':
          // Without batchSize its first batch would be unbounded; with it, every batch respects it.
          expect(Math.max(...sizes)).toBeLessThanOrEqual(batchSize);
          expect(sizes.filter((n) => n > 0).length).toBeGreaterThanOrEqual(Math.ceil(total / batchSize));
          break;
        case 'poppydb':
          // Gap: a change stream's getMore drains every queued event and ignores batchSize. The writes
          // happened while no getMore was waiting, so the next reply carries all of them at once.
          expect(sizes).toContain(total);
          break;
        default:
          PEER satisfies never;
      }
    });
  });

  it('resumes after an earlier event with resumeAfter, exclusive of that event', async () => {
    await withDatabase(async ({ db }) => {
      const items = db.collection<Item>('resumed');
      await items.insertOne({ _id: -1, v: -1 });
      const first = items.watch([], { batchSize: 4, maxAwaitTimeMS: MAX_AWAIT_MS });
      let token: unknown;
      try {
        expect(await first.tryNext()).toBeNull();
        await insertRange(db, 'resumed', 0, 6);
        const events = await pull(first, 6);
        expect(ids(events)).toEqual(range(0, 6));
        token = events[2]?._id;
      } finally {
        await first.close();
      }
      // Written while no stream was open: only the resume can deliver these.
      await insertRange(db, 'resumed', 6, 9);

      const resumed = items.watch([], { resumeAfter: token, batchSize: 4, maxAwaitTimeMS: MAX_AWAIT_MS });
      try {
        expect(ids(await pull(resumed, 6))).toEqual(range(3, 9));
        expect(await pullFor(resumed)).toEqual([]);
      } finally {
        await resumed.close();
      }
    });
  });

  it('starts from an operation time with startAtOperationTime', async () => {
    await withDatabase(async ({ db }) => {
      const items = db.collection<Item>('timed');
      await items.insertOne({ _id: -1, v: -1 });
      const first = items.watch([], { batchSize: 10, maxAwaitTimeMS: MAX_AWAIT_MS });
      let startAt: Timestamp;
      try {
        expect(await first.tryNext()).toBeNull();
        await insertRange(db, 'timed', 0, 5);
        const events = await pull(first, 5);
        expect(ids(events)).toEqual(range(0, 5));
        startAt = operationTimeOf(events[2]);
      } finally {
        await first.close();
      }

      const replay = items.watch([], {
        startAtOperationTime: startAt,
        batchSize: 10,
        maxAwaitTimeMS: MAX_AWAIT_MS,
      });
      try {
        // Opening the cursor before the next write makes "starts from now" observable.
        const opening = await replay.tryNext();
        await insertRange(db, 'timed', 5, 7);
        let expected: number[];
        switch (PEER) {
          case 'mongo-java-server':
            // Inclusive of the event at that time, like MongoDB.
            expected = range(2, 7);
            break;
          case 'poppydb':
            // Gap: startAtOperationTime is ignored; the stream starts at "now", so history is not replayed.
            expected = range(5, 7);
            break;
          default:
            PEER satisfies never;
            throw new Error('unreachable');
        }
        const replayed = opening ? [opening] : [];
        replayed.push(...(await pull(replay, expected.length - replayed.length)));
        expect(ids(replayed)).toEqual(expected);
        expect(await pullFor(replay)).toEqual([]);
      } finally {
        await replay.close();
      }
    });
  });

  it('survives another client killing the stream cursor, losing and repeating nothing', async () => {
    await withDatabase(async ({ db, commands }) => {
      const items = db.collection<Item>('killed');
      await items.insertOne({ _id: -1, v: -1 });
      const stream = items.watch([], { batchSize: 3, maxAwaitTimeMS: MAX_AWAIT_MS });
      const killer = new MongoClient(mongoUri(), { serverSelectionTimeoutMS: 10_000 });
      try {
        expect(await stream.tryNext()).toBeNull();
        await insertRange(db, 'killed', 0, 5);
        // A resume token must exist before the kill: without one the driver resumes "from now".
        const before = await pull(stream, 5);
        expect(ids(before)).toEqual(range(0, 5));

        const cursorId = commands.latestCursorId();
        const killed = await killer
          .db(db.databaseName)
          .command({ killCursors: 'killed', cursors: [cursorId] });
        expect(
          (killed.cursorsKilled as unknown[]).map((id) => Long.fromValue(id as number).toString()),
        ).toEqual([cursorId.toString()]);

        // Written after the kill and before the next getMore: only a resumed cursor can deliver them.
        await insertRange(db, 'killed', 5, 10);
        switch (PEER) {
          case 'mongo-java-server': {
            // Like MongoDB: the getMore fails ("Cursor id N does not exist") and the driver resumes on its own
            // with resumeAfter its last token.
            const after = await pull(stream, 5);
            expect(ids(after)).toEqual(range(5, 10));
            expect(await pullFor(stream)).toEqual([]);
            expect(commands.aggregates()).toHaveLength(2);
            expect(commands.latestCursorId().equals(cursorId)).toBe(false);
            break;
          }
          case 'poppydb': {
            // Gap: a getMore on the killed cursor succeeds with an empty batch and cursor id 0 instead of
            // failing with CursorNotFound, so the driver takes the stream as ended by the server and does
            // not resume: the stream goes quiet and closed. The archiver must treat a change stream that
            // closes without an error as a reason to reopen it from its last token.
            expect(await pullFor(stream)).toEqual([]);
            expect(stream.closed).toBe(true);
            expect(commands.aggregates()).toHaveLength(1);
            const token: unknown = stream.resumeToken;
            expect(token).toEqual(before.at(-1)?._id);
            const reopened = items.watch([], {
              resumeAfter: token,
              batchSize: 3,
              maxAwaitTimeMS: MAX_AWAIT_MS,
            });
            try {
              expect(ids(await pull(reopened, 5))).toEqual(range(5, 10));
              expect(await pullFor(reopened)).toEqual([]);
            } finally {
              await reopened.close();
            }
            break;
          }
          default:
            PEER satisfies never;
        }
      } finally {
        await stream.close();
        await killer.close();
      }
    });
  });

  it('pages a few thousand documents by _id ranges without gaps or repeats', async () => {
    await withDatabase(async ({ db }) => {
      const total = 3_000;
      const pageSize = 250;
      const docs = range(0, total).map((i) => ({ _id: new ObjectId(), n: i }));
      // Inserted out of _id order (7919 is coprime with 3000, so this is a permutation): the server must sort.
      const shuffled = [...docs].sort((a, b) => ((a.n * 7_919) % total) - ((b.n * 7_919) % total));
      const paged = db.collection<{ _id: ObjectId; n: number }>('paged');
      for (let i = 0; i < total; i += 500) await paged.insertMany(shuffled.slice(i, i + 500));

      const seen: ObjectId[] = [];
      let pages = 0;
      let last: ObjectId | undefined;
      for (;;) {
        const page = await paged
          .find(last ? { _id: { $gt: last } } : {})
          .sort({ _id: 1 })
          .limit(pageSize)
          .toArray();
        if (page.length === 0) break;
        pages += 1;
        expect(page.length).toBeLessThanOrEqual(pageSize);
        seen.push(...page.map((d) => d._id));
        last = page.at(-1)?._id;
      }

      expect(pages).toBe(total / pageSize);
      expect(seen.map((id) => id.toHexString())).toEqual(
        docs.map((d) => d._id.toHexString()).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)),
      );
      expect(await paged.countDocuments()).toBe(total);
    });
  });

  // Issue 10 item 16: values the archiver must archive (hostile documents) that the peer cannot take.
  it('issue 10 item 16: stores Binary subtype 2 and Code with scope (mongo-java-server closes the connection)', async () => {
    await withDatabase(async ({ db }) => {
      const values = [
        ['binary subtype 2', new Binary(Buffer.from([0, 0, 0, 1, 7]), 2)],
        ['code with scope', new Code('function () { return x; }', { x: 1 })],
      ] as const;
      for (const [label, value] of values) {
        // A client of its own: the peer drops the connection, and the driver's retry meets the same fate.
        const client = new MongoClient(mongoUri(), { serverSelectionTimeoutMS: 3_000, retryWrites: false });
        try {
          const insert = client
            .db(db.databaseName)
            .collection<{ _id: string; value: unknown }>('hostile')
            .insertOne({ _id: label, value })
            .then(
              () => undefined,
              (error: unknown) => (error instanceof Error ? error : new Error(String(error))),
            );
          const failure = await insert;
          if (PEER === 'mongo-java-server') {
            // Gap: real MongoDB stores both (the old Binary subtype and the deprecated Code with scope).
            expect(failure?.name, label).toMatch(/MongoNetworkError|MongoServerSelectionError/);
          } else {
            expect(failure, label).toBeUndefined();
          }
        } finally {
          await client.close();
        }
      }
    });
  });

  it('issue 10 item 16: keeps the subtype of a user-defined Binary (mongo-java-server returns 128 as 0)', async () => {
    await withDatabase(async ({ db }) => {
      const binaries = db.collection<{ _id: number; b: Binary }>('binaries');
      await binaries.insertOne({ _id: 1, b: new Binary(Buffer.from('abc'), 128) });
      const read = await binaries.findOne({ _id: 1 });
      expect(Buffer.from(read?.b.buffer ?? []).toString()).toBe('abc');
      // Gap (mongo-java-server): the subtype comes back as 0 (generic); real MongoDB keeps 128.
      expect(read?.b.sub_type).toBe(PEER === 'mongo-java-server' ? 0 : 128);
    });
  });

  it('issue 10 item 16: updates a document that has a $-prefixed key with $set (mongo-java-server refuses)', async () => {
    await withDatabase(async ({ db }) => {
      const docs = db.collection<{ _id: number } & Document>('dollar');
      await docs.insertOne({ _id: 1, $price: 5, v: 1 });
      const failure = await docs.updateOne({ _id: 1 }, { $set: { v: 2 } }).then(
        () => undefined,
        (error: unknown) => (error instanceof Error ? error.message : String(error)),
      );
      if (PEER === 'mongo-java-server') {
        // Gap: MongoDB 5.0+ stores $-prefixed keys and updates other fields of such a document.
        expect(failure).toBeDefined();
        return;
      }
      expect(failure).toBeUndefined();
      expect(await docs.findOne({ _id: 1 })).toEqual({ _id: 1, $price: 5, v: 2 });
    });
  });
});
