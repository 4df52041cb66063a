import { randomBytes } from 'node:crypto';
import { MongoClient, type Collection, type CommandSucceededEvent } from 'mongodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ChangeEvent } from '../../../src/core/model.js';
import { type ChangeCursor, type RawChange, type RawChangeBatch } from '../../../src/core/ports.js';
import { BSON_DECODE_OPTIONS } from '../../../src/base/bson-kind.js';
import { normalizeChangeEvent } from '../../../src/mongodb/change-event.js';
import { MongoChangeSource } from '../../../src/mongodb/change-source.js';
import { MongoRawChangeSource } from '../../../src/mongodb/raw-change-source.js';
import { decodeDocument } from '../../../src/mongodb/raw-documents.js';
import { relaxedEjsonText } from '../../../src/transform/ejson.js';
import { INVALID_UTF8, INVALID_UTF8_PLACEHOLDER, InvalidUtf8Proxy } from '../support/invalid-utf8-proxy.js';

const uri = process.env.MBA_TEST_MONGODB_URI ?? '';
let client: MongoClient;
/** The cursor ids of the aggregates this client ran (command monitoring: the wire as the server answered). */
const opened: bigint[] = [];

beforeAll(async () => {
  client = new MongoClient(uri, { ...BSON_DECODE_OPTIONS, monitorCommands: true });
  client.on('commandSucceeded', (event: CommandSucceededEvent) => {
    const id = (event.reply as { cursor?: { id?: number | bigint | { toString(): string } } }).cursor?.id;
    if (event.commandName === 'aggregate' && id !== undefined) opened.push(BigInt(id.toString()));
  });
  await client.connect();
});

afterAll(async () => {
  await client.close();
});

interface Item {
  _id: string | number;
  [key: string]: unknown;
}

function freshCollection(): Collection<Item> & { readonly untyped: Collection } {
  const db = client.db(`raw_${randomBytes(4).toString('hex')}`);
  return Object.assign(db.collection<Item>('items'), { untyped: db.collection('items') });
}

/** Pulls until `count` changes arrived (or 10 s passed). */
async function pullRaw(cursor: ChangeCursor<RawChangeBatch>, count: number): Promise<RawChange[]> {
  const changes: RawChange[] = [];
  const deadline = Date.now() + 10_000;
  while (changes.length < count && Date.now() < deadline) {
    changes.push(...(await cursor.next(100, new AbortController().signal)).changes);
  }
  return changes;
}

async function pullEvents(cursor: ChangeCursor, count: number): Promise<ChangeEvent[]> {
  const events: ChangeEvent[] = [];
  const deadline = Date.now() + 10_000;
  while (events.length < count && Date.now() < deadline) {
    events.push(...(await cursor.next(100, new AbortController().signal)).events);
  }
  return events;
}

function documentIdOf(change: RawChange): unknown {
  const event = decoded(change);
  return 'documentId' in event ? event.documentId : undefined;
}

/** A raw change decoded the way the worker threads will: each event whole (no split events here). */
function decoded(change: RawChange): ChangeEvent {
  expect(change).toHaveLength(1);
  return normalizeChangeEvent(decodeDocument(change[0] ?? new Uint8Array()));
}

describe('MongoDB raw change source (issue 11, build 6)', () => {
  it('gives, decoded, what MongoChangeSource gives for inserts, updates, replaces, deletes and a drop', async () => {
    const collection = freshCollection();
    const signal = new AbortController().signal;
    const raw = new MongoRawChangeSource(client, collection.untyped, { maxAwaitMs: 200 });
    const decodedSource = new MongoChangeSource(client, collection.untyped, { maxAwaitMs: 200 });
    await collection.insertOne({ _id: 'seed' });
    const start = await raw.currentTime(signal);
    await collection.insertOne({ _id: 1, v: 1, nested: { a: [1, 'two'] } });
    await collection.insertOne({ _id: 2, v: 'x' });
    await collection.updateOne({ _id: 1 }, { $set: { v: 2 } });
    await collection.replaceOne({ _id: 2 }, { v: 'replaced' });
    await collection.deleteOne({ _id: 1 });
    // The peer opens no change stream on a collection that is gone: both are open before the drop.
    const rawCursor = await raw.open({ kind: 'startAt', clusterTime: start }, signal);
    const cursor = await decodedSource.open({ kind: 'startAt', clusterTime: start }, signal);
    try {
      // Each read up to the delete, the last change before the drop (10 s a pull at most, a few pulls).
      const changes: RawChange[] = [];
      const expected: ChangeEvent[] = [];
      for (let pulls = 0; pulls < 5 && !changes.some((c) => decoded(c).kind === 'delete'); pulls++) {
        changes.push(...(await pullRaw(rawCursor, 1)));
      }
      for (let pulls = 0; pulls < 5 && !expected.some((e) => e.kind === 'delete'); pulls++) {
        expected.push(...(await pullEvents(cursor, 1)));
      }
      await collection.drop();
      changes.push(...(await pullRaw(rawCursor, 1)));
      expected.push(...(await pullEvents(cursor, 1)));
      // The seed's insert comes first when its time is the start (startAtOperationTime is inclusive). The
      // update is looked up after the delete; the peer reports the replace as an update.
      expect(
        expected
          .filter((e) => !('documentId' in e) || e.documentId !== 'seed')
          .map((e) => [e.kind, 'operationType' in e ? e.operationType : '']),
      ).toEqual([
        ['upsert', 'insert'],
        ['upsert', 'insert'],
        ['lookup-missed', 'update'],
        ['upsert', 'update'],
        ['delete', ''],
        ['collection-gone', 'drop'],
      ]);
      expect(changes.map(decoded)).toEqual(expected);
    } finally {
      await Promise.all([rawCursor.close(), cursor.close()]);
    }
  });

  it('resumes after a returned position with the next change, and returns empty batches promptly when idle', async () => {
    const collection = freshCollection();
    const signal = new AbortController().signal;
    const source = new MongoRawChangeSource(client, collection.untyped, { maxAwaitMs: 200 });
    await collection.insertOne({ _id: 'seed' });
    const start = await source.currentTime(signal);
    await collection.insertMany([{ _id: 'a' }, { _id: 'b' }, { _id: 'c' }]);
    const cursor = await source.open({ kind: 'startAt', clusterTime: start }, signal);
    let afterA: RawChangeBatch | undefined;
    // One change a pull, up to 'a' (startAtOperationTime is inclusive: the seed's insert may come first).
    for (let pulls = 0; pulls < 50 && afterA === undefined; pulls++) {
      const batch = await cursor.next(1, signal);
      if (batch.changes.some((c) => documentIdOf(c) === 'a')) afterA = batch;
    }
    await pullRaw(cursor, 2);
    const began = Date.now();
    const idle = await cursor.next(100, signal);
    expect(idle.changes).toEqual([]);
    expect(Date.now() - began).toBeLessThan(2_000);
    await cursor.close();
    const position = afterA?.position;
    if (!position) throw new Error('no position after the change of a');
    const resumed = await source.open({ kind: 'resumeAfter', position }, signal);
    try {
      expect((await pullRaw(resumed, 2)).map(documentIdOf)).toEqual(['b', 'c']);
    } finally {
      await resumed.close();
    }
  });

  it('stops a waiting pull when aborted', async () => {
    const collection = freshCollection();
    const source = new MongoRawChangeSource(client, collection.untyped, { maxAwaitMs: 30_000 });
    await collection.insertOne({ _id: 'seed' });
    const start = await source.currentTime(new AbortController().signal);
    const controller = new AbortController();
    const cursor = await source.open(
      { kind: 'startAt', clusterTime: { t: start.t, i: start.i + 1 } },
      controller.signal,
    );
    const began = Date.now();
    setTimeout(() => {
      controller.abort();
    }, 300);
    await expect(cursor.next(100, controller.signal)).rejects.toThrow();
    expect(Date.now() - began).toBeLessThan(5_000);
    await cursor.close();
  });

  it('close releases the server cursor', async () => {
    const collection = freshCollection();
    const signal = new AbortController().signal;
    const source = new MongoRawChangeSource(client, collection.untyped, { maxAwaitMs: 100 });
    await collection.insertOne({ _id: 'seed' });
    const cursor = await source.open(
      { kind: 'startAt', clusterTime: await source.currentTime(signal) },
      signal,
    );
    const before = opened.length;
    await cursor.next(100, signal);
    const id = opened[before];
    expect(id).toBeDefined();
    await cursor.close();
    await expect(
      collection.db.command({ getMore: id ?? 0n, collection: collection.collectionName }),
    ).rejects.toMatchObject({ code: 43 });
  });
});

describe('raw change events with strings that are not valid UTF-8 (through a proxy that sends such bytes)', () => {
  let proxy: InvalidUtf8Proxy;
  let proxied: MongoClient;

  beforeAll(async () => {
    const peer = new URL(uri.replace(/^mongodb:/, 'http:'));
    proxy = await InvalidUtf8Proxy.start({ host: peer.hostname, port: Number(peer.port) });
    proxied = new MongoClient(proxy.uri(), { ...BSON_DECODE_OPTIONS });
    await proxied.connect();
  });

  afterAll(async () => {
    await proxied.close();
    await proxy.stop();
  });

  it('hands such an event over as its bytes, and reads on after it', async () => {
    const name = `utf8_${randomBytes(4).toString('hex')}`;
    const collection = client.db(name).collection<{ _id: number; s: string }>('items');
    await collection.insertOne({ _id: 0, s: 'before' });
    const source = new MongoRawChangeSource(proxied, proxied.db(name).collection('items'), {
      maxAwaitMs: 200,
    });
    const signal = new AbortController().signal;
    const cursor = await source.open(
      { kind: 'startAt', clusterTime: await source.currentTime(signal) },
      signal,
    );
    try {
      await cursor.next(100, signal);
      await collection.insertOne({ _id: 1, s: 'fine' });
      await collection.insertOne({ _id: 2, s: INVALID_UTF8_PLACEHOLDER });
      await collection.insertOne({ _id: 3, s: 'after' });
      const changes: RawChange[] = [];
      const deadline = Date.now() + 10_000;
      while (changes.length < 3 && Date.now() < deadline) {
        const batch = await cursor.next(100, signal);
        changes.push(...batch.changes.filter((c) => documentIdOf(c) !== 0));
      }
      const invalid = Buffer.from(changes[1]?.[0] ?? []);
      expect(invalid.indexOf(Buffer.from(INVALID_UTF8))).toBeGreaterThan(0);
      const documents = changes.map((c) => {
        const event = decoded(c);
        return event.kind === 'upsert' ? event.document : {};
      });
      expect(documents.map((d) => d._id)).toEqual([1, 2, 3]);
      expect(relaxedEjsonText(documents[1]?.s)).toBe(
        JSON.stringify({ $invalidUtf8: Buffer.from(INVALID_UTF8).toString('base64') }),
      );
      expect(documents[2]?.s).toBe('after');
    } finally {
      await cursor.close();
    }
  });
});
