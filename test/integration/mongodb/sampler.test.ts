import { randomBytes } from 'node:crypto';
import { Binary, MongoClient, ObjectId, type CommandStartedEvent, type Document } from 'mongodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeId } from '../../../src/mongodb/checkpoint-store.js';
import { sampleDocuments } from '../../../src/mongodb/sampler.js';
import { BSON_DECODE_OPTIONS } from '../../../src/base/bson-kind.js';

const uri = process.env.MBA_TEST_MONGODB_URI ?? '';
let client: MongoClient;
const commands: CommandStartedEvent[] = [];

beforeAll(async () => {
  client = new MongoClient(uri, { ...BSON_DECODE_OPTIONS, monitorCommands: true });
  // Test instrumentation: which commands reached the server.
  client.on('commandStarted', (event) => commands.push(event));
  await client.connect();
});

afterAll(async () => {
  await client.close();
});

const signal = () => new AbortController().signal;
const COUNT = 2_000;
const BASE_SECONDS = 1_600_000_000;

/**
 * Documents whose shape changes with age: the oldest carry `legacy_code`, the middle ones `campaign`,
 * the newest `tracking`; every one carries `n`, its rank in `_id` order.
 */
function shapedDocuments(idOf: (n: number) => unknown): Document[] {
  return Array.from({ length: COUNT }, (_, n) => ({
    _id: idOf(n),
    n,
    ...(n < 100 && { legacy_code: `L${n}` }),
    ...(n >= 900 && n < 1_100 && { campaign: { name: `c${n}` } }),
    ...(n >= COUNT - 50 && { tracking: true }),
  }));
}

async function seeded(documents: readonly Document[]) {
  const collection = client.db(`smp_${randomBytes(4).toString('hex')}`).collection('items');
  await collection.insertMany([...documents]);
  return collection;
}

/** Commands sent while `run` ran. */
async function recorded<T>(run: () => Promise<T>): Promise<{ result: T; sent: CommandStartedEvent[] }> {
  const since = commands.length;
  const result = await run();
  return { result, sent: commands.slice(since) };
}

/** Id kinds, and whether the sampler reaches the middle of the collection by `_id` seeks (else by `skip`). */
const ID_KINDS: readonly [string, (n: number) => unknown, boolean][] = [
  ['ObjectId', (n) => ObjectId.createFromTime(BASE_SECONDS + n * 60), true],
  ['number', (n) => n * 3, true],
  ['decimal string', (n) => `user-${String(n).padStart(5, '0')}`, true],
  ['hex string', (n) => n.toString(16).padStart(8, '0'), true],
  ['Date', (n) => new Date((BASE_SECONDS + n) * 1_000), true],
  [
    'Binary UUID',
    (n) => {
      const bytes = new Uint8Array(16);
      new DataView(bytes.buffer).setUint32(12, n);
      return new Binary(bytes, Binary.SUBTYPE_UUID);
    },
    true,
  ],
  ['compound', (n) => ({ tenant: 'acme', seq: n }), false],
];

describe('document sampler', () => {
  it('returns every document of a collection no larger than the sample, in _id order', async () => {
    const collection = await seeded(Array.from({ length: 40 }, (_, n) => ({ _id: 40 - n, v: n })));
    const samples = await sampleDocuments(collection, { maxSamples: 100, signal: signal() });
    expect(samples.map((d): unknown => d._id)).toEqual(Array.from({ length: 40 }, (_, n) => n + 1));
  });

  it.each(ID_KINDS)(
    'with %s ids: at most maxSamples, from old, middle and new documents, without $sample or a full read',
    async (_kind, idOf, seeks) => {
      const collection = await seeded(shapedDocuments(idOf));
      const { result: samples, sent } = await recorded(() =>
        sampleDocuments(collection, { maxSamples: 100, signal: signal() }),
      );
      expect(samples.length).toBeGreaterThanOrEqual(50);
      expect(samples.length).toBeLessThanOrEqual(100);
      expect(new Set(samples.map((d) => encodeId(d._id))).size).toBe(samples.length);
      for (const field of ['legacy_code', 'campaign', 'tracking']) {
        expect(
          samples.some((d) => field in d),
          field,
        ).toBe(true);
      }
      // Spread: every eighth of the collection contributes.
      const ranks = samples.map((d) => d.n as number);
      for (let eighth = 0; eighth < 8; eighth++) {
        const [from, to] = [(eighth * COUNT) / 8, ((eighth + 1) * COUNT) / 8];
        expect(
          ranks.some((n) => n >= from && n < to),
          `ranks ${from}..${to}`,
        ).toBe(true);
      }
      expect(JSON.stringify(sent.map((c) => c.command))).not.toContain('$sample');
      const reads = sent.filter((c) => c.commandName === 'find');
      expect(reads.length).toBeLessThanOrEqual(17);
      for (const read of reads) expect(read.command.limit).toBeLessThanOrEqual(100);
      const skipped = reads.filter((read) => Number(read.command.skip ?? 0) > 0);
      expect(skipped.length).toBe(seeks ? 0 : 15);
      expect(
        sent.every((c) => ['find', 'count', 'aggregate', 'getMore', 'killCursors'].includes(c.commandName)),
      ).toBe(true);

      // Deterministic for a fixed collection.
      const again = await sampleDocuments(collection, { maxSamples: 100, signal: signal() });
      expect(again.map((d) => encodeId(d._id))).toEqual(samples.map((d) => encodeId(d._id)));
    },
  );

  it('honours small sample sizes and the abort signal', async () => {
    const collection = await seeded(shapedDocuments((n) => n));
    for (const maxSamples of [1, 2, 5, 17]) {
      const samples = await sampleDocuments(collection, { maxSamples, signal: signal() });
      expect(samples.length).toBeGreaterThan(0);
      expect(samples.length).toBeLessThanOrEqual(maxSamples);
    }
    const [newest] = await sampleDocuments(collection, { maxSamples: 1, signal: signal() });
    expect(newest?._id).toBe(COUNT - 1);
    expect(await sampleDocuments(collection, { maxSamples: 0, signal: signal() })).toEqual([]);
    await expect(sampleDocuments(collection, { signal: AbortSignal.abort() })).rejects.toThrow();
  });
});
