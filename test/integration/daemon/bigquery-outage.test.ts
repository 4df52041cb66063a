import { randomBytes } from 'node:crypto';
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { EJSON } from 'bson';
import { MongoClient, type Document } from 'mongodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bqemulator, startBqemulator, type RunningBqemulator } from '../../../scripts/peers/bqemulator.js';
import { installPeers, peerContext } from '../../../scripts/peers/lib.js';
import { freePortOutsideEphemeralRange, startWatchdog, tailFile } from '../../../scripts/peers/process.js';
import { type BigQueryClients } from '../../../src/bigquery/client.js';
import { bigQueryTestEnv, type BigQueryTestEnv } from '../support/bigquery.js';
import { emulatorClients } from '../support/bigquery-clients.js';
import {
  daemonEnv,
  randomWorkload,
  type Item,
  mappingState,
  SETTINGS_COLLECTION,
  spawnDaemon,
  viewMatchesCollection,
  waitForState,
  type DaemonProcess,
} from '../support/daemon.js';

// The BigQuery emulator is stopped for 30 seconds and started again while the daemon runs under a
// workload. The test peer keeps its data in memory and serves every test file, so this test starts its own
// bqemulator, file-backed (`--persistent --data-dir`), and restarts it on the same ports.

const suffix = randomBytes(3).toString('hex');
const DATASET = `outage_${suffix}`;
const SETTINGS_DB = `archiver_outage_${suffix}`;
const DB = `outagedb_${suffix}`;
const SEED = 3_000;
const OUTAGE_MS = 30_000;
const ctx = peerContext();
const dataDir = join(ctx.runDir, 'data', `bqemulator-outage-${suffix}`);
let mongo: MongoClient;
let emulator: RunningBqemulator | undefined;
let bq: BigQueryTestEnv;
let clients: BigQueryClients | undefined;
let daemon: DaemonProcess | undefined;

beforeAll(async () => {
  mongo = new MongoClient(process.env.MBA_TEST_MONGODB_URI ?? '');
  await mongo.connect();
  // Idempotent; installs bqemulator when the run's BigQuery peer is another one (or none).
  await installPeers([bqemulator], ctx);
  // Kills this test's emulator should the test process die without running afterAll.
  startWatchdog(ctx.runDir);
  mkdirSync(dataDir, { recursive: true });
  // Outside the ephemeral range: while the emulator is down, no outgoing connection can take its ports.
  emulator = await startBqemulator({
    cacheDir: ctx.cacheDir,
    runDir: ctx.runDir,
    name: `bqemulator-outage-${suffix}`,
    restPort: await freePortOutsideEphemeralRange(),
    grpcPort: await freePortOutsideEphemeralRange(),
    dataDir,
  });
  bq = bigQueryTestEnv(emulator.env);
  clients = await emulatorClients(bq);
});

afterAll(async () => {
  if (daemon && alive(daemon)) {
    daemon.child.kill('SIGKILL');
    await daemon.exited;
  }
  await clients?.close();
  await emulator?.stop();
  await mongo.close();
  rmSync(dataDir, { recursive: true, force: true });
});

/** The mapping's checkpoint as the daemon saved it (resume token and cluster time), as comparable text. */
async function checkpoint(): Promise<string> {
  const doc = await mongo
    .db(SETTINGS_DB)
    .collection(`${SETTINGS_COLLECTION}_checkpoints`)
    .findOne({ _id: 'items' } as Document);
  return EJSON.stringify({ position: doc?.position as unknown, backfill: doc?.backfill as unknown });
}

async function historyEventIds(): Promise<Set<string>> {
  if (!clients) throw new Error('no BigQuery clients');
  const [rows] = await clients.bigquery.query({
    query: `SELECT _event_id FROM \`${bq.projectId}.${DATASET}.items\``,
  });
  return new Set((rows as { _event_id: string }[]).map((r) => r._event_id));
}

function alive(d: DaemonProcess): boolean {
  return d.child.exitCode === null && d.child.signalCode === null;
}

describe('BigQuery outage', () => {
  it('loses no change and duplicates nothing when the emulator is stopped for 30 s and started again', async () => {
    if (!emulator || !clients) throw new Error('the emulator did not start');
    const items = mongo.db(DB).collection<Item>('items');
    await items.insertMany(Array.from({ length: SEED }, (_, i) => ({ _id: i, n: i, label: 'seed' })));
    await mongo.db(SETTINGS_DB).collection<{ _id: string } & Document>(SETTINGS_COLLECTION).insertOne({
      _id: 'items',
      mongo_database: DB,
      mongo_collection: 'items',
      bigquery_table: 'items',
      backfill_full_collection: true,
    });
    daemon = spawnDaemon(daemonEnv(DATASET, SETTINGS_DB, bq));
    const running = daemon;
    let phase = 'before';
    const stopWorkload = new AbortController();
    const perPhase = new Map<string, number>();
    const writes = randomWorkload(
      {
        collections: [items],
        seeded: SEED,
        pauseMs: 10,
        onOperation: () => perPhase.set(phase, (perPhase.get(phase) ?? 0) + 1),
      },
      stopWorkload.signal,
    );
    try {
      await waitForState(mongo, SETTINGS_DB, 'items', ['streaming'], 90_000);
      await sleep(3_000);
      // Written before the outage: must still be there after the restart.
      const before = await historyEventIds();
      expect(before.size).toBeGreaterThanOrEqual(SEED);

      phase = 'outage';
      const outageStarted = Date.now();
      await emulator.stop();
      // A checkpoint write already under way when the emulator went down may still land; none after it.
      await sleep(1_000);
      const checkpointInOutage = await checkpoint();
      const states = new Set<string>();
      while (Date.now() - outageStarted < OUTAGE_MS) {
        expect(alive(running)).toBe(true);
        states.add(String(await mappingState(mongo, SETTINGS_DB, 'items')));
        expect(await checkpoint()).toBe(checkpointInOutage);
        await sleep(250);
      }
      expect(states.has('failed')).toBe(false);
      expect([...states].every((s) => ['streaming', 'retrying', 'starting'].includes(s))).toBe(true);

      phase = 'after';
      emulator = await startBqemulator({
        cacheDir: ctx.cacheDir,
        runDir: ctx.runDir,
        name: `bqemulator-outage-${suffix}-restarted`,
        restPort: emulator.restPort,
        grpcPort: emulator.grpcPort,
        dataDir,
      });
      // The emulator's storage survived: dataset, history table (every row written before), view.
      const [datasets] = await clients.bigquery.getDatasets();
      expect(datasets.map((d) => d.id)).toContain(DATASET);
      const afterRestart = await historyEventIds();
      expect([...before].filter((id) => !afterRestart.has(id))).toEqual([]);
      await clients.bigquery.query({
        query: `SELECT COUNT(*) FROM \`${bq.projectId}.${DATASET}.items_view\``,
      });

      await sleep(5_000);
      stopWorkload.abort();
      await writes;
      expect(perPhase.get('before') ?? 0).toBeGreaterThan(50);
      expect(perPhase.get('outage') ?? 0).toBeGreaterThan(100);
      expect(perPhase.get('after') ?? 0).toBeGreaterThan(50);

      const { rows, distinct } = await viewMatchesCollection(
        {
          mongo,
          clients,
          db: DB,
          collection: 'items',
          dataset: DATASET,
          table: 'items',
          fields: ['n', 'label'],
        },
        90_000,
      );
      expect(distinct).toBe(rows);
      expect(await checkpoint()).not.toBe(checkpointInOutage);
      expect(alive(running)).toBe(true);

      const stoppedAt = Date.now();
      running.child.kill('SIGTERM');
      expect(await running.exited).toBe(0);
      expect(Date.now() - stoppedAt).toBeLessThan(30_000);
    } catch (error) {
      stopWorkload.abort();
      await writes.catch(() => undefined);
      // The peer runner prints the logs of the peers it started, not this one.
      process.stderr.write(`----- ${emulator.logFile} -----\n${tailFile(emulator.logFile, 40)}\n`);
      throw error;
    }
  }, 240_000);
});
