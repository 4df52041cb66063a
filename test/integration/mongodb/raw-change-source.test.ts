import { randomBytes } from 'node:crypto';
import { createServer, connect, type AddressInfo, type Server, type Socket } from 'node:net';
import { MongoClient, type Collection, type CommandSucceededEvent, type Document } from 'mongodb';
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
import { SilentProxy } from '../support/silent-proxy.js';

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

function tokenOfChange(change: RawChange): string {
  return decoded(change).token;
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

/**
 * A loopback proxy in front of the peer that can fail the next getMore as a network failure does: the
 * connection it is written to is closed instead of forwarding it.
 */
class FailingProxy {
  readonly #state = { failGetMore: false };

  private constructor(
    private readonly server: Server,
    private readonly sockets: Set<Socket>,
    state: { failGetMore: boolean },
  ) {
    this.#state = state;
  }

  static async start(target: { host: string; port: number }): Promise<FailingProxy> {
    const sockets = new Set<Socket>();
    const state = { failGetMore: false };
    const server = createServer((client) => {
      const upstream = connect(target.port, target.host);
      sockets.add(client).add(upstream);
      const end = () => {
        client.destroy();
        upstream.destroy();
      };
      client.on('data', (chunk: Buffer) => {
        if (state.failGetMore && chunk.includes('getMore')) {
          state.failGetMore = false;
          end();
          return;
        }
        upstream.write(chunk);
      });
      upstream.pipe(client);
      client.on('error', end).on('close', end);
      upstream.on('error', end).on('close', end);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return new FailingProxy(server, sockets, state);
  }

  uri(): string {
    return `mongodb://127.0.0.1:${String((this.server.address() as AddressInfo).port)}/?directConnection=true`;
  }

  failNextGetMore(): void {
    this.#state.failGetMore = true;
  }

  async stop(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await new Promise<void>((resolve) => {
      this.server.close(() => {
        resolve();
      });
    });
  }
}

function peerAddress(): { host: string; port: number } {
  const peer = new URL(uri.replace(/^mongodb:/, 'http:'));
  return { host: peer.hostname, port: Number(peer.port) };
}

describe('raw change streams over connections that fail', () => {
  it('resumes from the last token after a getMore fails with its connection, and hands over the next change', async () => {
    const proxy = await FailingProxy.start(peerAddress());
    const through = new MongoClient(proxy.uri(), { ...BSON_DECODE_OPTIONS, monitorCommands: true });
    const stages: unknown[] = [];
    through.on('commandStarted', (event) => {
      if (event.commandName === 'aggregate')
        stages.push((event.command.pipeline as Document[])[0]?.$changeStream);
    });
    const collection = freshCollection();
    try {
      await through.connect();
      const signal = new AbortController().signal;
      const source = new MongoRawChangeSource(
        through,
        through.db(collection.dbName).collection(collection.collectionName),
        { maxAwaitMs: 200 },
      );
      await collection.insertOne({ _id: 'seed' });
      const cursor = await source.open(
        { kind: 'startAt', clusterTime: await source.currentTime(signal) },
        signal,
      );
      try {
        await collection.insertOne({ _id: 'a' });
        const before = await pullRaw(cursor, 1);
        while (!before.some((c) => documentIdOf(c) === 'a')) before.push(...(await pullRaw(cursor, 1)));
        const a = before.find((c) => documentIdOf(c) === 'a') ?? [];
        proxy.failNextGetMore();
        await collection.insertOne({ _id: 'b' });
        expect((await pullRaw(cursor, 1)).map(documentIdOf)).toEqual(['b']);
        // The getMore failed with its connection; the stream was opened again after a's change.
        expect(stages.at(-1)).toEqual({
          fullDocument: 'updateLookup',
          resumeAfter: { _data: tokenOfChange(a) },
        });
      } finally {
        await cursor.close();
      }
    } finally {
      await through.close();
      await proxy.stop();
    }
  });

  it('an abort interrupts a getMore the server does not answer', async () => {
    const proxy = await SilentProxy.start(peerAddress());
    const through = new MongoClient(proxy.uri(), { ...BSON_DECODE_OPTIONS });
    const collection = freshCollection();
    try {
      await through.connect();
      const source = new MongoRawChangeSource(
        through,
        through.db(collection.dbName).collection(collection.collectionName),
        { maxAwaitMs: 200 },
      );
      await collection.insertOne({ _id: 'seed' });
      const signal = new AbortController().signal;
      const cursor = await source.open(
        { kind: 'startAt', clusterTime: await source.currentTime(signal) },
        signal,
      );
      await cursor.next(100, signal);
      proxy.silence();
      const controller = new AbortController();
      const began = Date.now();
      setTimeout(() => {
        controller.abort();
      }, 300);
      await expect(cursor.next(100, controller.signal)).rejects.toThrow();
      expect(Date.now() - began).toBeLessThan(5_000);
    } finally {
      await through.close(true);
      await proxy.stop();
    }
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
