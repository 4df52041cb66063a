import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { MongoClient, type Document } from 'mongodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type BigQueryClients } from '../../../src/bigquery/client.js';
import { emulatorClients } from '../support/bigquery-clients.js';
import {
  daemonEnv,
  randomWorkload,
  mappingState,
  SETTINGS_COLLECTION,
  spawnDaemon,
  viewMatchesCollection,
  waitForState,
} from '../support/daemon.js';

const suffix = randomBytes(3).toString('hex');
const DATASET = `crash_${suffix}`;
const SETTINGS_DB = `archiver_crash_${suffix}`;
const DB = `crashdb_${suffix}`;
const TRIALS = 6;
/** Trials killed while the backfill runs (the stream alongside it); the rest while only streaming. */
const BACKFILL_TRIALS = 3;
/** Large enough that the copy spans several kills: it resumes per range each time. */
const SEEDED = 20_000;
const LEASE_TTL_MS = 3_000;
let mongo: MongoClient;
let clients: BigQueryClients;

beforeAll(async () => {
  mongo = new MongoClient(process.env.MBA_TEST_MONGODB_URI ?? '');
  await mongo.connect();
  clients = await emulatorClients();
});

afterAll(async () => {
  await mongo.close();
  await clients.close();
});

describe('crash recovery', () => {
  it(`issue 11 must-show 3: loses no change and duplicates nothing in the views across ${TRIALS} kill -9 trials in backfill (stream running alongside) and streaming`, async () => {
    const items = mongo.db(DB).collection<{ _id: number; n: number; label: string }>('items');
    for (let from = 0; from < SEEDED; from += 5_000) {
      await items.insertMany(
        Array.from({ length: 5_000 }, (_, i) => ({ _id: from + i, n: from + i, label: 'seed' })),
      );
    }
    await mongo
      .db(SETTINGS_DB)
      .collection<{ _id: string } & Document>('bigquery_archiver_settings')
      .insertOne({
        _id: 'items',
        mongo_database: DB,
        mongo_collection: 'items',
        bigquery_table: 'items',
        backfill_full_collection: true,
        backfill_parallelism: 4,
      });
    const stopWorkload = new AbortController();
    const writes = randomWorkload({ collections: [items], seeded: SEEDED }, stopWorkload.signal);
    const killedIn: string[] = [];
    /** Whether the stream saved a position next to unfinished backfill progress (first trial). */
    const streamedDuringCopy: boolean[] = [];
    const streamSavedDuringCopy = async (timeoutMs: number): Promise<boolean> => {
      const checkpoints = mongo.db(SETTINGS_DB).collection(`${SETTINGS_COLLECTION}_checkpoints`);
      const deadline = Date.now() + timeoutMs;
      while (Date.now() < deadline) {
        const checkpoint = await checkpoints.findOne({ _id: 'items' } as Document);
        const backfill = checkpoint?.backfill as Document | undefined;
        if (backfill?.done === false && checkpoint?.position !== undefined) return true;
        if (backfill?.done === true) return false;
        await sleep(50);
      }
      return false;
    };
    // A killed daemon's lease blocks its successor until it expires: a short TTL keeps the trials quick.
    const env = { ...daemonEnv(DATASET, SETTINGS_DB), LEASE_TTL_MS: String(LEASE_TTL_MS) };
    for (let trial = 0; trial < TRIALS; trial++) {
      const spawnedAt = new Date();
      const { child, exited } = spawnDaemon(env);
      // The first trials die during the backfill, the later ones while streaming. The state must be this
      // process's own report: the settings document still holds the killed one's, and this one first waits
      // for that one's lease to expire.
      const state = await waitForState(
        mongo,
        SETTINGS_DB,
        'items',
        trial < BACKFILL_TRIALS ? ['backfilling', 'streaming'] : ['streaming'],
        60_000,
        spawnedAt,
      );
      // In the first trial, wait (a while at most) for the stream to save a position while the copy runs.
      if (trial === 0) streamedDuringCopy.push(await streamSavedDuringCopy(5_000));
      await sleep(Math.floor(Math.random() * 700));
      killedIn.push(`${state}:${String(await mappingState(mongo, SETTINGS_DB, 'items'))}`);
      child.kill('SIGKILL');
      await exited;
    }
    expect(killedIn.slice(0, BACKFILL_TRIALS).some((s) => s.startsWith('backfilling'))).toBe(true);
    // The stream ran during the copy: a kill found its position saved while the copy was unfinished.
    expect(streamedDuringCopy).toContain(true);
    stopWorkload.abort();
    const ops = await writes;
    expect(ops).toBeGreaterThan(50);

    const { child, exited } = spawnDaemon(env);
    const { rows, distinct } = await viewMatchesCollection({
      mongo,
      clients,
      db: DB,
      collection: 'items',
      dataset: DATASET,
      table: 'items',
      fields: ['n', 'label'],
    });
    expect(distinct).toBe(rows);

    // Graceful stop: SIGTERM flushes, checkpoints and exits 0 within the bound.
    const stoppedAt = Date.now();
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(Date.now() - stoppedAt).toBeLessThan(30_000);
  }, 400_000);
});
