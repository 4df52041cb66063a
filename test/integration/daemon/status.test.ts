import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { MongoClient, type Document } from 'mongodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { showStatus, type StatusReport } from '../../../src/cli/status.js';
import { type MappingOverview } from '../../../src/cli/status-view.js';
import { loadBootstrapConfig, type BootstrapConfig } from '../../../src/config/bootstrap.js';
import { V8_FLAGS } from '../../../src/observability/runtime.js';
import { daemonEnv, SETTINGS_COLLECTION, spawnDaemon, type DaemonProcess } from '../support/daemon.js';

const suffix = randomBytes(3).toString('hex');
const DATASET = `status_${suffix}`;
const SETTINGS_DB = `archiver_status_${suffix}`;
const DB = `statusdb_${suffix}`;
/** Enough documents, copied as one range, that the copy runs for a few seconds on the peers. */
const SEEDED = 10_000;

let mongo: MongoClient;
let daemon: DaemonProcess | undefined;

beforeAll(async () => {
  mongo = new MongoClient(process.env.MBA_TEST_MONGODB_URI ?? '');
  await mongo.connect();
});

afterAll(async () => {
  daemon?.child.kill('SIGKILL');
  await mongo.close();
});

const env = (): NodeJS.ProcessEnv => daemonEnv(DATASET, SETTINGS_DB);

function config(): BootstrapConfig {
  return loadBootstrapConfig({ path: '/nonexistent/config.json', env: env() });
}

/** `status --json` through the command's own code, in this process (fast enough to poll). */
async function statusJson(): Promise<StatusReport> {
  let text = '';
  await showStatus(config(), { json: true }, { write: (chunk) => (text += chunk) });
  return JSON.parse(text) as StatusReport;
}

/** `mongo-bigquery-archiver status <args>` as its own process: the command line as an operator types it. */
async function statusCli(args: readonly string[]): Promise<{ code: number | null; stdout: string }> {
  const child = spawn(process.execPath, [...V8_FLAGS, '--import', 'tsx', 'src/main.ts', 'status', ...args], {
    env: { ...process.env, ...env() },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let stdout = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
  return { code, stdout };
}

async function until(
  what: string,
  done: (mapping: MappingOverview | undefined) => boolean,
  timeoutMs = 90_000,
): Promise<MappingOverview> {
  const deadline = Date.now() + timeoutMs;
  let last: MappingOverview | undefined;
  for (;;) {
    last = (await statusJson()).mappings.find((m) => m.id === 'items');
    if (last && done(last)) return last;
    if (Date.now() > deadline) throw new Error(`status never showed ${what}; last: ${JSON.stringify(last)}`);
    await sleep(100);
  }
}

describe('status of a running daemon', () => {
  it('issue 13 must-show 1: status --json carries the backfill progress with its rate and ETA while copying, then a numeric lag, the holder and no failure', async () => {
    const items = mongo.db(DB).collection<{ _id: number; n: number }>('items');
    for (let from = 0; from < SEEDED; from += 5_000) {
      await items.insertMany(Array.from({ length: 5_000 }, (_, i) => ({ _id: from + i, n: from + i })));
    }
    await mongo.db(SETTINGS_DB).collection<{ _id: string } & Document>(SETTINGS_COLLECTION).insertOne({
      _id: 'items',
      mongo_database: DB,
      mongo_collection: 'items',
      bigquery_table: 'items',
      backfill_full_collection: true,
      backfill_parallelism: 1,
    });
    daemon = spawnDaemon(env());

    const copying = await until(
      'a backfill with a rate and an ETA',
      (m) => m?.state === 'backfilling' && m.backfill?.etaSeconds != null,
    );
    const backfill = copying.backfill;
    expect(backfill?.estimated).toBe(SEEDED);
    expect(backfill?.copied).toBeGreaterThan(0);
    expect(backfill?.copied).toBeLessThan(SEEDED);
    expect(backfill?.percent).toBeCloseTo((100 * (backfill?.copied ?? 0)) / SEEDED, 5);
    expect(backfill?.docsPerSecond).toBeGreaterThan(0);
    expect(backfill?.etaSeconds).toBeGreaterThan(0);
    expect(copying.holder).toEqual(expect.any(String));

    await until('streaming', (m) => m?.state === 'streaming');
    // A change checkpoints a position once BigQuery acknowledged its row: the lag comes from its cluster time.
    const writtenAt = Date.now();
    await items.insertOne({ _id: SEEDED, n: SEEDED });
    const streaming = await until(
      'a lag',
      (m) => m?.lagSeconds != null && m.position !== null && Date.parse(m.position) >= writtenAt - 2_000,
    );
    expect(streaming.backfill).toBeNull();
    expect(streaming.lastFailure).toBeNull();

    // The command line: one JSON document on stdout, exit 0, the lag a number of seconds.
    const json = await statusCli(['--json']);
    expect(json.code).toBe(0);
    const report = JSON.parse(json.stdout) as StatusReport;
    expect(report.settings).toBe(`${SETTINGS_DB}.${SETTINGS_COLLECTION}`);
    const mapping = report.mappings.find((m) => m.id === 'items');
    expect(mapping).toMatchObject({ state: 'streaming', backfill: null, lastFailure: null });
    expect(mapping?.lagSeconds).toEqual(expect.any(Number));
    expect(mapping?.lagSeconds).toBeGreaterThanOrEqual(0);
    expect(mapping?.lagSeconds).toBeLessThan(120);
    expect(mapping?.holder).toEqual(expect.any(String));
    // And the table: a header, then the mapping's row with its lag in seconds.
    const table = await statusCli([]);
    expect(table.code).toBe(0);
    const [header, row] = table.stdout.trimEnd().split('\n');
    expect(header).toMatch(/^MAPPING +STATE +LAG +BACKFILL/);
    expect(row).toMatch(/^items +streaming +\d+s +- /);

    // --watch: a report every interval until stopped (Ctrl-C aborts the same signal), one JSON line each.
    const stop = new AbortController();
    const lines: string[] = [];
    const startedAt = Date.now();
    const code = await showStatus(
      config(),
      { json: true, watch: '0.5' },
      {
        write: (chunk) => {
          lines.push(chunk);
          if (lines.length === 3) stop.abort();
        },
      },
      stop.signal,
    );
    expect(code).toBe(0);
    expect(lines).toHaveLength(3);
    expect(Date.now() - startedAt).toBeGreaterThanOrEqual(1_000);
    const times = lines.map((line) => Date.parse((JSON.parse(line) as StatusReport).generatedAt));
    expect((times[2] ?? 0) - (times[0] ?? 0)).toBeGreaterThanOrEqual(1_000);
  }, 240_000);
});
