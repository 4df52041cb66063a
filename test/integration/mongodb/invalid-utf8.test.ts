import { randomBytes } from 'node:crypto';
import { MongoClient } from 'mongodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ChangeEvent } from '../../../src/core/model.js';
import { MongoChangeSource } from '../../../src/mongodb/change-source.js';
import { MongoSnapshotSource, SnapshotReader } from '../../../src/mongodb/snapshot-reader.js';
import { BSON_DECODE_OPTIONS } from '../../../src/base/bson-kind.js';
import { encodeId } from '../../../src/mongodb/checkpoint-store.js';
import { decodeDocument } from '../../../src/mongodb/raw-documents.js';
import { relaxedEjsonText } from '../../../src/transform/ejson.js';
import { INVALID_UTF8, INVALID_UTF8_PLACEHOLDER, InvalidUtf8Proxy } from '../support/invalid-utf8-proxy.js';

const MARKER = JSON.stringify({ $invalidUtf8: Buffer.from(INVALID_UTF8).toString('base64') });
let proxy: InvalidUtf8Proxy;
let direct: MongoClient;
let proxied: MongoClient;

beforeAll(async () => {
  const peer = new URL((process.env.MBA_TEST_MONGODB_URI ?? '').replace(/^mongodb:/, 'http:'));
  proxy = await InvalidUtf8Proxy.start({ host: peer.hostname, port: Number(peer.port) });
  direct = new MongoClient(process.env.MBA_TEST_MONGODB_URI ?? '', { ...BSON_DECODE_OPTIONS });
  proxied = new MongoClient(proxy.uri(), { ...BSON_DECODE_OPTIONS });
  await Promise.all([direct.connect(), proxied.connect()]);
});

afterAll(async () => {
  await Promise.all([direct.close(), proxied.close()]);
  await proxy.stop();
});

describe('documents stored with strings that are not valid UTF-8 (through a proxy that sends such bytes)', () => {
  it('issue 10 item 12: the backfill copies them, keeping the bytes', async () => {
    const name = `utf8_${randomBytes(4).toString('hex')}`;
    await direct
      .db(name)
      .collection<{ _id: number; s: string }>('items')
      .insertMany([
        { _id: 1, s: 'fine' },
        { _id: 2, s: INVALID_UTF8_PLACEHOLDER },
        { _id: 3, s: 'fine' },
      ]);
    const reader = new SnapshotReader(proxied.db(name).collection('items'), 10);
    const chunk = await reader.nextChunk(undefined, new AbortController().signal);
    expect(chunk.map((d) => d._id as unknown)).toEqual([1, 2, 3]);
    expect(relaxedEjsonText(chunk[1]?.s)).toBe(MARKER);
    expect(chunk[2]?.s).toBe('fine');
  });

  it('issue 11: a raw backfill chunk hands them over as the bytes the server sent', async () => {
    const name = `utf8_${randomBytes(4).toString('hex')}`;
    await direct
      .db(name)
      .collection<{ _id: number; s: string }>('items')
      .insertMany([
        { _id: 1, s: 'fine' },
        { _id: 2, s: INVALID_UTF8_PLACEHOLDER },
        { _id: 3, s: 'fine' },
      ]);
    const source = new MongoSnapshotSource(proxied.db(name).collection('items'), { chunkSize: 10 });
    const chunk = await source.nextRawChunk(
      { after: undefined, upTo: undefined },
      undefined,
      new AbortController().signal,
    );
    expect(chunk.documents).toHaveLength(3);
    expect(chunk.lastId).toBe(encodeId(3));
    expect(Buffer.from(chunk.documents[1] ?? []).includes(Buffer.from(INVALID_UTF8))).toBe(true);
    expect(relaxedEjsonText(decodeDocument(chunk.documents[1] ?? new Uint8Array()).s)).toBe(MARKER);
  });

  it('issue 10 item 12: the change stream reads the event from its bytes and goes on after it', async () => {
    const name = `utf8_${randomBytes(4).toString('hex')}`;
    const collection = direct.db(name).collection<{ _id: number; s: string }>('items');
    await collection.insertOne({ _id: 0, s: 'before' });
    const source = new MongoChangeSource(proxied, proxied.db(name).collection('items'), { maxAwaitMs: 200 });
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
      const events: ChangeEvent[] = [];
      const deadline = Date.now() + 10_000;
      while (events.length < 3 && Date.now() < deadline)
        events.push(...(await cursor.next(100, signal)).events);
      const documents = events.map((e) => (e.kind === 'upsert' ? e.document : {}));
      expect(documents.map((d) => d._id)).toEqual([1, 2, 3]);
      expect(relaxedEjsonText(documents[1]?.s)).toBe(MARKER);
      expect(documents[2]?.s).toBe('after');
    } finally {
      await cursor.close();
    }
  });
});
