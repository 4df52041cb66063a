import { setMaxListeners } from 'node:events';
import { setImmediate as yieldToEventLoop } from 'node:timers/promises';
import { type RowMapper } from '../transform/row-mapper.js';
import {
  abortable,
  DEFAULT_CHECKPOINT_SAVE_TIMEOUT_MS,
  within,
  DEFAULT_FINAL_FLUSH_TIMEOUT_MS,
  deadlineAfter,
} from './deadline.js';
import { Batcher, DEFAULT_BATCH_LIMITS, type BatchLimits } from './batcher.js';
import {
  changeRecord,
  isWritable,
  type EncodedRow,
  type HistoryRecord,
  type HistoryRow,
} from './history-rows.js';
import { operationTypeOf, type ChangeEvent, type Position } from './model.js';
import { type PreparedBatch, type PreparedChange, type Prepare } from './prepared.js';
import { DEFAULT_IDLE_CHECKPOINT_INTERVAL_MS } from './settings.js';
import { CoalescedTask } from './coalesced.js';
import { Watermark } from './watermark.js';
import { DEFAULT_WINDOW_LIMITS, InFlightWindow, type WindowLimits } from './window.js';
import {
  SYSTEM_CLOCK,
  type ChangeBatch,
  type ChangeSource,
  type CheckpointStore,
  type Clock,
  type StreamStart,
} from './ports.js';

/** What the loop hands BigQuery; resolves once every record is in the history or the dead-letter table. */
export interface RecordSink {
  write(
    records: readonly HistoryRecord[],
    signal?: AbortSignal,
  ): Promise<{ readonly written: number; readonly deadLettered: number }>;
}

export const DEFAULT_STREAM_BATCH_SIZE = 1_000;

/**
 * Abort listeners one write may add to the signal it is given (the sink's backoff, the writer's request,
 * their deadlines), and the loop's own: Node warns of a leak past the limit, which a window of writes, each
 * listening, would otherwise pass.
 */
const LISTENERS_PER_WRITE = 4;
const LISTENERS_OF_THE_LOOP = 10;

/**
 * What the loop reports as it reads, for metrics (the app layer adapts it). Rows are reported by the sink
 * when BigQuery acknowledges them, checkpoints by the checkpoint store that saves them.
 */
export interface StreamObserver {
  /** `count` change events of one MongoDB operation type were read (reported once per pull). */
  eventsRead(operation: string, count: number): void;
  /** An update whose full document was already gone when MongoDB looked it up (no row is written). */
  lookupMissed(): void;
}

/** What every stream loop takes, whatever its cursor returns and however it is prepared. */
interface LoopOptions {
  readonly sink: RecordSink;
  readonly checkpoints: CheckpointStore;
  readonly limits?: BatchLimits;
  /** Events asked for per pull (the change stream's batchSize). */
  readonly batchSize?: number;
  readonly clock?: Clock;
  readonly observer?: StreamObserver;
  /**
   * How long flushing may go on after `signal` aborts (or after a write failed: the wait for the others);
   * default DEFAULT_FINAL_FLUSH_TIMEOUT_MS.
   */
  readonly finalFlushTimeoutMs?: number;
  /** Writes (and their bytes) in flight at once; default DEFAULT_WINDOW_LIMITS. */
  readonly window?: WindowLimits;
  /**
   * The least time between a save and the next one that covers no new rows (an idle stream's post-batch
   * position, ignored events), so that idle mappings do not write a checkpoint on every pull; default
   * DEFAULT_IDLE_CHECKPOINT_INTERVAL_MS. A position covering rows is saved as soon as they are acknowledged,
   * and a stop saves the newest acknowledged position whatever this says: it bounds only how much of an
   * idle stretch a restart reads again (nothing it would write).
   */
  readonly idleCheckpointIntervalMs?: number;
}

/** The loop over decoded events, mapped on this thread (runStreamLoop). */
export interface StreamLoopOptions extends LoopOptions {
  readonly source: ChangeSource;
  /** Current mapper; read for every event, so a schema evolution can swap it. */
  readonly mapper: () => RowMapper;
  /** Before events are mapped: a chance to evolve the schema for the documents they carry. */
  readonly beforeMap?: (events: readonly ChangeEvent[], signal: AbortSignal) => Promise<void>;
  /**
   * The row as the sink's writer sends it, with its size in the writer's requests, for the batch limits:
   * batches hold this rather than the row object. Default: only the size, its JSON length (rowBytes).
   */
  readonly encode?: (row: HistoryRow) => EncodedRow;
}

/**
 * The loop over whatever its cursor returns, prepared by `prepare` (runPreparedStreamLoop): raw events
 * decoded, mapped and encoded on worker threads, say.
 */
export interface PreparedStreamLoopOptions<B> extends LoopOptions {
  readonly source: ChangeSource<B>;
  readonly prepare: Prepare<B>;
  /**
   * Pulls read and prepared ahead of the one being batched and sent (default 0: the next pull starts once
   * this one is handled). With preparation on other threads, a read-ahead of their number keeps them busy
   * while this thread batches and sends; a full window still stops the reading (each pull is at most
   * `batchSize` events, so this bounds what waits beyond the window).
   */
  readonly readAhead?: number;
}

/** How the loop ended when it was not aborted. */
export interface CollectionGone {
  readonly kind: 'collection-gone';
  /** Continue with `startAfter` this position: a re-created collection is archived again. */
  readonly position: Position;
}

/**
 * The streaming half of a mapping: pulls change batches, maps them to history rows, sends them to the sink
 * in batches (rows, bytes, linger), and saves the position only after the sink acknowledged everything up
 * to it. An idle stream still advances its checkpoint, at most once per `idleCheckpointIntervalMs` (checked
 * after every pull: an idle change stream answers about once a second), as an `idle` checkpoint. Ends when
 * `signal` aborts (after flushing what was read and saving the newest acknowledged position) or when the
 * collection is dropped, renamed or invalidated.
 *
 * Writes are pipelined: a batch that is due goes to the sink without waiting for the ones before it, up to
 * the in-flight window (requests and bytes); while the window is full the loop stops pulling (backpressure),
 * otherwise it reads and maps ahead. Each batch takes a watermark ticket with the position it covers up to,
 * and the checkpoint saved is always the watermark: the end of the longest acknowledged prefix, never past a
 * batch still out or failed. Saves are one at a time, each of the newest watermark (coalesced). The first
 * failure stops the reading; what is in flight is awaited (within the final flush's deadline), the
 * acknowledged prefix saved, and that first failure thrown.
 */
export function runStreamLoop(
  options: StreamLoopOptions,
  start: StreamStart,
  signal: AbortSignal,
): Promise<CollectionGone | undefined> {
  return runPreparedStreamLoop({ ...options, prepare: prepareInThread(options) }, start, signal);
}

/**
 * Prepares decoded events on this thread: the schema evolves for their documents first (`beforeMap`), then
 * each writable event becomes its history record, its row encoded at once by `encode` (the row object is
 * garbage at once; the batch holds the encoding).
 */
export function prepareInThread(
  options: Pick<StreamLoopOptions, 'mapper' | 'beforeMap' | 'encode'>,
): Prepare<ChangeBatch> {
  const encode = options.encode ?? sizeOnly;
  return async (batch, now, signal) => {
    if (batch.events.length > 0) await options.beforeMap?.(batch.events, signal);
    // One object per change, always of the same shape.
    const changes = batch.events.map((event): PreparedChange => ({
      kind: event.kind,
      operationType: operationTypeOf(event),
      token: event.token,
      clusterTime: event.clusterTime,
      split: event.split === true,
      record: isWritable(event) ? changeRecord(options.mapper(), event, now, encode) : undefined,
    }));
    return { changes, position: batch.position };
  };
}

/**
 * runStreamLoop over any cursor and preparation: see runStreamLoop for what it does. With `readAhead`, the
 * next pulls are read and prepared while this one is batched and sent.
 */
export async function runPreparedStreamLoop<B>(
  options: PreparedStreamLoopOptions<B>,
  start: StreamStart,
  signal: AbortSignal,
): Promise<CollectionGone | undefined> {
  const clock = options.clock ?? SYSTEM_CLOCK;
  const batcher = new Batcher<HistoryRecord>(options.limits ?? DEFAULT_BATCH_LIMITS);
  const window = new InFlightWindow(options.window ?? DEFAULT_WINDOW_LIMITS);
  const observer = options.observer;
  let readUpTo: Position | undefined = start.kind === 'startAt' ? undefined : start.position;
  /** The last change read whose position `readUpTo` does not hold yet (see catchUp). */
  let readTo: PreparedChange | undefined;
  /** `readUpTo` becomes the position of the last change read (made once, not for every change). */
  const catchUp = (): void => {
    if (readTo === undefined) return;
    readUpTo = positionOf(readTo);
    readTo = undefined;
  };
  /** Batches of rows handed to the sink so far (a save past more of them than the last one covers rows). */
  let batches = 0;
  const watermark = new Watermark<Reached>(readUpTo && { position: readUpTo, batches });
  /** The last position handed to the watermark (with a batch or marked), so an idle stream marks it once. */
  let issued = readUpTo;
  let saved: Position | undefined = readUpTo;
  /** The batches the last save covered: a watermark past no more of them covers no new rows. */
  let savedBatches = batches;
  let savedAt = clock.now();
  const idleInterval = options.idleCheckpointIntervalMs ?? DEFAULT_IDLE_CHECKPOINT_INTERVAL_MS;
  /** Set as the loop drains: the newest acknowledged position is saved, idle or not. */
  let stopping = false;
  // Some servers (mongo-java-server) answer a resume after a drop with an invalidate carrying the very token
  // we resumed from. It is not a change: a marker for it would hide the documents of a re-created collection.
  const resumedFrom = start.kind === 'startAt' ? undefined : start.position.token;
  const cursor = await options.source.open(start, signal);
  // The first failure (a write, a save, the source) halts the reading at once, as a stop does.
  const halt = new AbortController();
  const pulling = AbortSignal.any([signal, halt.signal]);
  // Stopping ends the reading at once, but not the writing: what was read is written and checkpointed, so
  // the next owner need not read it again. Writes and saves get their own signal, which aborts only once the
  // stop (or the failure that halted the reading) is older than the final flush's deadline.
  const flushing = deadlineAfter(pulling, options.finalFlushTimeoutMs ?? DEFAULT_FINAL_FLUSH_TIMEOUT_MS);
  // Every write out listens to it (the sink's retries, the writer's request): as many as the window lets out.
  setMaxListeners(LISTENERS_PER_WRITE * window.limits.maxRequests + LISTENERS_OF_THE_LOOP, flushing.signal);
  // A batch waits for room in the window until the deadline, or no longer than a failure.
  const admitting = AbortSignal.any([halt.signal, flushing.signal]);
  const inFlight = new Set<Promise<void>>();
  let failure: { readonly error: unknown } | undefined;

  const fail = (error: unknown): void => {
    // The sink's or the store's reaction to the deadline says less than the deadline itself.
    failure ??= { error: flushing.signal.aborted ? flushing.signal.reason : error };
    halt.abort(failure.error);
  };

  /** The watermark, when it is past the last save. */
  const unsaved = (): Reached | undefined => {
    const reached = watermark.position;
    return reached === undefined || reached.position.token === saved?.token ? undefined : reached;
  };
  /** Whether a save covering no new rows may go now. */
  const idleSaveDue = (): boolean => stopping || clock.now() - savedAt >= idleInterval;

  // Saves the watermark, one save at a time: one that ends with the watermark moved again saves once more.
  // A watermark that passed no new batch waits for the idle interval (or the stop).
  const saver = new CoalescedTask(async () => {
    const reached = unsaved();
    if (flushing.signal.aborted || reached === undefined) return;
    const idle = reached.batches === savedBatches;
    if (idle && !idleSaveDue()) return;
    savedAt = clock.now();
    const { position } = reached;
    await options.checkpoints.save(
      idle ? { position, idle } : { position },
      within(flushing.signal, DEFAULT_CHECKPOINT_SAVE_TIMEOUT_MS),
    );
    saved = position;
    savedBatches = reached.batches;
  }, fail);
  const requestSave = (): void => {
    saver.request();
  };
  /** An idle position the watermark holds is saved once the interval since the last save is over. */
  const saveIfIdleDue = (): void => {
    if (unsaved() !== undefined && idleSaveDue()) requestSave();
  };

  /**
   * A position reached with nothing to send: it passes the watermark once every batch before it is
   * acknowledged (and their save carries it); on its own it is saved when the idle interval is over.
   */
  const mark = (): void => {
    catchUp();
    if (readUpTo === undefined || readUpTo.token === issued?.token) return;
    issued = readUpTo;
    watermark.mark({ position: readUpTo, batches });
  };

  /**
   * Hands the batch in hand to the sink once the window has room for it, with a ticket for the position
   * read up to; false when it could not go (a failure, or the final flush's deadline).
   */
  const send = async (): Promise<boolean> => {
    if (batcher.size === 0) return true;
    const bytes = batcher.bytes;
    try {
      await window.acquire(bytes, admitting);
    } catch (error) {
      // Halted by a failure (already recorded), or out of time: the rows in hand are read again later.
      fail(error);
      return false;
    }
    const records = batcher.take().map((entry) => entry.item);
    catchUp();
    batches++;
    const ticket = watermark.issue(readUpTo && { position: readUpTo, batches });
    issued = readUpTo;
    // Called at once; a sink that throws instead of rejecting fails its batch the same way.
    const written = (async () => options.sink.write(records, flushing.signal))();
    const settled = written.then(
      () => {
        window.release(bytes);
        if (watermark.done(ticket)) requestSave();
      },
      (error: unknown) => {
        window.release(bytes);
        watermark.fail(ticket);
        fail(error);
      },
    );
    inFlight.add(settled);
    void settled.finally(() => inFlight.delete(settled));
    // Answers already in (and other mappings) are handled before reading on: read-ahead is for the time
    // requests spend on the network, not for racing ahead of writes that have work to do. Rows held
    // longer survive more garbage collections, which costs more than the turn.
    await yieldToEventLoop();
    return true;
  };

  /**
   * Waits for every write out and the saves their acknowledgements call for (bounded by the final flush's
   * deadline); throws the first failure, if any.
   */
  const drain = async (): Promise<void> => {
    try {
      while (inFlight.size > 0) await abortable(Promise.all(inFlight), flushing.signal);
    } catch {
      fail(flushing.signal.reason);
    }
    stopping = true;
    requestSave();
    // A save that ends with the watermark moved starts the next one as it ends. A store that does not
    // honour the deadline is not waited for past it.
    for (let running = saver.running; running && !flushing.signal.aborted; running = saver.running) {
      try {
        await abortable(running, flushing.signal);
      } catch {
        fail(flushing.signal.reason);
      }
    }
    if (failure) throw failure.error;
  };

  // Pulls run one after another (a cursor is sequential); each one's preparation starts as it arrives, so
  // with read-ahead the next pulls are prepared (on other threads) while this one is batched and sent. The
  // read-ahead stops with the loop: what it read and the loop did not take is read again after a restart.
  const readingAhead = new AbortController();
  const pullSignal = AbortSignal.any([pulling, readingAhead.signal]);
  const ahead: Promise<PreparedBatch>[] = [];
  let lastPull: Promise<unknown> = Promise.resolve();
  const pull = (): void => {
    // A failed pull fails every later one without calling the cursor again.
    const pulled = lastPull.then(() =>
      cursor.next(options.batchSize ?? DEFAULT_STREAM_BATCH_SIZE, pullSignal),
    );
    lastPull = pulled;
    const prepared = pulled.then((batch) => options.prepare(batch, new Date(clock.now()), pullSignal));
    // Rejections are handled where each is taken; those never taken (the loop ended) are not unhandled.
    prepared.catch(() => undefined);
    ahead.push(prepared);
  };
  const depth = 1 + Math.max(0, options.readAhead ?? 0);
  // Each pull and preparation out listens to it (a worker's task, the cursor's command).
  setMaxListeners(LISTENERS_PER_WRITE * depth + LISTENERS_OF_THE_LOOP, pullSignal);

  try {
    reading: while (!pulling.aborted) {
      while (ahead.length < depth) pull();
      let batch: PreparedBatch;
      try {
        // Aborting interrupts the pull and the preparation (a schema evolution under way leaves this batch
        // unread: its position is not saved, and what was read before it is still flushed).
        batch = await (ahead.shift() ?? Promise.reject(new Error('unreachable: a pull is always ahead')));
      } catch (error) {
        // Aborting interrupts the pull; anything else is the source's (or the preparation's) failure.
        if (!isAborted(pulling)) fail(error);
        break;
      }
      let gone: CollectionGone | undefined;
      const read = new Map<string, number>();
      // One time for the batch's rows (the linger counts from a batch's first row; a pull takes no time).
      const addedAt = clock.now();
      for (const change of batch.changes) {
        read.set(change.operationType, (read.get(change.operationType) ?? 0) + 1);
        switch (change.kind) {
          case 'collection-gone':
          case 'upsert':
          case 'delete': {
            if (change.kind === 'collection-gone' && change.token === resumedFrom) break;
            const record = change.record;
            if (record === undefined) {
              fail(new Error(`unreachable: a prepared ${change.kind} change without its record`));
              break reading;
            }
            const bytes = record.encoded?.size ?? 0;
            // Full batches leave as they fill, each one request of the sink, so that a pull of many
            // changes becomes several requests in flight together.
            if (!batcher.fits(bytes) && !(await send())) break reading;
            batcher.add(record, bytes, addedAt);
            break;
          }
          case 'lookup-missed':
            // The document was deleted after this update; its delete event follows in the stream.
            observer?.lookupMissed();
            break;
          case 'ignored':
            break;
          default:
            change.kind satisfies never;
        }
        // A split event's own token is no safe place to resume from: the batch's position (the change
        // before it, or a later one) stands for it, and where the source has none nothing is saved for it.
        // Its position is made only when something needs it (a send, the end of the pull).
        if (change.split !== true) readTo = change;
        if (change.kind === 'collection-gone') {
          catchUp();
          gone = { kind: 'collection-gone', position: positionOf(change) };
          break;
        }
      }
      catchUp();
      for (const [operation, count] of read) observer?.eventsRead(operation, count);
      // An idle stream opened after an invalidate reports the invalidate's own token as its post-batch
      // position: that is still the invalidate, to be continued from with startAfter.
      if (!gone && batch.position)
        readUpTo = batch.position.token === readUpTo?.token ? readUpTo : batch.position;
      if ((gone || batch.changes.length === 0 || batcher.due(clock.now())) && !(await send())) break;
      // Read past the last batch (ignored events, lookup misses, an idle stream's post-batch token).
      if (batcher.size === 0) mark();
      // An idle position, marked now or earlier (the token need not move again), is saved once the interval
      // since the last save is over.
      saveIfIdleDue();
      if (gone) {
        await drain();
        return gone;
      }
    }
    if (!failure && (await send())) mark();
    await drain();
    return undefined;
  } finally {
    flushing.dispose();
    readingAhead.abort();
    // The pulls and preparations still out end (aborted) before their cursor closes.
    await Promise.allSettled(ahead);
    await cursor.close();
  }
}

/** A position the watermark passed, and how many batches of rows had been handed out up to it. */
interface Reached {
  readonly position: Position;
  readonly batches: number;
}

/** The position of a change: an invalidate's is marked, as only `startAfter` may continue from it. */
function positionOf(change: PreparedChange): Position {
  return change.kind === 'collection-gone' && change.operationType === 'invalidate'
    ? { token: change.token, clusterTime: change.clusterTime, invalidate: true }
    : { token: change.token, clusterTime: change.clusterTime };
}

/**
 * Where a stream continues from a saved position: after an invalidate only `startAfter` is accepted; a
 * database-level stream's position (`shared`) at its cluster time, since another stream may not contain
 * its change.
 */
export function resumeFrom(position: Position): StreamStart {
  if (position.invalidate) return { kind: 'startAfter', position };
  if (position.shared) return { kind: 'startAt', clusterTime: position.clusterTime };
  return { kind: 'resumeAfter', position };
}

/** Read anew after an await (a property check would be narrowed by the loop's condition). */
function isAborted(signal: AbortSignal): boolean {
  return signal.aborted;
}

/** The default encoding: the row's JSON size only. */
function sizeOnly(row: HistoryRow): EncodedRow {
  return { size: rowBytes(row) };
}

/** Wire size of a row (its JSON in UTF-8), for the byte limit of a batch. */
export function rowBytes(row: Readonly<Record<string, unknown>>): number {
  return Buffer.byteLength(JSON.stringify(row), 'utf8');
}
