import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { MongoClient, type Document } from 'mongodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type BigQueryClients } from '../../../src/bigquery/client.js';
import { docIdString } from '../../../src/transform/values.js';
import { bigQueryTestEnv } from '../support/bigquery.js';
import { emulatorClients } from '../support/bigquery-clients.js';

const suffix = randomBytes(3).toString('hex');
const DATASET = `crash_${suffix}`;
const SETTINGS_DB = `archiver_crash_${suffix}`;
const DB = `crashdb_${suffix}`;
const TRIALS = 6;
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

/** The daemon as its own process (`node --import tsx src/main.ts run`), configured by the environment. */
function daemon(): { child: ChildProcess; exited: Promise<number | null> } {
  const bq = bigQueryTestEnv();
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts', 'run'], {
    env: {
      ...process.env,
      MONGO_CLIENT: process.env.MBA_TEST_MONGODB_URI,
      BIGQUERY_PROJECT: bq.projectId,
      BIGQUERY_DATASET: DATASET,
      SETTINGS_DATABASE: SETTINGS_DB,
      SETTINGS_POLL_INTERVAL_MS: '500',
      BIGQUERY_EMULATOR_ENDPOINT: bq.apiEndpoint,
      BIGQUERY_EMULATOR_GRPC: `${bq.grpcHost}:${bq.grpcPort}`,
      BIGQUERY_EMULATOR_KIND: bq.peer,
      // The Storage Write path has its own tests; here it would add bqemulator's gRPC path to every change.
      BIGQUERY_WRITER: 'insert-all',
      METRICS_PORT: '0',
      LOG_LEVEL: 'warn',
    },
    stdio: ['ignore', process.env.MBA_DEBUG_DAEMON ? 'inherit' : 'ignore', 'inherit'],
  });
  const exited = new Promise<number | null>((resolve) => {
    child.once('exit', (code) => {
      resolve(code);
    });
  });
  return { child, exited };
}

async function mappingState(): Promise<unknown> {
  const doc = await mongo
    .db(SETTINGS_DB)
    .collection('bigquery_archiver_settings')
    .findOne({ _id: 'items' } as Document);
  return (doc?.status as Document | undefined)?.state;
}

async function waitForState(states: readonly string[], timeoutMs = 60_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const state = await mappingState();
    if (typeof state === 'string' && states.includes(state)) return state;
    if (Date.now() > deadline)
      throw new Error(`mapping never reached ${states.join('/')} (last: ${String(state)})`);
    await sleep(50);
  }
}

/** Random inserts, updates and deletes until stopped. */
function workload(stop: AbortSignal): Promise<number> {
  const items = mongo.db(DB).collection<{ _id: number; n: number; label: string }>('items');
  let next = 1_000_000;
  let ops = 0;
  return (async () => {
    while (!stop.aborted) {
      const r = Math.random();
      const id = Math.floor(Math.random() * 5_000);
      if (r < 0.4) await items.insertOne({ _id: next++, n: ops, label: 'inserted' });
      else if (r < 0.8)
        await items.updateOne({ _id: id }, { $set: { label: `updated-${ops}` }, $inc: { n: 1 } });
      else await items.deleteOne({ _id: id });
      ops++;
      await sleep(5);
    }
    return ops;
  })();
}

async function viewMatchesCollection(timeoutMs = 90_000): Promise<{ rows: number; distinct: number }> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const docs = await mongo.db(DB).collection('items').find({}).toArray();
    const expected = docs.map((d) => `${docIdString(d._id)}|${String(d.n)}|${String(d.label)}`).sort();
    const [rows] = (await clients.bigquery
      .query({ query: `SELECT _doc_id, n, label FROM \`${clients.projectId}.${DATASET}.items_view\`` })
      .catch(() => [[]])) as [Document[]];
    const actual = rows.map((r) => `${String(r._doc_id)}|${String(r.n)}|${String(r.label)}`).sort();
    if (JSON.stringify(actual) === JSON.stringify(expected)) {
      return { rows: rows.length, distinct: new Set(rows.map((r) => String(r._doc_id))).size };
    }
    if (Date.now() > deadline) {
      expect(actual.length).toBe(expected.length);
      expect(actual).toEqual(expected);
    }
    await sleep(500);
  }
}

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
    const writes = workload(stopWorkload.signal);
    const killedIn: string[] = [];
    for (let trial = 0; trial < TRIALS; trial++) {
      const { child, exited } = daemon();
      // The first trials die during the backfill, the later ones while streaming.
      const state = await waitForState(trial < 2 ? ['backfilling', 'streaming'] : ['streaming']);
      await sleep(Math.floor(Math.random() * 700));
      killedIn.push(`${state}:${String(await mappingState())}`);
      child.kill('SIGKILL');
      await exited;
    }
    expect(killedIn.slice(0, 2).some((s) => s.startsWith('backfilling'))).toBe(true);
    stopWorkload.abort();
    const ops = await writes;
    expect(ops).toBeGreaterThan(50);

    const { child, exited } = daemon();
    const { rows, distinct } = await viewMatchesCollection();
    expect(distinct).toBe(rows);

    // Graceful stop: SIGTERM flushes, checkpoints and exits 0 within the bound.
    const stoppedAt = Date.now();
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(Date.now() - stoppedAt).toBeLessThan(30_000);
  }, 400_000);
});
