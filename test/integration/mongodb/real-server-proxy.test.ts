import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { MongoClient, type Db, type Document } from 'mongodb';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { loopbackTarget, RealServerProxy } from '../../support/real-server-proxy.js';

// The proxy that gives the peer's change streams a real server's waits (test/support/real-server-proxy.ts):
// the benchmark of many mappings (bench/scale.ts) relies on these behaviours.

const peerUri = process.env.MBA_TEST_MONGODB_URI ?? '';
/** Polling monitor: one monitoring connection per client and no RTT pinger, so connections can be counted. */
const CLIENT_OPTIONS = { serverMonitoringMode: 'poll', maxPoolSize: 1 } as const;
let direct: MongoClient;
let proxy: RealServerProxy;
const clients: MongoClient[] = [];

beforeAll(async () => {
  direct = new MongoClient(peerUri);
  await direct.connect();
});

afterAll(async () => {
  await direct.close();
});

afterEach(async () => {
  for (const client of clients.splice(0)) await client.close().catch(() => undefined);
  await proxy.stop();
});

async function proxied(): Promise<MongoClient> {
  const client = new MongoClient(proxy.uri(), CLIENT_OPTIONS);
  clients.push(client);
  await client.connect();
  return client;
}

/** Opens a change stream on `db.items` by command; resolves with its cursor id. */
async function openStream(db: Db): Promise<unknown> {
  await db.createCollection('items').catch(() => undefined);
  const reply = await db.command({ aggregate: 'items', pipeline: [{ $changeStream: {} }], cursor: {} });
  return (reply.cursor as Document).id;
}

/** One getMore of the stream, timed: its batch and the milliseconds it took. */
async function timedGetMore(
  db: Db,
  id: unknown,
  maxTimeMS: number,
): Promise<{ batch: Document[]; ms: number }> {
  const started = performance.now();
  const reply = await db.command({ getMore: id, collection: 'items', maxTimeMS });
  return {
    batch: (reply.cursor as Document).nextBatch as Document[],
    ms: performance.now() - started,
  };
}

async function until(condition: () => boolean, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await sleep(20);
  }
}

const freshDbName = () => `proxy_${randomBytes(4).toString('hex')}`;

describe('RealServerProxy', () => {
  beforeAll(() => {
    expect(() => loopbackTarget('mongodb://db.example.com:27017')).toThrow(/loopback/);
  });

  it('holds an empty change-stream getMore for its maxTimeMS, which the peer alone answers at once', async () => {
    proxy = await RealServerProxy.start({ target: loopbackTarget(peerUri) });
    const name = freshDbName();
    const viaPeer = direct.db(name);
    const peerIdle = await timedGetMore(viaPeer, await openStream(viaPeer), 1_000);
    // What the proxy is for: the peer ignores maxTimeMS.
    expect(peerIdle.batch).toEqual([]);
    expect(peerIdle.ms).toBeLessThan(300);

    const db = (await proxied()).db(name);
    const idle = await timedGetMore(db, await openStream(db), 1_000);
    expect(idle.batch).toEqual([]);
    expect(idle.ms).toBeGreaterThanOrEqual(800);
    expect(idle.ms).toBeLessThan(1_600);
    expect(proxy.heldGetMores).toBe(1);
    expect(proxy.reissuedGetMores).toBeGreaterThan(5);
  });

  it('answers a held getMore within ~200 ms of an insert, with the event', async () => {
    proxy = await RealServerProxy.start({ target: loopbackTarget(peerUri) });
    const name = freshDbName();
    const db = (await proxied()).db(name);
    const id = await openStream(db);
    const waiting = timedGetMore(db, id, 5_000);
    await sleep(700);
    const insertedAt = performance.now();
    await direct
      .db(name)
      .collection('items')
      .insertOne({ _id: 'woken' } as Document);
    const { batch } = await waiting;
    const wokenAfter = performance.now() - insertedAt;
    expect(batch.map((e) => (e.documentKey as { _id: unknown })._id)).toEqual(['woken']);
    expect(wokenAfter).toBeLessThan(250);
  });

  it('counts connections, now and at peak, and commands by name and database', async () => {
    const seen: string[] = [];
    proxy = await RealServerProxy.start({
      target: loopbackTarget(peerUri),
      onCommand: (c) => {
        if (c.db === counted) seen.push(`${c.name}:${c.collection ?? ''}`);
      },
    });
    const counted = freshDbName();
    const other = freshDbName();
    const a = await proxied();
    const items = a.db(counted).collection('items');
    await items.insertOne({ _id: 1 } as Document);
    await items.insertOne({ _id: 2 } as Document);
    await items.updateOne({ _id: 1 } as Document, { $set: { n: 1 } });
    await items.findOneAndUpdate({ _id: 2 } as Document, { $set: { n: 2 } });
    await items.deleteOne({ _id: 2 } as Document);
    await a
      .db(other)
      .collection('items')
      .insertOne({ _id: 1 } as Document);
    // One monitoring connection and one pooled connection per client.
    expect(proxy.openConnections).toBe(2);

    const b = await proxied();
    await b.db(other).collection('items').findOne({});
    expect(proxy.openConnections).toBe(4);
    expect(proxy.count(['insert'], counted)).toBe(2);
    expect(proxy.count(['insert', 'update', 'delete', 'findAndModify'], counted)).toBe(5);
    expect(proxy.count(['insert'], other)).toBe(1);
    expect(proxy.count(['find'], other)).toBe(1);
    expect(proxy.count(['insert'])).toBe(3);
    expect(seen).toEqual([
      'insert:items',
      'insert:items',
      'update:items',
      'findAndModify:items',
      'delete:items',
    ]);
    expect(proxy.commandCounts()).toContainEqual({ db: counted, name: 'update', count: 1 });

    await b.close();
    await until(() => proxy.openConnections === 2);
    await a.close();
    await until(() => proxy.openConnections === 0);
    expect(proxy.peakConnections).toBe(4);
  });

  it('stop ends a held getMore at once and refuses new connections', async () => {
    proxy = await RealServerProxy.start({ target: loopbackTarget(peerUri) });
    const name = freshDbName();
    const db = (await proxied()).db(name);
    const id = await openStream(db);
    const started = performance.now();
    const waiting = timedGetMore(db, id, 10_000).then(
      () => 'answered',
      (error: unknown) => (error instanceof Error ? error.name : 'thrown'),
    );
    await sleep(300);
    const uri = proxy.uri();
    await proxy.stop();
    expect(await waiting).toMatch(/MongoNetworkError/);
    expect(performance.now() - started).toBeLessThan(2_000);
    await until(() => proxy.openConnections === 0);
    const late = new MongoClient(uri, { ...CLIENT_OPTIONS, serverSelectionTimeoutMS: 500 });
    await expect(late.connect()).rejects.toThrow();
    await late.close();
  });
});
