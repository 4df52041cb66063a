// Pipeline benchmark (docs/bigquery.md, "Pipeline benchmark"): change events/s from recorded BSON change events through decode,
// mapping, batching and request encoding into an in-process sink, against the floor (BSON decode +
// JSON.stringify of the same events) measured alternately in the same run; peak RSS during a backfill of
// generated documents; and the backfill's documents/s against the same floor per document, also measured
// alternately. A ratio is the median of each round's rate against the mean of the floor rounds either side
// of it (bench/measure.ts bracketedRatio): the floor moves by up to half from one second to the next on a
// virtual machine. Everything runs the production modules; only the network is replaced: requests to BigQuery
// by a counter of the bytes each would send, answered after a simulated round trip (bench/counting-sink.ts),
// and each chunk read of the backfill by a simulated round trip to MongoDB. Both are timers, so waiting
// costs no CPU, as waiting for a remote server does not. The backfill's rate reads chunks as BSON bytes
// (nextRawChunk) and has their records made as the daemon makes them with worker threads (prepareDocuments,
// `"records":"workers"`), and without, on this thread (decodeDocument, then backfillRecord; the generated
// documents fit their columns, so nothing is evolved: `"records":"in-thread"`).
//
// Paths measured, for each writer (storage-write, the default, and insert-all):
// - stream-loop: what the daemon runs, on one thread: runStreamLoop pulling decoded, normalised events from
//   a source standing in for the change stream, changeRecord, rowBytes, Batcher, then BigQuerySink
//   (splitIntoBatches) and the real writer, whose request is serialised as gRPC or the HTTP client would.
//   The loop is pipelined as in the daemon: up to the in-flight window's requests out at once (default
//   DEFAULT_WINDOW_LIMITS), reading ahead while they are. The daemon's loop runs on, so a round is one loop
//   run of a round trip (the window filling up) plus BENCH_ROUND_MS, and its rate is the events acknowledged
//   within those last BENCH_ROUND_MS (steady state); the stop and drain that follow are not timed;
// - encoder: ParallelChangeEncoder (bench/parallel/change-encoder.ts; a prototype the daemon does not use) decoding,
//   normalising, mapping (changeRecord) and encoding each row once, on this thread (workers 0) or on
//   worker threads; this thread batches (Batcher, splitIntoBatches) and assembles each request.
//
// Environment:
// - MBA_BENCH_RTT_MS: simulated round trips to BigQuery in ms, comma-separated (default 0,50,200): every
//   request of the counting sink (insertAll, Storage Write, dead letters) is answered that long after it is
//   sent; each path, writer and the backfill's rate are measured at each, and each JSON line says its `rtt_ms`;
// - MBA_BENCH_MONGO_RTT_MS: simulated round trip of each chunk read of the backfill's rate (default 5);
// - MBA_BENCH_EVENTS: recorded events (default 10000; 0 skips the throughput part);
// - MBA_BENCH_THREADS: worker threads of the parallel path (default 2);
// - MBA_BENCH_DOCS: documents of the memory backfill, which is also the collection the backfill's rate reads
//   (default 1000000; 0 skips both);
// - BENCH_ROUNDS (default 5) and BENCH_ROUND_MS (default 1000): rounds of each measurement;
// - backpressure (issue 11 must-show 2): the stream-loop path, Storage Write, BigQuery answering after
//   200 ms and the source as fast as it is read, for 3 × BENCH_ROUND_MS; its JSON line has the peak RSS
//   (`max_rss_mb`, sampled every 5 ms), the most events read and not yet acknowledged, and both bounds:
//   `unacked_bound_events` (the window's requests full, one batch in hand, one pull) and `rss_bound_mb`
//   (bench/measure.ts rssBound: RSS at the start + the young generation (two semi-spaces) + RSS_PER_WIRE_BYTE
//   × the wire bytes the window and the read-ahead may hold);
// - BIGQUERY_MAX_IN_FLIGHT_REQUESTS and BIGQUERY_MAX_IN_FLIGHT_MB: the in-flight window of the stream-loop
//   and backpressure paths, as the daemon's keys of the same names (default DEFAULT_WINDOW_LIMITS);
// - MBA_BENCH_PATHS (comma-separated: stream-loop, encoder, stages, backpressure, backfill-memory, backfill;
//   default all) measures only those, for profiling one of them (node --cpu-prof): backfill-memory is the
//   memory backfill, backfill the backfill's rate (both also need MBA_BENCH_DOCS above 0);
//   MBA_BENCH_WRITERS (storage-write, insert-all; default both).
import { loadavg, availableParallelism } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { deserialize } from 'bson';
import {
  compileChangeEncoder,
  DEFAULT_TASK_EVENTS,
  insertAllRequestBody,
  encodedRow,
  ParallelChangeEncoder,
  type EncodedChanges,
} from './parallel/change-encoder.js';
import { Batcher, DEFAULT_BATCH_LIMITS, splitIntoBatches } from '../src/core/batcher.js';
import { backfillRecord, changeRecord } from '../src/core/history-rows.js';
import { type ClusterTime, type Position } from '../src/core/model.js';
import {
  type ChangeSource,
  type Checkpoint,
  type CheckpointStore,
  type RawChangeBatch,
} from '../src/core/ports.js';
import { type MappingSpec } from '../src/core/prepared.js';
import { EncoderPool, prepareChanges, prepareDocuments } from '../src/workers/prepare.js';
import {
  DEFAULT_STREAM_BATCH_SIZE,
  rowBytes,
  runPreparedStreamLoop,
  runStreamLoop,
  type RecordSink,
} from '../src/core/stream-loop.js';
import { DEFAULT_WINDOW_LIMITS, type WindowLimits } from '../src/core/window.js';
import { compileRowEncoder, storageWriteDescriptor } from '../src/bigquery/proto-encoder.js';
import { WRITER_KINDS, type WriterKind } from '../src/core/settings.js';
import { normalizeChangeEvent } from '../src/mongodb/change-event.js';
import { encodeId } from '../src/mongodb/checkpoint-store.js';
import { DEFAULT_BACKFILL_CHUNK } from '../src/mongodb/snapshot-reader.js';
import { inferColumns } from '../src/schema/infer.js';
import { historyTableSchema } from '../src/schema/table-schema.js';
import { type ColumnSpec } from '../src/schema/types.js';
import { BSON_DECODE_OPTIONS } from '../src/base/bson-kind.js';
import { compileRowMapper } from '../src/transform/row-mapper.js';
import { configuredSemiSpaceMb, pretenuringDisabled } from '../src/observability/runtime.js';
import { runBackfill, type BackfillRecords } from '../src/app/backfill-role.js';
import { decodeDocument } from '../src/mongodb/raw-documents.js';
import { createLogger } from '../src/observability/logger.js';
import { generatedSource, memoryBackfillCheckpoints } from './backfill-source.js';
import { generatedCollection, OPERATION_MIX, recordedChangeEvents } from './change-events.js';
import {
  answerAfter,
  countingAppender,
  countingSink,
  wireCounter,
  type SimulatedNetwork,
  type WireCounter,
} from './counting-sink.js';
import {
  bracketedRatio,
  median,
  RSS_PER_WIRE_BYTE,
  rssBound,
  RssSampler,
  throughput,
  throughputAsync,
  type RoundResult,
} from './measure.js';
import { shapeDocuments } from './shapes.js';

/** Round trips to BigQuery simulated by default: none (the CPU-bound pipeline), a nearby region, a far one. */
const DEFAULT_RTT_MS: readonly number[] = [0, 50, 200];
/** A MongoDB replica set in the same region as the archiver. */
const DEFAULT_MONGO_RTT_MS = 5;

function milliseconds(name: string, text: string): number {
  const value = Number(text.trim());
  if (text.trim() === '' || !Number.isFinite(value) || value < 0) {
    throw new Error(`${name}: "${text}" is not a number of milliseconds (0 or more)`);
  }
  return value;
}

function millisecondsList(name: string, fallback: readonly number[]): number[] {
  const text = process.env[name];
  if (text === undefined || text.trim() === '') return [...fallback];
  return text.split(',').map((part) => milliseconds(name, part));
}

const EVENTS = Number(process.env.MBA_BENCH_EVENTS ?? 10_000);
const THREADS = Number(process.env.MBA_BENCH_THREADS ?? 2);
/** The stream-loop path and the backfill on one thread, then with THREADS worker threads (WORKER_THREADS). */
const STREAM_LOOP_THREADS = [0, THREADS].filter((n, i, all) => all.indexOf(n) === i);
const BACKFILL_DOCS = Number(process.env.MBA_BENCH_DOCS ?? 1_000_000);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const ROUND_MS = Number(process.env.BENCH_ROUND_MS ?? 1_000);
const WRITERS = WRITER_KINDS.filter((kind) =>
  (process.env.MBA_BENCH_WRITERS ?? WRITER_KINDS.join(',')).split(',').includes(kind),
);
const PATHS = new Set(
  (process.env.MBA_BENCH_PATHS ?? 'stream-loop,encoder,stages,backpressure,backfill-memory,backfill').split(
    ',',
  ),
);
const RTTS = millisecondsList('MBA_BENCH_RTT_MS', DEFAULT_RTT_MS);

function wholeNumber(name: string, fallback: number): number {
  const text = process.env[name];
  if (text === undefined || text.trim() === '') return fallback;
  const value = Number(text.trim());
  if (!Number.isInteger(value) || value < 1)
    throw new Error(`${name}: "${text}" is not a whole number (1 or more)`);
  return value;
}

/** The daemon's window unless overridden by the daemon's own keys (to measure another one). */
const WINDOW: WindowLimits = {
  maxRequests: wholeNumber('BIGQUERY_MAX_IN_FLIGHT_REQUESTS', DEFAULT_WINDOW_LIMITS.maxRequests),
  maxBytes: wholeNumber('BIGQUERY_MAX_IN_FLIGHT_MB', DEFAULT_WINDOW_LIMITS.maxBytes / 1_000_000) * 1_000_000,
};
/** Round trip of the backpressure measurement: a far BigQuery, so that the source is much faster. */
const BACKPRESSURE_RTT_MS = 200;
const MONGO_RTT_MS = milliseconds(
  'MBA_BENCH_MONGO_RTT_MS',
  process.env.MBA_BENCH_MONGO_RTT_MS ?? String(DEFAULT_MONGO_RTT_MS),
);
const MB = 1024 * 1024;
const SAMPLE = 1_000;
const SNAPSHOT_START: ClusterTime = { t: 1_764_000_000, i: 1 };
/** The signal of work that is never aborted. */
const NEVER = new AbortController().signal;

const lines: string[] = [];
const load = () => Number((loadavg()[0] ?? 0).toFixed(2));
const mb = (bytes: number) => Math.round(bytes / MB);
const rss = () => process.memoryUsage.rss();

/** Measured as the daemon runs: `npm run bench:pipeline` passes the daemon's flag (src/observability/runtime.ts). */
const SEMI_SPACE = configuredSemiSpaceMb() ?? null;
const PRETENURING = !pretenuringDisabled();

console.log(
  `node ${process.version}, V8 semi-space ${SEMI_SPACE === null ? 'default (16 MB)' : `${SEMI_SPACE} MB`}, ` +
    `allocation-site pretenuring ${PRETENURING ? 'on' : 'off'}, ` +
    `${availableParallelism()} cores, load average ${loadavg()
      .map((l) => l.toFixed(2))
      .join(' ')}`,
);

/** An in-memory checkpoint store: saving costs nothing, as the bench measures the pipeline only. */
function memoryCheckpoints(): CheckpointStore & { last: Checkpoint | undefined } {
  const store = {
    last: undefined as Checkpoint | undefined,
    load: () => Promise.resolve(store.last ?? { position: undefined }),
    save: (checkpoint: Checkpoint) => {
      store.last = checkpoint;
      return Promise.resolve();
    },
  };
  return store;
}

/** The floor: decoded from BSON and serialised as JSON, on one thread (bench/transform.ts's definition). */
const floor = (bytes: Uint8Array) => JSON.stringify(deserialize(bytes));

/** One chunk as MappingRun's backfill copies it: its rows to the sink, then the progress checkpoint. */
async function copyChunk(
  sink: ReturnType<typeof countingSink>['sink'],
  checkpoints: CheckpointStore,
  mapper: ReturnType<typeof compileRowMapper>,
  chunk: readonly Record<string, unknown>[],
  copiedBefore: number,
): Promise<number> {
  const last = chunk.at(-1);
  if (!last) return 0;
  const now = new Date();
  await sink.write(chunk.map((doc) => backfillRecord(mapper, doc, SNAPSHOT_START, now)));
  await checkpoints.save(
    {
      position: undefined,
      backfill: {
        snapshotStart: SNAPSHOT_START,
        lastId: encodeId(last._id),
        copied: copiedBefore + chunk.length,
        done: false,
      },
    },
    NEVER,
  );
  return chunk.length;
}

/** The backfill's columns, inferred from a sample of the generated collection as MappingRun infers them. */
async function backfillColumns(): Promise<readonly ColumnSpec[]> {
  let sample: Record<string, unknown>[] = [];
  for await (const chunk of generatedCollection(SAMPLE, SAMPLE, BSON_DECODE_OPTIONS)) sample = chunk;
  return inferColumns(sample);
}

// --- backfill memory (first, so that the process's maximum RSS is the backfill's) -----------------------

async function backfillMemory(): Promise<void> {
  const writer: WriterKind = 'storage-write';
  const rssStart = rss();
  const columns = await backfillColumns();
  const mapper = compileRowMapper(columns);
  const counter = wireCounter();
  // No simulated round trips: the whole collection at the pipeline's own speed.
  const { sink } = countingSink(writer, historyTableSchema(columns), counter);
  const checkpoints = memoryCheckpoints();
  let copied = 0;
  let peak = rss();
  let peakFirst100k = 0;
  /** RSS after every 100,000 documents. */
  const series: number[] = [];
  const started = performance.now();
  for await (const chunk of generatedCollection(BACKFILL_DOCS, DEFAULT_BACKFILL_CHUNK, BSON_DECODE_OPTIONS)) {
    if (chunk.length === 0) break;
    copied += await copyChunk(sink, checkpoints, mapper, chunk, copied);
    const current = rss();
    peak = Math.max(peak, current);
    if (copied <= 100_000) peakFirst100k = peak;
    if (copied % 100_000 === 0) series.push(mb(current));
  }
  const seconds = (performance.now() - started) / 1000;
  const result = {
    bench: 'pipeline-backfill-memory',
    writer,
    rtt_ms: 0,
    mongo_rtt_ms: 0,
    docs: copied,
    docs_per_s: Math.round(copied / seconds),
    wire_mb: mb(counter.bytes),
    rss_start_mb: mb(rssStart),
    rss_at_100k_mb: series[0] ?? null,
    rss_peak_first_100k_mb: mb(peakFirst100k),
    rss_peak_mb: mb(peak),
    rss_end_mb: mb(rss()),
    // ru_maxrss (KiB on Linux): the process's peak, also between the samples above.
    max_rss_mb: Math.round(process.resourceUsage().maxRSS / 1024),
    rss_every_100k_mb: series,
    semi_space_mb: SEMI_SPACE,
    pretenuring: PRETENURING,
    load_avg_1m: load(),
  };
  console.log(
    `backfill of ${copied.toLocaleString('en')} documents (${writer}, no round trips): ` +
      `${result.docs_per_s.toLocaleString('en')} docs/s, ` +
      `RSS ${result.rss_start_mb} MB at start, ${series.join(', ')} MB after each 100k, peak ${result.rss_peak_mb} MB ` +
      `(${result.rss_peak_first_100k_mb} MB within the first 100k), max RSS ${result.max_rss_mb} MB`,
  );
  lines.push(JSON.stringify(result));
}

// --- backfill rate against the floor, at each simulated round trip ------------------------------------

/** The generated collection's documents as BSON, for the floor per document. */
const backfillFloorInputs = shapeDocuments('nested-1KB', SAMPLE);

/**
 * The records of a chunk read as BSON bytes, made on this thread: each document decoded as the daemon
 * decodes it (decodeDocument) and mapped (backfillRecord). A stand-in until the daemon's worker threads make
 * them (prepareDocuments); the generated documents fit the inferred columns, so nothing is evolved.
 */
function inThreadRecords(mapper: ReturnType<typeof compileRowMapper>): BackfillRecords {
  return (documents, now) =>
    Promise.resolve(
      documents.map((bytes) => backfillRecord(mapper, decodeDocument(bytes), SNAPSHOT_START, now)),
    );
}

/**
 * Documents/s of the daemon's backfill (runBackfill: `_id` ranges copied concurrently, chunks read ahead
 * while earlier ones are written, progress saved over acknowledged prefixes), chunks read as BSON bytes and
 * their records made by inThreadRecords, with every BigQuery request answered after `rttMs` and every chunk
 * read after MONGO_RTT_MS, against the floor per document. Each round measures the floor, then starts a fresh
 * copy of the collection, lets it reach its steady state (a round trip each way and a little more) and counts
 * the documents BigQuery acknowledged for BENCH_ROUND_MS, then stops it (its final flush writes what it read).
 */
async function backfillRate(rttMs: number, pool: EncoderPool | undefined): Promise<void> {
  const writer: WriterKind = 'storage-write';
  const columns = await backfillColumns();
  const mapper = compileRowMapper(columns);
  const counter = wireCounter();
  const { sink, rowEncoding } = countingSink(writer, historyTableSchema(columns), counter, { rttMs });
  const mapping: MappingSpec = { columns, captureUnmapped: true };
  const threads = pool?.threads ?? 0;
  const recordsMadeBy = pool ? 'workers' : 'in-thread';
  // The daemon's: prepareDocuments on its worker threads; without them, decoded and mapped on this thread.
  const records = (): BackfillRecords =>
    pool
      ? prepareDocuments(
          pool,
          { current: () => ({ mapping, mapper, encoding: rowEncoding() }) },
          SNAPSHOT_START,
        )
      : inThreadRecords(mapper);
  const log = createLogger({ level: 'silent' });
  let peak = 0;
  const slice = async (ms: number) => {
    const source = generatedSource(BACKFILL_DOCS, DEFAULT_BACKFILL_CHUNK, BSON_DECODE_OPTIONS, MONGO_RTT_MS);
    const stop = new AbortController();
    let acknowledged = 0;
    const copy = runBackfill(
      {
        source,
        sink,
        checkpoints: memoryBackfillCheckpoints(),
        schema: { mapper, evolve: () => Promise.resolve() },
        records: records(),
        log,
        onCopied: (documents) => {
          acknowledged += documents;
        },
      },
      { snapshotStart: SNAPSHOT_START, lastId: undefined, copied: 0, done: false },
      stop.signal,
    ).catch((error: unknown) => {
      if (!stop.signal.aborted) throw error;
    });
    await sleep(rttMs + MONGO_RTT_MS + 250);
    const before = acknowledged;
    const cpu = process.cpuUsage();
    const start = performance.now();
    while (performance.now() - start < ms) {
      await sleep(25);
      peak = Math.max(peak, rss());
    }
    const elapsed = performance.now() - start;
    const used = process.cpuUsage(cpu);
    const docs = acknowledged - before;
    stop.abort();
    await copy;
    return { perSecond: (docs / elapsed) * 1000, cores: (used.user + used.system) / 1000 / elapsed, docs };
  };
  // Warm-up: JIT, the writer's first connection.
  await slice(ROUND_MS);
  const floors: number[] = [];
  const values: number[] = [];
  const cores: number[] = [];
  let measured = 0;
  const bytesBefore = counter.bytes;
  for (let round = 0; round < ROUNDS; round++) {
    floors.push(throughput(backfillFloorInputs, floor, ROUND_MS));
    const result = await slice(ROUND_MS);
    values.push(result.perSecond);
    cores.push(result.cores);
    measured += result.docs;
  }
  floors.push(throughput(backfillFloorInputs, floor, ROUND_MS));
  const f = median(floors);
  const v = median(values);
  const ratio = bracketedRatio(floors, values);
  console.log(
    `backfill     ${writer.padEnd(13)} rtt ${String(rttMs).padStart(3)} ms, MongoDB ${MONGO_RTT_MS} ms  ` +
      `floor ${Math.round(f).toLocaleString('en')} docs/s  backfill ${Math.round(v).toLocaleString('en')} docs/s  ` +
      `ratio ${ratio.toFixed(2)}  CPU ${median(cores).toFixed(2)} cores  peak RSS ${mb(peak)} MB  ` +
      `records ${recordsMadeBy} (${threads} worker threads)  load ${load()}`,
  );
  lines.push(
    JSON.stringify({
      bench: 'pipeline-backfill',
      writer,
      records: recordsMadeBy,
      worker_threads: threads,
      rtt_ms: rttMs,
      mongo_rtt_ms: MONGO_RTT_MS,
      docs: measured,
      floor_per_s: Math.round(f),
      docs_per_s: Math.round(v),
      ratio: Number(ratio.toFixed(3)),
      cpu_cores: Number(median(cores).toFixed(2)),
      wire_bytes_per_doc: Math.round((counter.bytes - bytesBefore) / Math.max(1, measured)),
      rss_peak_mb: mb(peak),
      // ru_maxrss: the process's peak so far, the memory backfill's included.
      max_rss_mb: Math.round(process.resourceUsage().maxRSS / 1024),
      semi_space_mb: SEMI_SPACE,
      pretenuring: PRETENURING,
      load_avg_1m: load(),
    }),
  );
}

if (BACKFILL_DOCS > 0) {
  if (PATHS.has('backfill-memory')) await backfillMemory();
  for (const threads of PATHS.has('backfill') ? STREAM_LOOP_THREADS : []) {
    const pool = threads > 0 ? new EncoderPool({ threads }) : undefined;
    try {
      for (const rttMs of RTTS) await backfillRate(rttMs, pool);
    } finally {
      await pool?.close();
    }
  }
}

// --- throughput --------------------------------------------------------------------------------------

const events = recordedChangeEvents(EVENTS);
const sampleDocs = events
  .slice(0, SAMPLE)
  .map((bytes) => deserialize(bytes, BSON_DECODE_OPTIONS).fullDocument as unknown)
  .filter((doc): doc is Record<string, unknown> => typeof doc === 'object' && doc !== null);
const columns: readonly ColumnSpec[] = await inferColumns(sampleDocs);
const schema = historyTableSchema(columns);
const mapper = compileRowMapper(columns);
const avgBytes = Math.round(events.reduce((n, e) => n + e.length, 0) / Math.max(1, events.length));

/** The recorded events in pulls of the change stream's batch size. */
function pulls(): Uint8Array[][] {
  const out: Uint8Array[][] = [];
  for (let i = 0; i < events.length; i += DEFAULT_STREAM_BATCH_SIZE) {
    out.push(events.slice(i, i + DEFAULT_STREAM_BATCH_SIZE));
  }
  return out;
}

/** What one round of the daemon's path saw, beyond its rate. */
interface StreamLoopRound extends RoundResult {
  /** The most events read (pulled) and not yet acknowledged at any time: the read-ahead. */
  readonly maxUnacked: number;
}

/**
 * Rounds of the daemon's path: runStreamLoop over a source replaying the recording, decoded and normalised
 * as MongoChangeCursor does, in pulls of the change stream's batch size, over and over. The daemon's loop
 * runs on and never starts afresh, so a round is one loop run of a round trip (the window filling up: no
 * answer comes back sooner) plus `ms`, and the events BigQuery acknowledged within those last `ms` are its
 * rate (steady state); then the loop is stopped and drained, outside the round's time.
 */
function streamLoopRounds(
  writer: WriterKind,
  counter: WireCounter,
  network: SimulatedNetwork,
  window: WindowLimits,
  onPull?: (unacked: number) => void,
  pool?: EncoderPool,
): (ms: number) => Promise<StreamLoopRound> {
  const { sink, encode, rowEncoding } = countingSink(writer, schema, counter, network);
  // As MappingRun's: the mapping's spec the same object while the columns stay the same.
  const mapping: MappingSpec = { columns, captureUnmapped: true };
  const checkpoints = memoryCheckpoints();
  const recorded = pulls();
  return async (ms) => {
    const stop = new AbortController();
    const started = performance.now();
    let next = 0;
    let read = 0;
    let acked = 0;
    let maxUnacked = 0;
    let counted = 0;
    let from: number | undefined;
    let until: number | undefined;
    let cpuFrom: NodeJS.CpuUsage | undefined;
    let cpu: NodeJS.CpuUsage | undefined;
    const counting: RecordSink = {
      write: async (records, signal) => {
        const result = await sink.write(records, signal);
        acked += records.length;
        if (from !== undefined && until === undefined) counted += records.length;
        return result;
      },
    };
    /** The next pull's raw events, or undefined once the round is over (the loop is stopped then). */
    const nextPull = (): readonly Uint8Array[] | undefined => {
      const now = performance.now();
      if (from === undefined && now - started >= network.rttMs) {
        from = now;
        cpuFrom = process.cpuUsage();
      }
      if (from !== undefined && now - from >= ms) {
        until ??= now;
        cpu ??= process.cpuUsage(cpuFrom);
        stop.abort();
        return undefined;
      }
      const raw = recorded[next++ % recorded.length] ?? [];
      read += raw.length;
      maxUnacked = Math.max(maxUnacked, read - acked);
      onPull?.(read - acked);
      return raw;
    };
    const startAt = { kind: 'startAt', clusterTime: SNAPSHOT_START } as const;
    if (pool) {
      // The daemon with worker threads: the raw change cursor hands events over as their BSON bytes, and
      // the workers decode, map and encode them (prepareChanges), read ahead by their number.
      const source: ChangeSource<RawChangeBatch> = {
        open: () =>
          Promise.resolve({
            next: () => {
              const raw = nextPull() ?? [];
              return Promise.resolve({ changes: raw.map((bytes) => [bytes]), position: undefined });
            },
            close: () => Promise.resolve(),
          }),
        currentTime: () => Promise.resolve(SNAPSHOT_START),
      };
      const prepare = prepareChanges(pool, {
        current: () => ({ mapping, mapper, encoding: rowEncoding() }),
      });
      await runPreparedStreamLoop(
        { source, sink: counting, checkpoints, prepare, readAhead: pool.threads, window },
        startAt,
        stop.signal,
      );
    } else {
      const source: ChangeSource = {
        open: () =>
          Promise.resolve({
            next: () => {
              const raw = nextPull() ?? [];
              const decoded = raw.map((bytes) =>
                normalizeChangeEvent(deserialize(bytes, BSON_DECODE_OPTIONS)),
              );
              return Promise.resolve({ events: decoded, position: undefined });
            },
            close: () => Promise.resolve(),
          }),
        currentTime: () => Promise.resolve(SNAPSHOT_START),
      };
      await runStreamLoop(
        { source, sink: counting, checkpoints, mapper: () => mapper, encode, window },
        startAt,
        stop.signal,
      );
    }
    const elapsed = (until ?? performance.now()) - (from ?? started);
    const used = cpu ?? process.cpuUsage(cpuFrom);
    return {
      perSecond: (counted / elapsed) * 1000,
      cores: (used.user + used.system) / 1000 / elapsed,
      items: counted,
      // The counter counted the whole run's requests, the filling up and the drain included.
      wireItems: acked,
      maxUnacked,
    };
  };
}

interface RowRef {
  readonly encoded: EncodedChanges;
  readonly row: number;
}

/**
 * The parallel path's consumer, on this thread: the encoder's outputs in order, batched under the same
 * limits, each request assembled from the encoded rows and handed to the counting transport; the position
 * after each flush is the checkpoint.
 */
function consumer(writer: WriterKind, counter: WireCounter, network: SimulatedNetwork) {
  const appender = countingAppender(storageWriteDescriptor(schema), counter, network);
  const checkpoints = memoryCheckpoints();
  const send = async (rows: readonly RowRef[]): Promise<void> => {
    const parts = rows.map((ref) => encodedRow(ref.encoded, ref.row));
    if (writer === 'storage-write') {
      await appender.appendRows({ serializedRows: parts }).getResult();
    } else {
      counter.requests++;
      counter.bytes += insertAllRequestBody(parts).length;
      await answerAfter(network, undefined);
    }
  };
  return async (outputs: Iterable<EncodedChanges> | AsyncIterable<EncodedChanges>) => {
    const batcher = new Batcher<RowRef>(DEFAULT_BATCH_LIMITS);
    let readUpTo: Position | undefined;
    const flush = async () => {
      const { batches } = splitIntoBatches(batcher.take(), DEFAULT_BATCH_LIMITS);
      for (const batch of batches) await send(batch.map((entry) => entry.item));
      if (readUpTo) await checkpoints.save({ position: readUpTo }, NEVER);
    };
    for await (const encoded of outputs) {
      const now = Date.now();
      encoded.rowSizes.forEach((bytes, row) => {
        batcher.add({ encoded, row }, bytes, now);
      });
      const last = encoded.events.at(-1);
      if (last) readUpTo = { token: last.token, clusterTime: last.clusterTime };
      if (batcher.due(now)) await flush();
    }
    await flush();
  };
}

/** One pass of the parallel path over all events. */
function encoderPass(
  writer: WriterKind,
  encoder: ParallelChangeEncoder,
  counter: WireCounter,
  network: SimulatedNetwork,
) {
  const consume = consumer(writer, counter, network);
  return () => consume(encoder.encodeAll(pulls(), () => new Date()));
}

async function measure(
  path: string,
  threads: number,
  writer: WriterKind,
  network: SimulatedNetwork,
  round: (ms: number) => Promise<RoundResult>,
  counter: WireCounter,
) {
  // Warm-up: JIT, worker start-up, the writer's first connection.
  await round(ROUND_MS);
  const floors: number[] = [];
  const values: number[] = [];
  const cores: number[] = [];
  let wireBytes = 0;
  let handled = 0;
  for (let r = 0; r < ROUNDS; r++) {
    floors.push(throughput(events, floor, ROUND_MS));
    const bytesBefore = counter.bytes;
    const result = await round(ROUND_MS);
    values.push(result.perSecond);
    cores.push(result.cores);
    wireBytes += counter.bytes - bytesBefore;
    handled += result.wireItems ?? result.items;
  }
  floors.push(throughput(events, floor, ROUND_MS));
  const f = median(floors);
  const v = median(values);
  const ratio = bracketedRatio(floors, values);
  const bytesPerEvent = wireBytes / Math.max(1, handled);
  console.log(
    `${path.padEnd(12)} ${writer.padEnd(13)} workers ${threads}  rtt ${String(network.rttMs).padStart(3)} ms  floor ${Math.round(f).toLocaleString('en')}/s  ` +
      `pipeline ${Math.round(v).toLocaleString('en')}/s  ratio ${ratio.toFixed(2)}  ` +
      `CPU ${median(cores).toFixed(2)} cores  ${Math.round(bytesPerEvent)} B/event on the wire  load ${load()}`,
  );
  lines.push(
    JSON.stringify({
      bench: 'pipeline',
      path,
      writer,
      worker_threads: threads,
      rtt_ms: network.rttMs,
      floor_per_s: Math.round(f),
      value_per_s: Math.round(v),
      ratio: Number(ratio.toFixed(3)),
      cpu_cores: Number(median(cores).toFixed(2)),
      wire_bytes_per_event: Math.round(bytesPerEvent),
      semi_space_mb: SEMI_SPACE,
      pretenuring: PRETENURING,
      load_avg_1m: load(),
    }),
  );
}

/**
 * What each stage costs alone, in microseconds of one thread per event, each over the previous stage's
 * output; and the share of the parallel path that stays on this thread (batching, request assembly).
 */
async function stages(): Promise<void> {
  const ms = Math.max(200, ROUND_MS / 2);
  const us = (inputs: readonly unknown[], perInput: number, fn: (input: never) => unknown) =>
    1e6 / (median(Array.from({ length: ROUNDS }, () => throughput(inputs as never[], fn, ms))) * perInput);
  const rows500 = DEFAULT_BATCH_LIMITS.maxRows;
  const raws = events.map((bytes) => deserialize(bytes, BSON_DECODE_OPTIONS));
  const changes = raws.map((raw) => normalizeChangeEvent(raw));
  const writable = changes.filter((e) => e.kind === 'upsert' || e.kind === 'delete');
  const now = new Date();
  const rows = writable.map((event) => changeRecord(mapper, event, now).row());
  const batches: (typeof rows)[] = [];
  for (let i = 0; i < rows.length; i += rows500) batches.push(rows.slice(i, i + rows500));
  const rowEncoder = compileRowEncoder(schema);
  const result: Record<string, number> = {
    floor_us: us(events, 1, floor),
    decode_us: us(events, 1, (bytes: Uint8Array) => deserialize(bytes, BSON_DECODE_OPTIONS)),
    normalize_us: us(raws, 1, (raw: Record<string, unknown>) => normalizeChangeEvent(raw)),
    map_us: us(writable, 1, (event: (typeof writable)[number]) =>
      mapper.map(event.kind === 'upsert' ? event.document : { _id: event.documentId }),
    ),
    change_record_us: us(writable, 1, (event: (typeof writable)[number]) =>
      changeRecord(mapper, event, now).row(),
    ),
    row_bytes_us: us(rows, 1, (row: (typeof rows)[number]) => rowBytes(row)),
    protobuf_us: us(batches, rows500, (batch: typeof rows) => rowEncoder.encodeRows(batch)),
    insert_all_json_us: us(batches, rows500, (batch: typeof rows) =>
      Buffer.from(
        JSON.stringify({
          kind: 'bigquery#tableDataInsertAllRequest',
          skipInvalidRows: true,
          ignoreUnknownValues: false,
          rows: batch.map((row) => ({ insertId: row._event_id, json: row })),
        }),
      ),
    ),
  };
  for (const writer of WRITER_KINDS) {
    const outputs: EncodedChanges[] = [];
    const encode = compileChangeEncoder({ columns, format: writer, schema });
    for (let i = 0; i < events.length; i += DEFAULT_TASK_EVENTS) {
      outputs.push(encode(events.slice(i, i + DEFAULT_TASK_EVENTS), now));
    }
    const consume = consumer(writer, wireCounter(), { rttMs: 0 });
    const rates: number[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      rates.push((await throughputAsync(events.length, () => consume(outputs), ms)).perSecond);
    }
    result[`consumer_${writer.replace('-', '_')}_us`] = 1e6 / median(rates);
  }
  const rounded = Object.fromEntries(Object.entries(result).map(([k, v]) => [k, Number(v.toFixed(2))]));
  console.log(
    `stages alone, µs per event on one thread: ${Object.entries(rounded)
      .map(([k, v]) => `${k.replace(/_us$/, '')} ${v}`)
      .join(', ')}`,
  );
  // Each stage alone, without requests; the consumer stages' counting transport answers at once.
  lines.push(JSON.stringify({ bench: 'pipeline-stages', rtt_ms: 0, ...rounded, load_avg_1m: load() }));
}

/**
 * Must-show 2 of issue 11: peak RSS with BigQuery answering after BACKPRESSURE_RTT_MS and a source much
 * faster than it (the recording replayed as fast as it is read), against a bound that follows from the
 * window (rssBound): the loop stops pulling while the window is full, so what it holds stays bounded.
 * `max_rss_mb` is the peak sampled every 5 ms during the run.
 */
async function backpressure(): Promise<void> {
  const writer: WriterKind = 'storage-write';
  const network = { rttMs: BACKPRESSURE_RTT_MS };
  const counter = wireCounter();
  const rounds = streamLoopRounds(writer, counter, network, WINDOW);
  const { encode } = countingSink(writer, schema, wireCounter());
  const now = new Date();
  const sizes = events
    .map((bytes) => normalizeChangeEvent(deserialize(bytes, BSON_DECODE_OPTIONS)))
    .filter((e) => e.kind === 'upsert' || e.kind === 'delete')
    .map((event) => encode(changeRecord(mapper, event, now).row()).size);
  const largestRow = Math.max(...sizes);
  const meanRow = sizes.reduce((n, b) => n + b, 0) / Math.max(1, sizes.length);
  // The largest request of this recording: a full batch of its largest rows, within the request limit.
  const batchBytes = Math.min(DEFAULT_BATCH_LIMITS.maxBytes, DEFAULT_BATCH_LIMITS.maxRows * largestRow);
  await rounds(ROUND_MS);
  const baseline = rss();
  const sampler = new RssSampler(5);
  const result = await rounds(3 * ROUND_MS);
  const peak = sampler.stop();
  // V8's default semi-space is 16 MB; the young generation is two of them.
  const youngGeneration = 2 * (SEMI_SPACE ?? 16) * MB;
  const bound = rssBound({
    baselineBytes: baseline,
    youngGenerationBytes: youngGeneration,
    window: WINDOW,
    batchBytes,
    readAheadBytes: batchBytes + DEFAULT_STREAM_BATCH_SIZE * largestRow,
    perWireByte: RSS_PER_WIRE_BYTE,
  });
  // Events read and not yet acknowledged, at most: the window's requests full, one batch in hand, one pull.
  const unackedBound =
    WINDOW.maxRequests * DEFAULT_BATCH_LIMITS.maxRows +
    DEFAULT_BATCH_LIMITS.maxRows +
    DEFAULT_STREAM_BATCH_SIZE;
  const line = {
    bench: 'pipeline-backpressure',
    path: 'stream-loop',
    writer,
    rtt_ms: network.rttMs,
    window_requests: WINDOW.maxRequests,
    window_mb: WINDOW.maxBytes / 1_000_000,
    value_per_s: Math.round(result.perSecond),
    max_unacked_events: result.maxUnacked,
    unacked_bound_events: unackedBound,
    rss_start_mb: mb(baseline),
    max_rss_mb: mb(peak),
    rss_bound_mb: mb(bound),
    // How the bound is made (rssBound): start + young generation + factor × (window + read-ahead) wire bytes.
    young_generation_mb: mb(youngGeneration),
    window_wire_mb: Number((Math.min(WINDOW.maxBytes, WINDOW.maxRequests * batchBytes) / MB).toFixed(1)),
    read_ahead_wire_mb: Number(((batchBytes + DEFAULT_STREAM_BATCH_SIZE * largestRow) / MB).toFixed(1)),
    rss_per_wire_byte: RSS_PER_WIRE_BYTE,
    mean_row_wire_bytes: Math.round(meanRow),
    semi_space_mb: SEMI_SPACE,
    load_avg_1m: load(),
  };
  console.log(
    `backpressure ${writer.padEnd(13)} rtt ${network.rttMs} ms, window ${WINDOW.maxRequests} requests: ` +
      `${line.value_per_s.toLocaleString('en')} events/s, at most ${result.maxUnacked} events read ahead ` +
      `(bound ${unackedBound}), RSS ${line.rss_start_mb} MB at start, peak ${line.max_rss_mb} MB ` +
      `(bound ${line.rss_bound_mb} MB)`,
  );
  lines.push(JSON.stringify(line));
}

if (EVENTS > 0) {
  console.log(
    `${EVENTS.toLocaleString('en')} recorded change events (avg ${avgBytes} B BSON; ${Object.entries(
      OPERATION_MIX,
    )
      .map(([op, share]) => `${op} ${share * 100}%`)
      .join(', ')}), ${schema.length} top-level columns; ${ROUNDS} rounds of ${ROUND_MS} ms each; ` +
      `BigQuery answering after ${RTTS.join(', ')} ms`,
  );
  for (const writer of WRITERS) {
    for (const threads of PATHS.has('stream-loop') ? STREAM_LOOP_THREADS : []) {
      const pool = threads > 0 ? new EncoderPool({ threads }) : undefined;
      try {
        for (const rttMs of RTTS) {
          const counter = wireCounter();
          const network = { rttMs };
          await measure(
            'stream-loop',
            threads,
            writer,
            network,
            streamLoopRounds(writer, counter, network, WINDOW, undefined, pool),
            counter,
          );
        }
      } finally {
        await pool?.close();
      }
    }
    for (const threads of PATHS.has('encoder') ? [0, THREADS] : []) {
      const encoder = new ParallelChangeEncoder({ columns, format: writer, schema }, { threads });
      try {
        for (const rttMs of RTTS) {
          const counter = wireCounter();
          const network = { rttMs };
          await measure(
            'encoder',
            threads,
            writer,
            network,
            (ms) => throughputAsync(events.length, encoderPass(writer, encoder, counter, network), ms),
            counter,
          );
        }
      } finally {
        await encoder.close();
      }
    }
  }
  if (PATHS.has('stages')) await stages();
  if (PATHS.has('backpressure')) await backpressure();
}
for (const line of lines) console.log(line);
