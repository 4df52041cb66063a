import { randomBytes } from 'node:crypto';
import { MongoClient, type Collection } from 'mongodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ChangeEvent } from '../../../src/core/model.js';
import { type ChangeCursor } from '../../../src/core/ports.js';
import { MongoChangeSource } from '../../../src/mongodb/change-source.js';
import { BSON_DECODE_OPTIONS } from '../../../src/base/bson-kind.js';

const uri = process.env.MBA_TEST_MONGODB_URI ?? '';
let client: MongoClient;

beforeAll(async () => {
  client = new MongoClient(uri, { ...BSON_DECODE_OPTIONS });
  await client.connect();
});

afterAll(async () => {
  await client.close();
});

interface Item {
  _id: string | number;
  [key: string]: unknown;
}

/** One collection, as the source reads it (untyped) and as the test writes it. */
function freshCollection(): Collection<Item> & { readonly untyped: Collection } {
  const db = client.db(`src_${randomBytes(4).toString('hex')}`);
  return Object.assign(db.collection<Item>('items'), { untyped: db.collection('items') });
}

/** Pulls until `count` events arrived (or 10 s passed). */
async function pull(cursor: ChangeCursor, count: number): Promise<ChangeEvent[]> {
  const events: ChangeEvent[] = [];
  const deadline = Date.now() + 10_000;
  while (events.length < count && Date.now() < deadline) {
    const batch = await cursor.next(100, new AbortController().signal);
    events.push(...batch.events);
  }
  return events;
}

describe('MongoDB change source', () => {
  it('starts at the recorded cluster time and pulls inserts, updates and deletes in order', async () => {
    const collection = freshCollection();
    const source = new MongoChangeSource(client, collection.untyped, { maxAwaitMs: 300 });
    await collection.insertOne({ _id: 0, before: true });
    const start = await source.currentTime(new AbortController().signal);
    await collection.insertOne({ _id: 1, v: 1 });
    await collection.updateOne({ _id: 1 }, { $set: { v: 2 } });
    await collection.deleteOne({ _id: 1 });
    const cursor = await source.open({ kind: 'startAt', clusterTime: start }, new AbortController().signal);
    try {
      const events = await pull(cursor, 3);
      // startAtOperationTime is inclusive: the insert that defined the start time comes first.
      const relevant = events.filter((e) => e.kind !== 'upsert' || e.documentId !== 0);
      expect(
        relevant.map((e) => [
          e.kind,
          e.kind === 'upsert' ? e.operationType : '',
          'documentId' in e ? e.documentId : '',
        ]),
      ).toEqual([
        ['upsert', 'insert', 1],
        // The update is looked up when read, after the delete: nothing to look up (defect 4 of the original
        // crashed here). mongo-java-server's update event carries no id in documentKey, hence undefined.
        ['lookup-missed', '', undefined],
        ['delete', '', 1],
      ]);
      const first = relevant[0];
      expect(first?.kind === 'upsert' && first.document).toEqual({ _id: 1, v: 1 });
    } finally {
      await cursor.close();
    }
  });

  it('returns an empty batch when idle, and resumes exactly after a position', async () => {
    const collection = freshCollection();
    const source = new MongoChangeSource(client, collection.untyped, { maxAwaitMs: 200 });
    await collection.insertOne({ _id: 'seed' });
    const start = await source.currentTime(new AbortController().signal);
    await collection.insertMany([{ _id: 'a' }, { _id: 'b' }, { _id: 'c' }]);
    const cursor = await source.open({ kind: 'startAt', clusterTime: start }, new AbortController().signal);
    const events = (await pull(cursor, 4)).filter((e) => e.kind === 'upsert' && e.documentId !== 'seed');
    const idle = await cursor.next(100, new AbortController().signal);
    expect(idle.events).toEqual([]);
    await cursor.close();
    const afterA = events[0];
    if (!afterA) throw new Error('no events');
    const resumed = await source.open(
      { kind: 'resumeAfter', position: { token: afterA.token, clusterTime: afterA.clusterTime } },
      new AbortController().signal,
    );
    try {
      const rest = await pull(resumed, 2);
      expect(rest.map((e) => ('documentId' in e ? e.documentId : undefined))).toEqual(['b', 'c']);
    } finally {
      await resumed.close();
    }
  });

  it('stops a waiting pull when aborted', async () => {
    const collection = freshCollection();
    const source = new MongoChangeSource(client, collection.untyped, { maxAwaitMs: 30_000 });
    await collection.insertOne({ _id: 'seed' });
    const start = await source.currentTime(new AbortController().signal);
    const controller = new AbortController();
    const cursor = await source.open(
      { kind: 'startAt', clusterTime: { t: start.t, i: start.i + 1 } },
      controller.signal,
    );
    const started = Date.now();
    setTimeout(() => {
      controller.abort();
    }, 300);
    await expect(cursor.next(100, controller.signal)).rejects.toThrow();
    expect(Date.now() - started).toBeLessThan(5_000);
    await cursor.close();
  });

  it('issue 10 item 13: reads on without $changeStreamSplitLargeEvent when the server refuses it (40324), and says so once', async () => {
    const collection = freshCollection();
    await collection.insertOne({ _id: 'seed', v: 0 });
    const start = await new MongoChangeSource(client, collection.untyped).currentTime(
      new AbortController().signal,
    );
    // A server that reports 7.0 (as some Atlas tiers do) but refuses the stage, as mongo-java-server does.
    const reports7 = {
      db: (name: string) =>
        name === 'admin'
          ? { command: () => Promise.resolve({ version: '7.0.0', versionArray: [7, 0, 0, 0], ok: 1 }) }
          : client.db(name),
    } as unknown as MongoClient;
    const notices: string[] = [];
    const source = new MongoChangeSource(reports7, collection.untyped, {
      maxAwaitMs: 200,
      onNotice: (message) => notices.push(message),
    });
    await collection.updateOne({ _id: 'seed' }, { $set: { v: 1 } });
    await collection.insertOne({ _id: 'x', v: 2 });
    const cursor = await source.open({ kind: 'startAt', clusterTime: start }, new AbortController().signal);
    try {
      const events = await pull(cursor, 3);
      expect(events.map((e) => (e.kind === 'upsert' ? e.document : e.kind))).toEqual([
        { _id: 'seed', v: 0 },
        { _id: 'seed', v: 1 },
        { _id: 'x', v: 2 },
      ]);
    } finally {
      await cursor.close();
    }
    expect(notices).toHaveLength(1);
    expect(notices[0]).toMatch(/refused \$changeStreamSplitLargeEvent .*Unrecognized pipeline stage/);
  });
});
