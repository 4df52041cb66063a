// End-to-end benchmark against the test peers (issue 11): the daemon (startArchiver, in this process) between
// mongo-java-server and bqemulator, started afresh for each writer through scripts/peers as the integration
// tests start them (a fresh mongo-java-server matters: every getMore of its change streams rescans its whole
// oplog, which is never trimmed, so a second run on the same server would be slower). For each writer:
//
// 1. backfill: MBA_E2E_DOCS documents (default 20,000) are inserted, then a mapping with
//    backfill_full_collection is created and the daemon started; docs/s from the start until the history
//    table holds them all as backfill rows (polled with COUNT(*) every 250 ms), and the time to the first row;
// 2. stream: with the mapping streaming, a writer makes MBA_E2E_EVENTS changes (default 20,000) at full speed
//    (insertMany of 500 new documents, bulkWrite of 300 updates, bulkWrite of 200 deletes per round); events/s
//    from the first write until the history table holds them all, and the writer's own rate
//    (`source_write_per_s`: what the peer accepts bounds what the archiver can see), and the rate at which the daemon
//    read them from its change stream (`read_per_s`, from its mba_change_events_total).
//
// Each measurement is one JSON line: the rate, this process's CPU (daemon, writer and poller: `cpu_cores`,
// CPU seconds per second), the CPU of each peer's process group (`mongo_cores`, `bigquery_cores`) and the
// load average, and the daemon's write requests of the phase (`batches`) with their mean time from sending to
// acknowledgement (`batch_ms`, from its mba_batch_duration_seconds). At the end the view must equal the collection (one row per document, its `rev` equal), or
// the run fails. The storage-write run uses the nested ~1 KB documents of bench/shapes.ts flattened into
// top-level fields, because bqemulator takes no RECORD column through the Storage Write API (the daemon would
// write such a table with insertAll); `writer_used` says which writer the table's schema gets. The insert-all
// run uses the nested documents as they are.
//
// Environment: MBA_E2E_DOCS, MBA_E2E_EVENTS, MBA_E2E_WRITERS (comma-separated, default storage-write,insert-all),
// BIGQUERY_MAX_IN_FLIGHT_REQUESTS (the daemon's in-flight window, default as the daemon's), WORKER_THREADS
// (the daemon's worker threads, default as the daemon's),
// and the peers' own (MBA_PEERS_RUN_DIR, MBA_MONGODB_PEER, MBA_BIGQUERY_PEER).
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { deserialize } from 'bson';
import { MongoClient, type AnyBulkWriteOperation, type Document, type ObjectId } from 'mongodb';
import { peerContext, startPeers, type RunningPeers } from '../scripts/peers/lib.js';
import { selectedPeers } from '../scripts/peers/registry.js';
import { startArchiver } from '../src/app/archiver.js';
import { createBigQueryClients, type BigQueryClients } from '../src/bigquery/client.js';
import { storageWriteSupport } from '../src/bigquery/storage-write-writer.js';
import { loadBootstrapConfig } from '../src/config/bootstrap.js';
import { WRITER_KINDS, type WriterKind } from '../src/core/settings.js';
import { createLogger } from '../src/observability/logger.js';
import { docIdString } from '../src/transform/values.js';
import { bigQueryTestEnv } from '../test/integration/support/bigquery.js';
import {
  flattenDocument,
  histogramTotals,
  parseProcStat,
  round3,
  seriesTotal,
  writePlan,
} from './e2e/helpers.js';
import { shapeDocuments } from './shapes.js';

const DOCS = Number(process.env.MBA_E2E_DOCS ?? 20_000);
const EVENTS = Number(process.env.MBA_E2E_EVENTS ?? 20_000);
const POLL_MS = 250;
const TIMEOUT_MS = 30 * 60_000;
const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim());

function writers(): WriterKind[] {
  const raw = process.env.MBA_E2E_WRITERS;
  if (!raw) return ['storage-write', 'insert-all'];
  return raw.split(',').map((w) => {
    const writer = w.trim();
    if (!(WRITER_KINDS as readonly string[]).includes(writer)) throw new Error(`unknown writer ${writer}`);
    return writer as WriterKind;
  });
}

/** CPU clock ticks used so far by every process of the group `pgrp` (a peer and what it started). */
function groupTicks(pgrp: number): number {
  let ticks = 0;
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = parseProcStat(readFileSync(`/proc/${entry}/stat`, 'utf8'));
      if (stat.pgrp === pgrp) ticks += stat.ticks;
    } catch {
      // The process ended between the listing and the read.
    }
  }
  return ticks;
}

/** CPU of this process and of each peer's process group over a phase. */
class CpuMeter {
  readonly #cpu = process.cpuUsage();
  readonly #start = performance.now();
  readonly #peers: Map<string, { pgrp: number; ticks: number }>;

  constructor(peers: ReadonlyMap<string, number>) {
    this.#peers = new Map([...peers].map(([name, pgrp]) => [name, { pgrp, ticks: groupTicks(pgrp) }]));
  }

  /** CPU seconds per second of wall time since the start: this process, and each peer. */
  read(): Record<string, number> {
    const seconds = (performance.now() - this.#start) / 1000;
    const used = process.cpuUsage(this.#cpu);
    const out: Record<string, number> = { cpu_cores: round3((used.user + used.system) / 1e6 / seconds) };
    for (const [name, { pgrp, ticks }] of this.#peers) {
      out[`${name}_cores`] = round3((groupTicks(pgrp) - ticks) / CLK_TCK / seconds);
    }
    return out;
  }
}

/** Backfill rows and change rows in the history table (0 and 0 while it does not exist yet). */
async function historyCounts(
  clients: BigQueryClients,
  dataset: string,
  table: string,
): Promise<{ backfill: number; changes: number }> {
  const [rows] = (await clients.bigquery
    .query({
      query:
        `SELECT SUM(CASE WHEN operationType = 'backfill' THEN 1 ELSE 0 END) AS backfill, ` +
        `SUM(CASE WHEN operationType = 'backfill' THEN 0 ELSE 1 END) AS changes ` +
        `FROM \`${clients.projectId}.${dataset}.${table}\``,
    })
    .catch(() => [[]])) as [Document[]];
  const row = rows[0];
  return { backfill: Number(row?.backfill ?? 0), changes: Number(row?.changes ?? 0) };
}

/** Polls the history table until `done` says its counts are complete; returns when the first row came. */
async function waitForRows(
  read: () => Promise<{ backfill: number; changes: number }>,
  done: (counts: { backfill: number; changes: number }) => boolean,
  started: number,
  what: string,
): Promise<{ firstRowMs: number | undefined }> {
  let firstRowMs: number | undefined;
  for (;;) {
    const counts = await read();
    if (firstRowMs === undefined && counts.backfill + counts.changes > 0)
      firstRowMs = performance.now() - started;
    if (done(counts)) return { firstRowMs };
    if (performance.now() - started > TIMEOUT_MS) {
      throw new Error(`${what}: the history table never got there (last counts ${JSON.stringify(counts)})`);
    }
    await sleep(POLL_MS);
  }
}

/** The view must hold one row per document of the collection, with its `rev`; throws otherwise. */
async function verifyView(
  mongo: MongoClient,
  clients: BigQueryClients,
  db: string,
  dataset: string,
  table: string,
): Promise<number> {
  const docs = await mongo
    .db(db)
    .collection(table)
    .find({}, { projection: { _id: 1, rev: 1 } })
    .toArray();
  const expected = docs.map((d) => `${docIdString(d._id)}|${String(d.rev)}`).sort();
  const [rows] = await clients.bigquery.query({
    query: `SELECT _doc_id, rev FROM \`${clients.projectId}.${dataset}.${table}_view\``,
  });
  const actual = (rows as Document[]).map((r) => `${String(r._doc_id)}|${String(r.rev)}`).sort();
  if (actual.length !== expected.length || actual.some((line, i) => line !== expected[i])) {
    const missing = expected.filter((line) => !actual.includes(line)).slice(0, 5);
    const extra = actual.filter((line) => !expected.includes(line)).slice(0, 5);
    throw new Error(
      `the view does not equal MongoDB: ${actual.length} rows against ${expected.length} documents; ` +
        `missing ${JSON.stringify(missing)}, unexpected ${JSON.stringify(extra)}`,
    );
  }
  return actual.length;
}

/** The daemon's write requests so far: how many, and the seconds they took in all (mba_batch_duration_seconds). */
async function batchTotals(metricsPort: number): Promise<{ sum: number; count: number }> {
  const response = await fetch(`http://127.0.0.1:${metricsPort}/metrics`);
  return histogramTotals(await response.text(), 'mba_batch_duration_seconds');
}

/** Requests written between two readings, and their mean duration in ms (from send to acknowledgement). */
function batchFields(
  from: { sum: number; count: number },
  to: { sum: number; count: number },
): Record<string, number> {
  const count = to.count - from.count;
  return { batches: count, batch_ms: round3(count > 0 ? ((to.sum - from.sum) / count) * 1000 : 0) };
}

/** Change events the daemon has read from its change stream so far (mba_change_events_total). */
async function eventsRead(metricsPort: number): Promise<number> {
  const response = await fetch(`http://127.0.0.1:${metricsPort}/metrics`);
  return seriesTotal(await response.text(), 'mba_change_events_total');
}

/** Resolves with the ms from `started` until the daemon has read `target` change events (polled every 50 ms). */
async function whenRead(metricsPort: number, target: number, started: number): Promise<number> {
  while ((await eventsRead(metricsPort)) < target) {
    if (performance.now() - started > TIMEOUT_MS) throw new Error(`the daemon never read ${target} events`);
    await sleep(50);
  }
  return performance.now() - started;
}

function line(fields: Record<string, unknown>): void {
  console.log(JSON.stringify({ bench: 'e2e-peers', ...fields, load_avg_1m: round3(loadavg()[0] ?? 0) }));
}

/** Documents of the run: nested ~1 KB ones, flattened for Storage Write; each with `rev` 0. */
function documents(writer: WriterKind, count: number, offset: number): Document[] {
  return shapeDocuments('nested-1KB', offset + count)
    .slice(offset)
    .map((bytes) => {
      const doc = deserialize(bytes) as Record<string, unknown>;
      // bqemulator cannot create the BIGNUMERIC column a Decimal128 is archived as: the budget is a double.
      const campaign = doc.campaign as Record<string, unknown>;
      campaign.budget = Number(String(campaign.budget));
      return { ...(writer === 'storage-write' ? flattenDocument(doc) : doc), rev: 0 };
    });
}

async function measure(writer: WriterKind, peers: RunningPeers): Promise<void> {
  const bq = bigQueryTestEnv(peers.env);
  const mongoUri = peers.env.MBA_TEST_MONGODB_URI ?? '';
  const peerGroups = new Map<string, number>();
  for (const peer of peers.peers) {
    peerGroups.set(peer.env.MBA_TEST_MONGODB_URI === undefined ? 'bigquery' : 'mongo', peer.pid);
  }
  const suffix = randomBytes(3).toString('hex');
  const db = `e2e_${suffix}`;
  const settingsDb = `e2e_settings_${suffix}`;
  const dataset = `e2e_${suffix}`;
  const table = 'docs';
  const mongo = new MongoClient(mongoUri);
  await mongo.connect();
  const clients = await createBigQueryClients({
    kind: 'emulator',
    projectId: bq.projectId,
    apiEndpoint: bq.apiEndpoint,
    grpcHost: bq.grpcHost,
    grpcPort: bq.grpcPort,
  });
  const controller = new AbortController();
  let archiver: Awaited<ReturnType<typeof startArchiver>> | undefined;
  try {
    const collection = mongo.db(db).collection(table);
    const seeded = documents(writer, DOCS, 0);
    for (let i = 0; i < seeded.length; i += 1_000) await collection.insertMany(seeded.slice(i, i + 1_000));
    await mongo
      .db(settingsDb)
      .collection<{ _id: string } & Document>('bigquery_archiver_settings')
      .insertOne({
        _id: table,
        mongo_database: db,
        mongo_collection: table,
        bigquery_table: table,
        backfill_full_collection: true,
      });
    const config = loadBootstrapConfig({
      path: '/nonexistent/config.json',
      env: {
        MONGO_CLIENT: mongoUri,
        BIGQUERY_PROJECT: bq.projectId,
        BIGQUERY_DATASET: dataset,
        SETTINGS_DATABASE: settingsDb,
        SETTINGS_POLL_INTERVAL_MS: '300',
        BIGQUERY_EMULATOR_ENDPOINT: bq.apiEndpoint,
        BIGQUERY_EMULATOR_GRPC: `${bq.grpcHost}:${bq.grpcPort}`,
        BIGQUERY_EMULATOR_KIND: bq.peer,
        BIGQUERY_WRITER: writer,
        METRICS_PORT: '0',
        LOG_LEVEL: 'warn',
        // The in-flight window may be set as for the daemon, to see whether it holds the change stream back.
        ...(process.env.BIGQUERY_MAX_IN_FLIGHT_REQUESTS !== undefined && {
          BIGQUERY_MAX_IN_FLIGHT_REQUESTS: process.env.BIGQUERY_MAX_IN_FLIGHT_REQUESTS,
        }),
        // And the worker threads (default as the daemon's: auto).
        ...(process.env.WORKER_THREADS !== undefined && { WORKER_THREADS: process.env.WORKER_THREADS }),
      },
    });
    const logger = createLogger({
      level: 'warn',
      destination: { write: (text: string) => process.stderr.write(text) },
    });
    const counts = () => historyCounts(clients, dataset, table);

    // 1. Backfill.
    let cpu = new CpuMeter(peerGroups);
    let started = performance.now();
    archiver = await startArchiver(config, logger, controller.signal);
    const backfill = await waitForRows(counts, (c) => c.backfill >= DOCS, started, 'backfill');
    let seconds = (performance.now() - started) / 1000;
    let batches = await batchTotals(archiver.metricsPort);
    const [metadata] = (await clients.bigquery.dataset(dataset).table(table).getMetadata()) as [
      { schema: { fields: Parameters<typeof storageWriteSupport>[0] } },
      unknown,
    ];
    const writerUsed =
      writer === 'storage-write' && storageWriteSupport(metadata.schema.fields, bq.peer).supported
        ? 'storage-write'
        : 'insert-all';
    line({
      phase: 'backfill',
      writer,
      writer_used: writerUsed,
      docs: DOCS,
      per_s: round3(DOCS / seconds),
      seconds: round3(seconds),
      time_to_first_row_s: round3((backfill.firstRowMs ?? 0) / 1000),
      ...batchFields({ sum: 0, count: 0 }, batches),
      ...cpu.read(),
    });

    // 2. Stream: wait until the mapping reports streaming, then write at full speed.
    const settings = mongo
      .db(settingsDb)
      .collection<{ _id: string } & Document>('bigquery_archiver_settings');
    for (;;) {
      const status = (await settings.findOne({ _id: table }))?.status as Document | undefined;
      if (status?.state === 'streaming') break;
      await sleep(100);
    }
    const before = await counts();
    const fresh = documents(writer, Math.ceil(EVENTS / 2), DOCS);
    const ids = seeded.map((d) => d._id as ObjectId);
    const idAt = (i: number): ObjectId => {
      const id = ids[i];
      if (id === undefined) throw new Error(`the plan names document ${i} of ${ids.length}`);
      return id;
    };
    batches = await batchTotals(archiver.metricsPort);
    const metricsPort = archiver.metricsPort;
    const readBefore = await eventsRead(metricsPort);
    cpu = new CpuMeter(peerGroups);
    started = performance.now();
    const allRead = whenRead(metricsPort, readBefore + EVENTS, started);
    let written = 0;
    for (const round of writePlan(EVENTS, DOCS)) {
      const inserts = fresh.slice(round.inserts[0], round.inserts[1]);
      if (inserts.length > 0) await collection.insertMany(inserts);
      const updates: AnyBulkWriteOperation[] = round.updates.map((i) => ({
        updateOne: { filter: { _id: idAt(i) }, update: { $inc: { rev: 1 } } },
      }));
      if (updates.length > 0) await collection.bulkWrite(updates, { ordered: false });
      const deletes: AnyBulkWriteOperation[] = round.deletes.map((i) => ({
        deleteOne: { filter: { _id: idAt(i) } },
      }));
      if (deletes.length > 0) await collection.bulkWrite(deletes, { ordered: false });
      written += inserts.length + updates.length + deletes.length;
    }
    const writeSeconds = (performance.now() - started) / 1000;
    await waitForRows(counts, (c) => c.changes - before.changes >= written, started, 'stream');
    seconds = (performance.now() - started) / 1000;
    line({
      phase: 'stream',
      writer,
      writer_used: writerUsed,
      events: written,
      per_s: round3(written / seconds),
      source_write_per_s: round3(written / writeSeconds),
      read_per_s: round3(written / ((await allRead) / 1000)),
      seconds: round3(seconds),
      ...batchFields(batches, await batchTotals(archiver.metricsPort)),
      ...cpu.read(),
    });

    const rows = await verifyView(mongo, clients, db, dataset, table);
    process.stderr.write(`[e2e] ${writer}: the view equals MongoDB (${rows} documents)\n`);
  } finally {
    controller.abort();
    await archiver?.done.catch(() => undefined);
    await mongo.close();
    await clients.close();
  }
}

for (const writer of writers()) {
  // Fresh peers for each writer: the second run must not read the first one's oplog.
  const peers = await startPeers(selectedPeers(), peerContext());
  try {
    await measure(writer, peers);
  } catch (error) {
    process.stderr.write(peers.logTails(30));
    throw error;
  } finally {
    await peers.stop();
  }
}
