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
  spawnDaemon,
  viewMatchesCollection,
  waitForState,
} from '../support/daemon.js';

const suffix = randomBytes(3).toString('hex');
const DATASET = `crash_${suffix}`;
const SETTINGS_DB = `archiver_crash_${suffix}`;
const DB = `crashdb_${suffix}`;
const TRIALS = 6;
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
  it(`loses no change and duplicates nothing in the views across ${TRIALS} kill -9 trials in backfill and streaming`, async () => {
    const items = mongo.db(DB).collection<{ _id: number; n: number; label: string }>('items');
    await items.insertMany(Array.from({ length: 5_000 }, (_, i) => ({ _id: i, n: i, label: 'seed' })));
    await mongo
      .db(SETTINGS_DB)
      .collection<{ _id: string } & Document>('bigquery_archiver_settings')
      .insertOne({
        _id: 'items',
        mongo_database: DB,
        mongo_collection: 'items',
        bigquery_table: 'items',
        backfill_full_collection: true,
      });
    const stopWorkload = new AbortController();
    const writes = randomWorkload({ collections: [items], seeded: 5_000 }, stopWorkload.signal);
    const killedIn: string[] = [];
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
        trial < 2 ? ['backfilling', 'streaming'] : ['streaming'],
        60_000,
        spawnedAt,
      );
      await sleep(Math.floor(Math.random() * 700));
      killedIn.push(`${state}:${String(await mappingState(mongo, SETTINGS_DB, 'items'))}`);
      child.kill('SIGKILL');
      await exited;
    }
    expect(killedIn.slice(0, 2).some((s) => s.startsWith('backfilling'))).toBe(true);
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
