import { spawn, type ChildProcess } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { type Collection, type Document, type MongoClient } from 'mongodb';
import { expect } from 'vitest';
import { peerContext } from '../../../scripts/peers/lib.js';
import { forgetPid, rememberPid, startWatchdog } from '../../../scripts/peers/process.js';
import { type BigQueryClients } from '../../../src/bigquery/client.js';
import { type WriterKind } from '../../../src/core/settings.js';
import { loadBootstrapConfig, type BootstrapConfig } from '../../../src/config/bootstrap.js';
import { V8_FLAGS } from '../../../src/observability/runtime.js';
import { docIdString } from '../../../src/transform/values.js';
import { bigQueryTestEnv, type BigQueryTestEnv } from './bigquery.js';

export const SETTINGS_COLLECTION = 'bigquery_archiver_settings';
const RUN_DIR = peerContext().runDir;
let watchdogStarted = false;

export interface DaemonProcess {
  readonly child: ChildProcess;
  /** Resolves with the exit code (null when killed by a signal). */
  readonly exited: Promise<number | null>;
  /** What it logged so far (JSON lines), when spawned with `capture`. */
  output(): string;
}

/** The environment that points the daemon at the peers of this test run (or at the emulator `bq`). */
export function daemonEnv(
  dataset: string,
  settingsDb: string,
  bq: BigQueryTestEnv = bigQueryTestEnv(),
): NodeJS.ProcessEnv {
  return {
    MONGO_CLIENT: process.env.MBA_TEST_MONGODB_URI,
    BIGQUERY_PROJECT: bq.projectId,
    BIGQUERY_DATASET: dataset,
    SETTINGS_DATABASE: settingsDb,
    SETTINGS_POLL_INTERVAL_MS: '500',
    BIGQUERY_EMULATOR_ENDPOINT: bq.apiEndpoint,
    BIGQUERY_EMULATOR_GRPC: `${bq.grpcHost}:${bq.grpcPort}`,
    BIGQUERY_EMULATOR_KIND: bq.peer,
    // The default writer, as in production: the crash and outage tests go through Storage Write
    // (archiver.test.ts, metrics.test.ts and leases.test.ts write with insertAll: both run end to end).
    BIGQUERY_WRITER: 'storage-write',
    METRICS_PORT: '0',
    LOG_LEVEL: 'warn',
  };
}

/**
 * The configuration of an archiver started in the test process (`startArchiver`), pointed at the peers of
 * this test run: the daemon's environment, with a faster settings poll and no logs.
 */
export function inProcessConfig(dataset: string, settingsDb: string, writer: WriterKind): BootstrapConfig {
  return loadBootstrapConfig({
    path: '/nonexistent/config.json',
    env: {
      ...daemonEnv(dataset, settingsDb),
      SETTINGS_POLL_INTERVAL_MS: '300',
      BIGQUERY_WRITER: writer,
      LOG_LEVEL: 'silent',
    },
  });
}

/** The daemon as its own process (`node <V8_FLAGS> --import tsx src/main.ts run`), configured by the environment. */
export function spawnDaemon(env: NodeJS.ProcessEnv, options: { capture?: boolean } = {}): DaemonProcess {
  // Its own process group, recorded for this test process's watchdog: a killed test leaves no daemon behind.
  if (!watchdogStarted) {
    startWatchdog(RUN_DIR);
    watchdogStarted = true;
  }
  const child = spawn(process.execPath, [...V8_FLAGS, '--import', 'tsx', 'src/main.ts', 'run'], {
    detached: true,
    env: { ...process.env, ...env },
    stdio: [
      'ignore',
      options.capture ? 'pipe' : process.env.MBA_DEBUG_DAEMON ? 'inherit' : 'ignore',
      'inherit',
    ],
  });
  const chunks: string[] = [];
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
    chunks.push(chunk);
    if (process.env.MBA_DEBUG_DAEMON) process.stdout.write(chunk);
  });
  const name = `daemon-${String(child.pid)}`;
  if (child.pid !== undefined) rememberPid(RUN_DIR, name, child.pid);
  const exited = new Promise<number | null>((resolve) => {
    child.once('exit', (code) => {
      forgetPid(RUN_DIR, name);
      resolve(code);
    });
  });
  return { child, exited, output: () => chunks.join('') };
}

/** What a CLI command run as its own process printed, and how it exited. */
export interface CliRun {
  readonly code: number | null;
  readonly stdout: string;
  /** Its standard error; empty when `stderr: 'inherit'` passed it through to the test's own. */
  readonly stderr: string;
}

/**
 * `mongo-bigquery-archiver <args>` as its own process (`node <V8_FLAGS> --import tsx src/main.ts <args>`),
 * configured by the environment, run to its end. Standard error is captured unless `stderr: 'inherit'`.
 */
export async function runCli(
  args: readonly string[],
  env: NodeJS.ProcessEnv,
  options: { readonly stderr?: 'pipe' | 'inherit' } = {},
): Promise<CliRun> {
  const child = spawn(process.execPath, [...V8_FLAGS, '--import', 'tsx', 'src/main.ts', ...args], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', options.stderr ?? 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
  return { code, stdout, stderr };
}

/** The mapping's `status.state`, and when it was written (`status.updatedAt`). */
export async function mappingStatus(
  mongo: MongoClient,
  settingsDb: string,
  mapping: string,
): Promise<{ state: string | undefined; updatedAt: Date | undefined }> {
  const doc = await mongo
    .db(settingsDb)
    .collection(SETTINGS_COLLECTION)
    .findOne({ _id: mapping } as Document);
  const status = doc?.status as Document | undefined;
  const state = status?.state as unknown;
  const updatedAt = status?.updatedAt as unknown;
  return {
    state: typeof state === 'string' ? state : undefined,
    updatedAt: updatedAt instanceof Date ? updatedAt : undefined,
  };
}

export async function mappingState(
  mongo: MongoClient,
  settingsDb: string,
  mapping: string,
): Promise<string | undefined> {
  return (await mappingStatus(mongo, settingsDb, mapping)).state;
}

/**
 * Waits until the mapping reports one of `states`; with `since`, a report written at or after it (so a
 * state left behind by a killed process does not count).
 */
export async function waitForState(
  mongo: MongoClient,
  settingsDb: string,
  mapping: string,
  states: readonly string[],
  timeoutMs = 60_000,
  since?: Date,
): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const { state, updatedAt } = await mappingStatus(mongo, settingsDb, mapping);
    const fresh = since === undefined || (updatedAt !== undefined && updatedAt >= since);
    if (state !== undefined && fresh && states.includes(state)) return state;
    if (Date.now() > deadline)
      throw new Error(
        `mapping ${mapping} never reached ${states.join('/')}${since ? ` after ${since.toISOString()}` : ''} ` +
          `(last: ${String(state)} at ${updatedAt?.toISOString() ?? 'never'})`,
      );
    await sleep(50);
  }
}

export interface ViewTarget {
  readonly mongo: MongoClient;
  readonly clients: BigQueryClients;
  readonly db: string;
  readonly collection: string;
  readonly dataset: string;
  readonly table: string;
  /** Columns compared besides the document id; the collection's documents must carry them. */
  readonly fields: readonly string[];
}

/**
 * Waits until `<table>_view` holds exactly the collection's documents (one row each, the compared columns
 * equal), and returns the view's row count and distinct ids so a caller can assert there is no duplicate.
 */
export async function viewMatchesCollection(
  target: ViewTarget,
  timeoutMs = 90_000,
): Promise<{ rows: number; distinct: number }> {
  const { mongo, clients, db, collection, dataset, table, fields } = target;
  const line = (id: string, row: Document): string => [id, ...fields.map((f) => String(row[f]))].join('|');
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const docs = await mongo.db(db).collection(collection).find({}).toArray();
    const expected = docs.map((d) => line(docIdString(d._id), d)).sort();
    const [rows] = (await clients.bigquery
      .query({
        query: `SELECT _doc_id, ${fields.join(', ')} FROM \`${clients.projectId}.${dataset}.${table}_view\``,
      })
      .catch(() => [[]])) as [Document[]];
    const actual = rows.map((r) => line(String(r._doc_id), r)).sort();
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

/** A document of the end-to-end tests' collections: the fields `viewMatchesCollection` compares. */
export interface Item {
  _id: number;
  n: number;
  label: string;
}

export interface WorkloadOptions {
  /** Collections written in turn, one operation each. */
  readonly collections: readonly Collection<Item>[];
  /** Updates and deletes pick ids below this (the seeded ones). */
  readonly seeded: number;
  readonly pauseMs?: number;
  /** Called after every operation (for counting per phase). */
  readonly onOperation?: () => void;
}

/**
 * Random inserts (40%), updates (40%) and deletes (20%) until `stop` aborts; resolves with the number of
 * operations. Inserted ids start at 1,000,000, above the seeded ones.
 */
export function randomWorkload(options: WorkloadOptions, stop: AbortSignal): Promise<number> {
  const { collections, seeded } = options;
  let next = 1_000_000;
  let ops = 0;
  return (async () => {
    while (!stop.aborted) {
      const items = collections[ops % collections.length];
      if (items === undefined) throw new Error('randomWorkload needs at least one collection');
      const r = Math.random();
      const id = Math.floor(Math.random() * seeded);
      if (r < 0.4) await items.insertOne({ _id: next++, n: ops, label: 'inserted' });
      else if (r < 0.8)
        await items.updateOne({ _id: id }, { $set: { label: `updated-${ops}` }, $inc: { n: 1 } });
      else await items.deleteOne({ _id: id });
      ops++;
      options.onOperation?.();
      await sleep(options.pauseMs ?? 5);
    }
    return ops;
  })();
}
