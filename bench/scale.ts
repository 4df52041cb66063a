// Scale benchmark (issue 12): one daemon (or two) archiving many collections, against the test peers behind
// the real-server proxy (test/support/real-server-proxy.ts), which holds an idle change-stream getMore for its
// maxTimeMS as a real MongoDB server does, so that every stream costs a busy connection as it would there.
//
// For each N in MBA_BENCH_SCALE_N (default 10,100,300), with fresh peers (a fresh mongo-java-server: every
// getMore of its change streams rescans its whole oplog):
//
// 1. base: the daemon (its own process: `node --import tsx src/main.ts run`, configured by the environment,
//    MONGO_CLIENT pointing at the proxy) with no mapping; its VmRSS after 15 s (`base_rss_mb`);
// 2. N collections of one database with a few documents each and N settings documents (one mapping each,
//    `backfill_full_collection: true`); the daemon started again; `all_streaming_s` is the time until every
//    settings document's `status.state` is `streaming` (given up after MBA_BENCH_SCALE_TIMEOUT_S, default
//    900; `streaming` says how many were);
// 3. idle: after 15 s, the daemon's VmRSS (`idle_rss_mb`) and the proxy's open connections
//    (`mongo_connections`); then over 20 s the commands that write on the settings database (update, insert,
//    delete, findAndModify: `bookkeeping_writes_per_s`), and the lease round: `lease_round_ms` from the
//    daemon's mba_lease_round_seconds when it has that metric (null otherwise), `lease_round_ms_proxy` the
//    longest complete round of lease renewals the proxy saw (the updates of the leases collection, a round
//    ending where they pause for half a lease tick);
// 4. e2e: 20 inserts into random collections, one at a time, each timed until its row is in the table's
//    `_view` (polled every 100 ms): `e2e_p50_ms`, `e2e_p95_ms`; a probe not there after
//    MBA_BENCH_SCALE_PROBE_TIMEOUT_S (default 30) counts in `e2e_lost`.
//
// With MBA_BENCH_SCALE_DAEMONS=2 (N: MBA_BENCH_SCALE_N, else 300) two daemons share the peers: the split of
// the leases once settled, the takeovers (lease token increments) over a settled 60 s window, then one of them
// is killed with SIGKILL and the time until the other holds every lease is measured; finally every view must
// equal its collection (ids and `n`), with changes made before the kill and after the takeover.
//
// Environment: MBA_BENCH_SCALE_N, MBA_BENCH_SCALE_DAEMONS, MBA_BENCH_SCALE_TIMEOUT_S, MBA_BENCH_SCALE_WRITER
// (the daemon's BIGQUERY_WRITER, default its own default), MBA_BENCH_SCALE_REPOLL_MS (the proxy's re-asking
// pace, default 50), WORKER_THREADS and CHANGE_STREAM_SCOPE (passed to the daemon when set), and the peers'
// own (MBA_PEERS_RUN_DIR, MBA_MONGODB_PEER, MBA_BIGQUERY_PEER). Each daemon's log (level warn) goes to a
// file named on stderr.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, mkdtempSync, openSync, readFileSync } from 'node:fs';
import { hostname, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { MongoClient, type Document } from 'mongodb';
import { peerContext, startPeers, type RunningPeers } from '../scripts/peers/lib.js';
import { forgetPid, freePort, rememberPid, startWatchdog, tailFile } from '../scripts/peers/process.js';
import { selectedPeers } from '../scripts/peers/registry.js';
import { createBigQueryClients, type BigQueryClients } from '../src/bigquery/client.js';
import { DEFAULT_LEASE_TTL_MS, DEFAULT_SETTINGS_COLLECTION } from '../src/core/settings.js';
import { V8_FLAGS } from '../src/observability/runtime.js';
import { docIdString } from '../src/transform/values.js';
import { bigQueryTestEnv, type BigQueryTestEnv } from '../test/integration/support/bigquery.js';
import {
  DEFAULT_REPOLL_MS,
  loopbackTarget,
  RealServerProxy,
  type ProxiedCommand,
} from '../test/support/real-server-proxy.js';
import { histogramTotals, round3, seriesTotal } from './e2e/helpers.js';

const DAEMONS = Number(process.env.MBA_BENCH_SCALE_DAEMONS ?? 1);
const SIZES = (process.env.MBA_BENCH_SCALE_N ?? (DAEMONS === 2 ? '300' : '10,100,300'))
  .split(',')
  .map((n) => Number(n.trim()));
const STREAMING_TIMEOUT_MS = Number(process.env.MBA_BENCH_SCALE_TIMEOUT_S ?? 900) * 1000;
const REPOLL_MS = Number(process.env.MBA_BENCH_SCALE_REPOLL_MS ?? DEFAULT_REPOLL_MS);
const DOCS_PER_COLLECTION = 5;
const IDLE_MS = 15_000;
const WRITE_WINDOW_MS = 20_000;
const SETTLED_WINDOW_MS = 60_000;
const PROBES = 20;
const PROBE_TIMEOUT_MS = Number(process.env.MBA_BENCH_SCALE_PROBE_TIMEOUT_S ?? 30) * 1000;
const SETTINGS_COLLECTION = DEFAULT_SETTINGS_COLLECTION;
const LEASES_COLLECTION = `${SETTINGS_COLLECTION}_leases`;
/** The commands that write; counted on the settings database they are the daemon's bookkeeping. */
const WRITE_COMMANDS = ['update', 'insert', 'delete', 'findAndModify'] as const;
/** How long two daemons get to settle their split of the leases before it is measured anyway. */
const SETTLE_TIMEOUT_MS = 120_000;
const RUN_DIR = peerContext().runDir;
const LOG_DIR = mkdtempSync(join(tmpdir(), 'mba-bench-scale-'));

const TARGETS = {
  all_streaming: 'every mapping streaming',
  lease_round_ms: '< 1000',
  bookkeeping_writes_per_s: 'N=300 within 2x of N=10',
  idle_rss_mb: '< 1 MB per mapping above base_rss_mb',
  takeovers: '0 in a settled 60 s window (2 daemons)',
  failover_s: `< ${(2 * DEFAULT_LEASE_TTL_MS) / 1000} (two lease TTLs, 2 daemons)`,
} as const;

/** Names the bench makes up for SQL (datasets, tables): checked, so nothing else reaches a query. */
function sqlName(name: string): string {
  if (!/^[a-z][a-z0-9_]{0,63}$/.test(name)) throw new Error(`not a plain SQL name: ${name}`);
  return name;
}

const collectionName = (i: number) => sqlName(`c${String(i).padStart(4, '0')}`);

/** The resident set of one process (not its children), in MB. */
function rssMb(pid: number): number {
  const match = /^VmRSS:\s+(\d+)\s+kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!match) throw new Error(`no VmRSS for process ${pid}`);
  return Number(match[1]) / 1024;
}

function quantile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? Number.NaN;
}

/** A command on the leases collection, as the proxy saw it. */
interface LeaseCommand {
  readonly name: string;
  readonly at: number;
}

/**
 * The longest round of lease renewals among `commands` (those on the leases collection, in order) up to
 * `end`: a round begins with the heartbeat's `delete` (of dead instances' records; nothing else deletes
 * there) and lasts until the last renewal (`update`) before the next heartbeat. A round still going at `end`
 * counts for the time it has taken so far, and then `atLeast` says the round took longer. Undefined when no
 * heartbeat was seen.
 */
export function longestRound(
  commands: readonly LeaseCommand[],
  end: number,
): { readonly ms: number; readonly atLeast: boolean } | undefined {
  let longest: { ms: number; atLeast: boolean } | undefined;
  let start: number | undefined;
  let last = 0;
  const close = (ms: number, atLeast: boolean) => {
    if (longest === undefined || ms > longest.ms) longest = { ms, atLeast };
  };
  for (const c of commands) {
    if (c.name === 'delete') {
      if (start !== undefined) close(last - start, false);
      start = c.at;
      last = c.at;
    } else if (c.name === 'update' && start !== undefined) last = c.at;
  }
  if (start !== undefined) close(end - start, true);
  return longest;
}

interface Daemon {
  readonly child: ChildProcess;
  readonly pid: number;
  readonly metricsPort: number;
  readonly log: string;
  readonly exited: Promise<number | null>;
}

let watchdogStarted = false;

/** The daemon as its own process, in its own process group (killed by the watchdog if this process dies). */
async function spawnDaemon(env: Record<string, string>, label: string): Promise<Daemon> {
  if (!watchdogStarted) {
    startWatchdog(RUN_DIR);
    watchdogStarted = true;
  }
  const metricsPort = await freePort();
  const log = join(LOG_DIR, `${label}.log`);
  const fd = openSync(log, 'a');
  const child = spawn(process.execPath, [...V8_FLAGS, '--import', 'tsx', 'src/main.ts', 'run'], {
    detached: true,
    env: { ...process.env, ...env, METRICS_PORT: String(metricsPort), LOG_LEVEL: 'warn' },
    stdio: ['ignore', fd, fd],
  });
  closeSync(fd);
  const pid = child.pid;
  if (pid === undefined) throw new Error('the daemon did not start');
  const name = `bench-scale-${pid}`;
  rememberPid(RUN_DIR, name, pid);
  const exited = new Promise<number | null>((resolve) => {
    child.once('exit', (code) => {
      forgetPid(RUN_DIR, name);
      resolve(code);
    });
  });
  process.stderr.write(`[scale] daemon ${label}: pid ${pid}, metrics :${metricsPort}, log ${log}\n`);
  return { child, pid, metricsPort, log, exited };
}

async function stopDaemon(daemon: Daemon, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (daemon.child.exitCode !== null || daemon.child.signalCode !== null) return;
  daemon.child.kill(signal);
  const killer = setTimeout(() => daemon.child.kill('SIGKILL'), 60_000);
  await daemon.exited;
  clearTimeout(killer);
}

/** The daemon's /metrics text, or undefined while it does not answer. */
async function metricsText(daemon: Daemon): Promise<string | undefined> {
  try {
    const response = await fetch(`http://127.0.0.1:${daemon.metricsPort}/metrics`);
    return response.ok ? await response.text() : undefined;
  } catch {
    return undefined;
  }
}

async function untilMetrics(daemon: Daemon): Promise<void> {
  const deadline = Date.now() + 120_000;
  while ((await metricsText(daemon)) === undefined) {
    if (Date.now() > deadline || daemon.child.exitCode !== null) {
      throw new Error(`daemon ${daemon.pid} never served /metrics:\n${tailFile(daemon.log, 20)}`);
    }
    await sleep(200);
  }
}

/** mba_lease_round_seconds in ms: a histogram's mean between two readings, or a gauge's value; else null. */
function leaseRoundMs(before: string | undefined, after: string | undefined): number | null {
  const name = 'mba_lease_round_seconds';
  if (after === undefined || !new RegExp(`^${name}(_count|_sum)?[ {]`, 'm').test(after)) return null;
  const to = histogramTotals(after, name);
  if (to.count > 0) {
    const from = before === undefined ? { sum: 0, count: 0 } : histogramTotals(before, name);
    const rounds = to.count - from.count;
    return round3(((rounds > 0 ? to.sum - from.sum : to.sum) / (rounds > 0 ? rounds : to.count)) * 1000);
  }
  return round3(seriesTotal(after, name) * 1000);
}

interface Scenario {
  readonly n: number;
  readonly peers: RunningPeers;
  readonly bq: BigQueryTestEnv;
  readonly mongo: MongoClient;
  readonly clients: BigQueryClients;
  readonly proxy: RealServerProxy;
  readonly sourceDb: string;
  readonly settingsDb: string;
  readonly dataset: string;
  /** Commands the proxy has seen on the leases collection (renewals, heartbeats). */
  readonly leaseCommands: LeaseCommand[];
}

function daemonEnv(s: Scenario, settingsDb: string): Record<string, string> {
  const pass = (key: string): Record<string, string> => {
    const value = process.env[key];
    return value === undefined ? {} : { [key]: value };
  };
  return {
    MONGO_CLIENT: s.proxy.uri(),
    BIGQUERY_PROJECT: s.bq.projectId,
    BIGQUERY_DATASET: s.dataset,
    SETTINGS_DATABASE: settingsDb,
    BIGQUERY_EMULATOR_ENDPOINT: s.bq.apiEndpoint,
    BIGQUERY_EMULATOR_GRPC: `${s.bq.grpcHost}:${s.bq.grpcPort}`,
    BIGQUERY_EMULATOR_KIND: s.bq.peer,
    ...(process.env.MBA_BENCH_SCALE_WRITER !== undefined && {
      BIGQUERY_WRITER: process.env.MBA_BENCH_SCALE_WRITER,
    }),
    ...pass('WORKER_THREADS'),
    ...pass('CHANGE_STREAM_SCOPE'),
  };
}

/** VmRSS of the daemon with no mapping after IDLE_MS. */
async function baseRss(s: Scenario): Promise<number> {
  const daemon = await spawnDaemon(daemonEnv(s, sqlName(`${s.settingsDb}_empty`)), `n${s.n}-base`);
  try {
    await untilMetrics(daemon);
    await sleep(IDLE_MS);
    return rssMb(daemon.pid);
  } finally {
    await stopDaemon(daemon);
  }
}

/** N collections of DOCS_PER_COLLECTION documents `{_id, n: 0}` and one settings document each. */
async function seed(s: Scenario): Promise<void> {
  const source = s.mongo.db(s.sourceDb);
  for (let i = 0; i < s.n; i++) {
    await source
      .collection<{ _id: number; n: number }>(collectionName(i))
      .insertMany(Array.from({ length: DOCS_PER_COLLECTION }, (_, k) => ({ _id: k, n: 0 })));
  }
  await s.mongo
    .db(s.settingsDb)
    .collection(SETTINGS_COLLECTION)
    .insertMany(
      Array.from({ length: s.n }, (_, i) => ({
        _id: collectionName(i),
        mongo_database: s.sourceDb,
        mongo_collection: collectionName(i),
        bigquery_table: collectionName(i),
        backfill_full_collection: true,
      })) as Document[],
    );
}

async function streamingCount(s: Scenario): Promise<number> {
  return s.mongo
    .db(s.settingsDb)
    .collection(SETTINGS_COLLECTION)
    .countDocuments({ 'status.state': 'streaming' });
}

/**
 * Seconds from `started` until all N mappings stream, or undefined when the bound ran out first. A daemon that
 * exits meanwhile (a configuration error, a crash) ends the run at once, with its log's end.
 */
async function untilAllStreaming(
  s: Scenario,
  started: number,
  daemons: readonly Daemon[],
): Promise<number | undefined> {
  let lastReport = started;
  for (;;) {
    const gone = daemons.find((d) => d.child.exitCode !== null || d.child.signalCode !== null);
    if (gone) throw new Error(`daemon pid ${gone.pid} exited before all streamed: ${tailFile(gone.log, 20)}`);
    const streaming = await streamingCount(s);
    if (streaming >= s.n) return (performance.now() - started) / 1000;
    if (performance.now() - started > STREAMING_TIMEOUT_MS) return undefined;
    if (performance.now() - lastReport > 30_000) {
      lastReport = performance.now();
      process.stderr.write(
        `[scale] N=${s.n}: ${streaming} streaming after ${Math.round((lastReport - started) / 1000)} s\n`,
      );
    }
    await sleep(500);
  }
}

/** Milliseconds from an insert into a random collection until its row is in the table's view. */
async function probe(s: Scenario, i: number): Promise<number | undefined> {
  const table = collectionName(Math.floor(Math.random() * s.n));
  const id = 1_000_000 + i;
  const started = performance.now();
  await s.mongo
    .db(s.sourceDb)
    .collection(table)
    .insertOne({ _id: id, n: 1 } as Document);
  const query =
    `SELECT COUNT(*) AS c FROM \`${s.clients.projectId}.${sqlName(s.dataset)}.${table}_view\` ` +
    `WHERE _doc_id = @id`;
  for (;;) {
    const [rows] = (await s.clients.bigquery
      .query({ query, params: { id: docIdString(id) } })
      .catch(() => [[]])) as [Document[]];
    if (Number(rows[0]?.c ?? 0) > 0) return performance.now() - started;
    if (performance.now() - started > PROBE_TIMEOUT_MS) return undefined;
    await sleep(100);
  }
}

async function probes(s: Scenario): Promise<{ p50: number; p95: number; lost: number }> {
  const times: number[] = [];
  let lost = 0;
  for (let i = 0; i < PROBES; i++) {
    const ms = await probe(s, i);
    if (ms === undefined) lost++;
    else times.push(ms);
  }
  times.sort((a, b) => a - b);
  return { p50: round3(quantile(times, 0.5)), p95: round3(quantile(times, 0.95)), lost };
}

function line(fields: Record<string, unknown>): void {
  console.log(JSON.stringify({ bench: 'scale', ...fields, load_avg_1m: round3(loadavg()[0] ?? 0) }));
}

/** One daemon: startup to streaming, idle cost, bookkeeping writes, lease round, end-to-end latency. */
async function oneDaemon(s: Scenario): Promise<void> {
  const base = await baseRss(s);
  await seed(s);
  const started = performance.now();
  const daemon = await spawnDaemon(daemonEnv(s, s.settingsDb), `n${s.n}`);
  try {
    const allStreaming = await untilAllStreaming(s, started, [daemon]);
    const firstLeaseCommand = s.leaseCommands.length;
    const metricsBefore = await metricsText(daemon);
    await sleep(IDLE_MS);
    const idleRss = rssMb(daemon.pid);
    const connections = s.proxy.openConnections;
    const writesBefore = s.proxy.count(WRITE_COMMANDS, s.settingsDb);
    const windowStarted = performance.now();
    await sleep(WRITE_WINDOW_MS);
    const writes = s.proxy.count(WRITE_COMMANDS, s.settingsDb) - writesBefore;
    const writesPerS = writes / ((performance.now() - windowStarted) / 1000);
    const leaseRound = leaseRoundMs(metricsBefore, await metricsText(daemon));
    const proxyRound = longestRound(s.leaseCommands.slice(firstLeaseCommand), performance.now());
    const e2e = await probes(s);
    const streaming = await streamingCount(s);
    const result = {
      mappings: s.n,
      daemons: 1,
      streaming,
      all_streaming_s: allStreaming === undefined ? null : round3(allStreaming),
      idle_rss_mb: round3(idleRss),
      base_rss_mb: round3(base),
      rss_per_mapping_mb: round3((idleRss - base) / s.n),
      mongo_connections: connections,
      mongo_connections_peak: s.proxy.peakConnections,
      lease_round_ms: leaseRound,
      lease_round_ms_proxy: proxyRound === undefined ? null : round3(proxyRound.ms),
      lease_round_unfinished: proxyRound?.atLeast ?? false,
      bookkeeping_writes_per_s: round3(writesPerS),
      e2e_p50_ms: e2e.p50,
      e2e_p95_ms: e2e.p95,
      e2e_lost: e2e.lost,
      targets: TARGETS,
    };
    line(result);
    console.log(
      `N=${s.n}: ${streaming}/${s.n} streaming` +
        (allStreaming === undefined
          ? ` (not all within ${STREAMING_TIMEOUT_MS / 1000} s)`
          : `, all after ${round3(allStreaming)} s`) +
        `; idle RSS ${round3(idleRss)} MB (base ${round3(base)} MB, ` +
        `${round3(((idleRss - base) / s.n) * 1024)} kB per mapping); ${connections} MongoDB connections ` +
        `(peak ${s.proxy.peakConnections}); lease round ${leaseRound === null ? 'n/a (no mba_lease_round_seconds)' : `${leaseRound} ms`}, ` +
        `${proxyRound === undefined ? 'n/a' : `${proxyRound.atLeast ? 'at least ' : ''}${Math.round(proxyRound.ms)} ms`} ` +
        `seen at the proxy; ` +
        `${round3(writesPerS)} bookkeeping writes/s; e2e p50 ${e2e.p50} ms, p95 ${e2e.p95} ms` +
        (e2e.lost > 0 ? ` (${e2e.lost} probes never arrived)` : ''),
    );
  } finally {
    await stopDaemon(daemon);
  }
}

interface LeaseDoc {
  readonly _id: string;
  readonly owner: string | null;
  readonly token: number;
  readonly expiresAt: Date;
}

async function mappingLeases(s: Scenario): Promise<LeaseDoc[]> {
  return (await s.mongo
    .db(s.settingsDb)
    .collection(LEASES_COLLECTION)
    .find({ kind: 'mapping' })
    .toArray()) as unknown as LeaseDoc[];
}

/** Leases held by each daemon (by pid, from the owner's `host/pid/random`); with `live`, unexpired ones only. */
function split(leases: readonly LeaseDoc[], daemons: readonly Daemon[], live = false): number[] {
  const now = Date.now();
  return daemons.map(
    (d) =>
      leases.filter(
        (l) => l.owner?.startsWith(`${hostname()}/${d.pid}/`) && (!live || l.expiresAt.getTime() > now),
      ).length,
  );
}

/**
 * Waits until every lease is owned and the split has not changed for 10 s (at most SETTLE_TIMEOUT_MS); the
 * split then, the leases not expired among them, and whether it did settle.
 */
async function settledSplit(
  s: Scenario,
  daemons: readonly Daemon[],
): Promise<{ split: number[]; live: number; settled: boolean }> {
  let last = '';
  let since = performance.now();
  const deadline = performance.now() + SETTLE_TIMEOUT_MS;
  for (;;) {
    const leases = await mappingLeases(s);
    const now = split(leases, daemons);
    const live = split(leases, daemons, true).reduce((a, b) => a + b, 0);
    const key = now.join(',');
    if (key !== last) {
      last = key;
      since = performance.now();
    } else if (now.reduce((a, b) => a + b, 0) === s.n && performance.now() - since > 10_000) {
      return { split: now, live, settled: true };
    }
    if (performance.now() > deadline) return { split: now, live, settled: false };
    await sleep(500);
  }
}

/** Waits until every view holds exactly its collection's ids and `n`; how many do. */
async function viewsEqual(s: Scenario, timeoutMs: number): Promise<number> {
  const pending = new Set(Array.from({ length: s.n }, (_, i) => collectionName(i)));
  const deadline = performance.now() + timeoutMs;
  while (pending.size > 0 && performance.now() < deadline) {
    for (const table of [...pending]) {
      const docs = await s.mongo.db(s.sourceDb).collection(table).find({}).toArray();
      const expected = docs.map((d) => `${docIdString(d._id)}|${String(d.n)}`).sort();
      const [rows] = (await s.clients.bigquery
        .query({
          query: `SELECT _doc_id, n FROM \`${s.clients.projectId}.${sqlName(s.dataset)}.${table}_view\``,
        })
        .catch(() => [[]])) as [Document[]];
      const actual = rows.map((r) => `${String(r._doc_id)}|${String(r.n)}`).sort();
      if (JSON.stringify(actual) === JSON.stringify(expected)) pending.delete(table);
    }
    if (pending.size > 0) await sleep(1_000);
  }
  return s.n - pending.size;
}

/** Updates `n` of one document in each of `count` random collections (and inserts one more). */
async function touch(s: Scenario, count: number, salt: number): Promise<void> {
  for (let k = 0; k < count; k++) {
    const table = s.mongo.db(s.sourceDb).collection(collectionName(Math.floor(Math.random() * s.n)));
    await table.updateOne({ _id: k % DOCS_PER_COLLECTION } as Document, { $inc: { n: 1 } });
    await table.insertOne({ _id: 2_000_000 + salt * 10_000 + k, n: salt } as Document);
  }
}

/** Two daemons: lease split, takeovers while settled, failover after a SIGKILL, views equal at the end. */
async function twoDaemons(s: Scenario): Promise<void> {
  await seed(s);
  const started = performance.now();
  const daemons = [
    await spawnDaemon(daemonEnv(s, s.settingsDb), `n${s.n}-a`),
    await spawnDaemon(daemonEnv(s, s.settingsDb), `n${s.n}-b`),
  ];
  try {
    const allStreaming = await untilAllStreaming(s, started, daemons);
    const settled = await settledSplit(s, daemons);
    const tokens = new Map((await mappingLeases(s)).map((l) => [l._id, l.token]));
    await touch(s, 30, 1);
    await sleep(SETTLED_WINDOW_MS);
    const after = await mappingLeases(s);
    const takeovers = after.reduce((sum, l) => sum + (l.token - (tokens.get(l._id) ?? l.token)), 0);
    const [victim, survivor] = daemons as [Daemon, Daemon];
    const killedAt = performance.now();
    await stopDaemon(victim, 'SIGKILL');
    let failover: number | undefined;
    while (performance.now() - killedAt < 10 * DEFAULT_LEASE_TTL_MS) {
      const held = split(await mappingLeases(s), [survivor], true)[0] ?? 0;
      if (held === s.n) {
        failover = (performance.now() - killedAt) / 1000;
        break;
      }
      await sleep(250);
    }
    await touch(s, 30, 2);
    const equal = await viewsEqual(s, 180_000);
    const result = {
      mappings: s.n,
      daemons: 2,
      streaming: await streamingCount(s),
      all_streaming_s: allStreaming === undefined ? null : round3(allStreaming),
      lease_split: settled.split,
      lease_split_settled: settled.settled,
      leases_live_at_split: settled.live,
      takeovers_settled_60s: takeovers,
      failover_s: failover === undefined ? null : round3(failover),
      views_equal: equal,
      mongo_connections_peak: s.proxy.peakConnections,
      targets: TARGETS,
    };
    line(result);
    console.log(
      `N=${s.n}, 2 daemons: all streaming after ${allStreaming === undefined ? 'never' : `${round3(allStreaming)} s`}; ` +
        `leases split ${settled.split.join('/')}${settled.settled ? '' : ' (never settled)'}, ` +
        `${settled.live} of them unexpired; ${takeovers} takeovers in the 60 s after (${settled.settled ? 'settled' : 'not settled'}); after a SIGKILL the other ` +
        `held all ${s.n} ${failover === undefined ? `not within ${(10 * DEFAULT_LEASE_TTL_MS) / 1000} s` : `after ${round3(failover)} s`}; ` +
        `${equal}/${s.n} views equal their collections`,
    );
  } finally {
    for (const d of daemons) await stopDaemon(d);
  }
}

async function measure(n: number, peers: RunningPeers): Promise<void> {
  const bq = bigQueryTestEnv(peers.env);
  const peerUri = peers.env.MBA_TEST_MONGODB_URI ?? '';
  const suffix = randomBytes(3).toString('hex');
  const settingsDb = sqlName(`scale_settings_${suffix}`);
  const leaseCommands: LeaseCommand[] = [];
  const proxy = await RealServerProxy.start({
    target: loopbackTarget(peerUri),
    repollMs: REPOLL_MS,
    onCommand: (c: ProxiedCommand) => {
      if (c.db === settingsDb && c.collection === LEASES_COLLECTION) {
        leaseCommands.push({ name: c.name, at: c.at });
      }
    },
  });
  // The bench's own reads and writes go to the peer directly: the proxy counts the daemons' alone.
  const mongo = new MongoClient(peerUri);
  await mongo.connect();
  const clients = await createBigQueryClients({
    kind: 'emulator',
    projectId: bq.projectId,
    apiEndpoint: bq.apiEndpoint,
    grpcHost: bq.grpcHost,
    grpcPort: bq.grpcPort,
  });
  const scenario: Scenario = {
    n,
    peers,
    bq,
    mongo,
    clients,
    proxy,
    sourceDb: sqlName(`scale_source_${suffix}`),
    settingsDb,
    dataset: sqlName(`scale_${suffix}`),
    leaseCommands,
  };
  try {
    if (DAEMONS === 2) await twoDaemons(scenario);
    else await oneDaemon(scenario);
  } finally {
    await mongo.close();
    await clients.close();
    await proxy.stop();
  }
}

if (DAEMONS !== 1 && DAEMONS !== 2) throw new Error('MBA_BENCH_SCALE_DAEMONS must be 1 or 2');
for (const n of SIZES) {
  if (!Number.isInteger(n) || n < 1) throw new Error(`MBA_BENCH_SCALE_N: ${n} is not a number of mappings`);
  const benchStarted = performance.now();
  // Fresh peers for each N: a run must not read the previous one's oplog.
  const peers = await startPeers(selectedPeers(), peerContext());
  try {
    await measure(n, peers);
  } catch (error) {
    process.stderr.write(peers.logTails(30));
    throw error;
  } finally {
    await peers.stop();
  }
  process.stderr.write(
    `[scale] N=${n} took ${Math.round((performance.now() - benchStarted) / 1000)} s in all\n`,
  );
}
