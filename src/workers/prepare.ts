import {
  backfillRecord,
  changeRecord,
  isWritable,
  type EncodedRow,
  type HistoryRecord,
  type HistoryRow,
} from '../core/history-rows.js';
import { abortable } from '../core/deadline.js';
import { type ClusterTime } from '../core/model.js';
import { type RawChange, type RawChangeBatch, type SourceDocument } from '../core/ports.js';
import {
  type EncodingSpec,
  type MappingSpec,
  type Prepare,
  type PreparedBatch,
  type PreparedChange,
  type RowEncoding,
} from '../core/prepared.js';
import { ArchiverError, DISPOSITIONS, ERROR_CODES, type Disposition, type ErrorCode } from '../errors.js';
import { decodeDocument } from '../mongodb/raw-documents.js';
import { type RowMapper } from '../transform/row-mapper.js';
import {
  CompiledConfigs,
  decodeChange,
  EncodedRowsReader,
  encodeChanges,
  encodeDocuments,
  fragmentCounts,
  packDocuments,
  taskTransferables,
  type ChangesResult,
  type ChangesTask,
  type DocumentsResult,
  type DocumentsTask,
  type EncodeResult,
  type EncodeTask,
} from './encode-tasks.js';
import { siblingModule, WorkerPool, WorkerTaskError } from './pool.js';

/** What rows are mapped and encoded with at one time: the spec a worker compiles, and this thread's own. */
export interface PrepareState {
  readonly mapping: MappingSpec;
  readonly mapper: RowMapper;
  readonly encoding: RowEncoding;
}

/** Where prepared rows take their mapping and encoding from, and who evolves the schema. */
export interface PrepareContext {
  /** What rows are mapped and encoded with now; the same objects as long as nothing changed. */
  current(): PrepareState;
  /** add_columns: evolve for these documents (the schema coordinator); current() then changes. */
  evolve?(documents: readonly SourceDocument[], signal: AbortSignal): Promise<void>;
}

/** Runs tasks and names configs: on worker threads (EncoderPool) or on this thread. */
interface TaskRunner {
  configId(mapping: MappingSpec, encoding: EncodingSpec): number;
  changes(task: ChangesTask): Promise<ChangesResult>;
  documents(task: DocumentsTask): Promise<DocumentsResult>;
}

/** Config ids by the identity of the specs: the same objects as long as nothing changed (see PrepareContext). */
class ConfigIds {
  readonly #ids = new WeakMap<MappingSpec, WeakMap<EncodingSpec, number>>();
  #next = 0;

  of(mapping: MappingSpec, encoding: EncodingSpec): number {
    let byEncoding = this.#ids.get(mapping);
    if (!byEncoding) {
      byEncoding = new WeakMap();
      this.#ids.set(mapping, byEncoding);
    }
    let id = byEncoding.get(encoding);
    if (id === undefined) {
      id = this.#next++;
      byEncoding.set(encoding, id);
    }
    return id;
  }
}

/**
 * Worker threads that decode, map and encode (src/workers/encode-worker.ts), shared by every mapping of the
 * daemon: each worker compiles a mapping and encoding once (by config id) and keeps the most recent ones. A
 * worker that dies once it was ready is started again (only the tasks it held fail); one that dies before
 * it was ready (its module cannot load) fails the pool, and every later call rejects.
 */
export class EncoderPool implements TaskRunner {
  readonly #pool: WorkerPool<EncodeTask, EncodeResult>;
  readonly #ids = new ConfigIds();

  constructor(options: { readonly threads: number }) {
    this.#pool = new WorkerPool({
      module: siblingModule(import.meta.url, 'encode-worker'),
      threads: options.threads,
      restart: true,
    });
  }

  get threads(): number {
    return this.#pool.threads;
  }

  /** Workers started again after they died. */
  get restarts(): number {
    return this.#pool.restarts;
  }

  /** Why every call rejects, once the pool failed (a worker died before it was ready). */
  get failure(): Error | undefined {
    return this.#pool.failure;
  }

  configId(mapping: MappingSpec, encoding: EncodingSpec): number {
    return this.#ids.of(mapping, encoding);
  }

  async changes(task: ChangesTask): Promise<ChangesResult> {
    const result = await this.#run(task);
    if (result.kind !== 'changes') throw new Error(`a changes task came back as ${result.kind}`);
    return result;
  }

  async documents(task: DocumentsTask): Promise<DocumentsResult> {
    const result = await this.#run(task);
    if (result.kind !== 'documents') throw new Error(`a documents task came back as ${result.kind}`);
    return result;
  }

  close(): Promise<void> {
    return this.#pool.close();
  }

  async #run(task: EncodeTask): Promise<EncodeResult> {
    try {
      return await this.#pool.run({ value: task, transfer: taskTransferables(task) });
    } catch (error) {
      throw fromWorker(error);
    }
  }
}

const KNOWN_CODES = new Set<string>(Object.values(ERROR_CODES));
const KNOWN_DISPOSITIONS = new Set<string>(DISPOSITIONS);

/**
 * One of our errors thrown in a worker (a malformed change event, a schema Storage Write cannot take)
 * becomes one again here, with its code and disposition, so that the restart policy reads it as it would
 * have on this thread; anything else stays the WorkerTaskError it is.
 */
function fromWorker(error: unknown): unknown {
  if (!(error instanceof WorkerTaskError)) return error;
  const { code, disposition } = error;
  if (code === undefined || disposition === undefined) return error;
  if (!KNOWN_CODES.has(code) || !KNOWN_DISPOSITIONS.has(disposition)) return error;
  return new ArchiverError(code as ErrorCode, disposition as Disposition, error.remoteMessage, {
    cause: error,
  });
}

/** The same work on this thread: one core, or tests. */
class InThreadRunner implements TaskRunner {
  readonly #configs = new CompiledConfigs();
  readonly #ids = new ConfigIds();

  configId(mapping: MappingSpec, encoding: EncodingSpec): number {
    return this.#ids.of(mapping, encoding);
  }

  changes(task: ChangesTask): Promise<ChangesResult> {
    return new Promise((resolve) => {
      resolve(encodeChanges(task, this.#configs));
    });
  }

  documents(task: DocumentsTask): Promise<DocumentsResult> {
    return new Promise((resolve) => {
      resolve(encodeDocuments(task, this.#configs));
    });
  }
}

function sameState(a: PrepareState, b: PrepareState): boolean {
  return a.mapping === b.mapping && a.mapper === b.mapper && a.encoding === b.encoding;
}

/** Calls finished in the order they were made: each waits for the ones before it (failed or not). */
class Turns {
  #last: Promise<void> = Promise.resolve();

  /** `ready` resolves once every earlier turn ended; `end` ends this one. */
  take(): { readonly ready: Promise<void>; readonly end: () => void } {
    const ready = this.#last;
    let end: () => void = () => undefined;
    this.#last = new Promise((resolve) => {
      end = resolve;
    });
    return { ready, end };
  }
}

/** Its rejection is seen when it is awaited, later: until then it must not count as unhandled. */
function awaitedLater<T>(promise: Promise<T>): Promise<T> {
  promise.catch(() => undefined);
  return promise;
}

/**
 * Runs one batch's task until its result stands: mapped with what is current once it is its turn
 * (`ready`), and with no document asking for columns planning would add (it is evolved here, on this
 * thread, then run again). Several may overlap; each starts its task at once, with the state current then.
 */
async function settle<R extends { readonly evolve: boolean }>(
  context: PrepareContext,
  run: (state: PrepareState, checkEvolution: boolean) => Promise<R>,
  documents: () => readonly SourceDocument[],
  ready: Promise<void>,
  signal: AbortSignal,
): Promise<{ readonly state: PrepareState; readonly result: R }> {
  let check = context.evolve !== undefined;
  let state = context.current();
  let attempt = awaitedLater(run(state, check));
  await ready;
  for (;;) {
    const result = await attempt;
    // Stopped: the caller has its rejection already (see prepareChanges); nothing more to run for it.
    signal.throwIfAborted();
    const current = context.current();
    if (!sameState(current, state)) {
      // Another batch evolved the schema (or the writer changed) while this one ran: mapped again, so that
      // no row goes out with columns older than what a batch before it made.
      state = current;
      attempt = run(state, check);
      continue;
    }
    if (!result.evolve) return { state, result };
    await context.evolve?.(documents(), signal);
    // Evolved for these documents: what planning would still add, the table turned down; not asked again.
    check = false;
    state = context.current();
    attempt = run(state, check);
  }
}

/**
 * Prepares raw change batches (a raw change cursor's pulls) into PreparedBatches: decoded, mapped and
 * encoded on the pool's workers (on this thread without a pool). Batches resolve in call order; each is
 * mapped and encoded with the state current when its turn comes, evolved first when a document asks for
 * new columns. A task that fails rejects its own batch only.
 */
export function prepareChanges(
  pool: EncoderPool | undefined,
  context: PrepareContext,
): Prepare<RawChangeBatch> {
  const runner: TaskRunner = pool ?? new InThreadRunner();
  const turns = new Turns();
  const prepareOne = async (
    batch: RawChangeBatch,
    now: Date,
    signal: AbortSignal,
  ): Promise<PreparedBatch> => {
    const turn = turns.take();
    try {
      // A pull already given up (a stop) is not worth a worker's time.
      signal.throwIfAborted();
      if (batch.changes.length === 0) {
        // An idle pull: nothing to hand a worker, but its position still comes after the batches before it.
        await turn.ready;
        return { changes: [], position: batch.position };
      }
      const nowMs = now.getTime();
      const fragments = fragmentCounts(batch.changes);
      const run = (state: PrepareState, checkEvolution: boolean) =>
        runner.changes({
          kind: 'changes',
          configId: runner.configId(state.mapping, state.encoding.spec),
          mapping: state.mapping,
          encoding: state.encoding.spec,
          nowMs,
          checkEvolution,
          // Packed for each run: the run transfers its buffers away.
          bytes: packDocuments(batch.changes.flat()),
          fragments: fragments.slice(),
        });
      const upserts = () =>
        batch.changes.map(decodeChange).flatMap((event) => (event.kind === 'upsert' ? [event.document] : []));
      const { state, result } = await settle(context, run, upserts, turn.ready, signal);
      return preparedBatch(batch, result, state, now);
    } finally {
      turn.end();
    }
  };
  // A stop rejects at once (the stream loop then leaves the batch unread); the work under way finishes
  // unseen, and only then is it the next call's turn.
  return (batch, now, signal) => abortable(prepareOne(batch, now, signal), signal);
}

function preparedBatch(
  batch: RawChangeBatch,
  result: ChangesResult,
  state: PrepareState,
  now: Date,
): PreparedBatch {
  if (result.changes.length !== batch.changes.length) {
    throw new Error(`${batch.changes.length} changes were prepared as ${result.changes.length}`);
  }
  const rows = new EncodedRowsReader(result.rows);
  // One object per change, always of the same shape.
  const changes = result.changes.map((summary, k): PreparedChange => ({
    kind: summary.kind,
    operationType: summary.operationType,
    token: summary.token,
    clusterTime: summary.clusterTime,
    split: summary.split,
    record:
      summary.row < 0
        ? undefined
        : new RawChangeRecord(
            rows,
            summary.row,
            state.encoding.wrap(rows.bytes(summary.row), rows.size(summary.row), rows.schema(summary.row)),
            // The cursor's slices of its reply: a reply holds about one pull (the cursor asks for a pull's
            // worth), so keeping it while the pull's rows are in flight keeps about their own bytes alive,
            // and copying them out would cost a copy of every change on this thread.
            batch.changes[k] ?? [],
            state.mapper,
            now,
          ),
  }));
  return { changes, position: batch.position };
}

/**
 * A change's history record held as its BSON (the cursor's slices, outside the JavaScript heap): its ids and
 * encoding came from the worker; its row and dead-letter text are built again from the bytes, with the
 * mapper and time of its preparation, only when asked (a writer that must rebuild it, a dead letter).
 */
class RawChangeRecord implements HistoryRecord {
  readonly #rows: EncodedRowsReader;
  readonly #row: number;
  readonly #raw: RawChange;
  readonly #mapper: RowMapper;
  readonly #now: Date;

  constructor(
    rows: EncodedRowsReader,
    row: number,
    readonly encoded: EncodedRow,
    raw: RawChange,
    mapper: RowMapper,
    now: Date,
  ) {
    this.#rows = rows;
    this.#row = row;
    this.#raw = raw;
    this.#mapper = mapper;
    this.#now = now;
  }

  /** Read from the worker's buffer when asked (dead letters, a row built again), not for every change. */
  get eventId(): string {
    return this.#rows.eventId(this.#row);
  }

  get docId(): string | null {
    return this.#rows.docId(this.#row);
  }

  row(): HistoryRow {
    return this.#decoded().row();
  }

  document(): string {
    return this.#decoded().document();
  }

  #decoded(): HistoryRecord {
    const event = decodeChange(this.#raw);
    if (!isWritable(event)) throw new Error(`a ${event.kind} change has no history row`);
    return changeRecord(this.#mapper, event, this.#now);
  }
}

/**
 * Prepares the documents of backfill chunks (BSON, as SnapshotSource.nextRawChunk reads them) into history
 * records: decoded, mapped and encoded on the pool's workers (on this thread without a pool). Chunks may be
 * prepared concurrently and resolve as they are done: each is mapped with the state current when it is
 * done, evolved first when a document asks for new columns.
 */
export function prepareDocuments(
  pool: EncoderPool | undefined,
  context: PrepareContext,
  snapshotStart: ClusterTime,
): (documents: readonly Uint8Array[], now: Date, signal: AbortSignal) => Promise<readonly HistoryRecord[]> {
  const runner: TaskRunner = pool ?? new InThreadRunner();
  const prepareChunk = async (
    documents: readonly Uint8Array[],
    now: Date,
    signal: AbortSignal,
  ): Promise<readonly HistoryRecord[]> => {
    if (documents.length === 0) return [];
    const nowMs = now.getTime();
    const run = (state: PrepareState, checkEvolution: boolean) =>
      runner.documents({
        kind: 'documents',
        configId: runner.configId(state.mapping, state.encoding.spec),
        mapping: state.mapping,
        encoding: state.encoding.spec,
        nowMs,
        checkEvolution,
        bytes: packDocuments(documents),
        snapshotStart,
      });
    const decoded = () => documents.map(decodeDocument);
    const { state, result } = await settle(context, run, decoded, Promise.resolve(), signal);
    if (result.rows.count !== documents.length) {
      throw new Error(`${documents.length} documents were prepared as ${result.rows.count} rows`);
    }
    const rows = new EncodedRowsReader(result.rows);
    return documents.map((raw, k) => {
      const encoded = state.encoding.wrap(rows.bytes(k), rows.size(k), rows.schema(k));
      return new RawDocumentRecord(
        rows.eventId(k),
        rows.docId(k),
        encoded,
        raw,
        state.mapper,
        snapshotStart,
        now,
      );
    });
  };
  // As prepareChanges: a stop rejects at once.
  return (documents, now, signal) => abortable(prepareChunk(documents, now, signal), signal);
}

/** A backfilled document's history record held as its BSON; as RawChangeRecord. */
class RawDocumentRecord implements HistoryRecord {
  readonly #raw: Uint8Array;
  readonly #mapper: RowMapper;
  readonly #snapshotStart: ClusterTime;
  readonly #now: Date;

  constructor(
    readonly eventId: string,
    readonly docId: string | null,
    readonly encoded: EncodedRow,
    raw: Uint8Array,
    mapper: RowMapper,
    snapshotStart: ClusterTime,
    now: Date,
  ) {
    this.#raw = raw;
    this.#mapper = mapper;
    this.#snapshotStart = snapshotStart;
    this.#now = now;
  }

  row(): HistoryRow {
    return this.#decoded().row();
  }

  document(): string {
    return this.#decoded().document();
  }

  #decoded(): HistoryRecord {
    return backfillRecord(this.#mapper, decodeDocument(this.#raw), this.#snapshotStart, this.#now);
  }
}
