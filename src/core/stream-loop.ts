import { type RowMapper } from '../transform/row-mapper.js';
import {
  DEFAULT_CHECKPOINT_SAVE_TIMEOUT_MS,
  within,
  DEFAULT_FINAL_FLUSH_TIMEOUT_MS,
  deadlineAfter,
} from './deadline.js';
import { Batcher, DEFAULT_BATCH_LIMITS, type BatchLimits } from './batcher.js';
import { changeRecord, type HistoryRecord } from './history-rows.js';
import { operationTypeOf, type ChangeEvent, type Position } from './model.js';
import {
  SYSTEM_CLOCK,
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
 * What the loop reports as it reads, for metrics (the app layer adapts it). Rows are reported by the sink
 * when BigQuery acknowledges them, checkpoints by the checkpoint store that saves them.
 */
export interface StreamObserver {
  /** `count` change events of one MongoDB operation type were read (reported once per pull). */
  eventsRead(operation: string, count: number): void;
  /** An update whose full document was already gone when MongoDB looked it up (no row is written). */
  lookupMissed(): void;
}

export interface StreamLoopOptions {
  readonly source: ChangeSource;
  readonly sink: RecordSink;
  readonly checkpoints: CheckpointStore;
  /** Current mapper; read for every event, so a schema evolution can swap it. */
  readonly mapper: () => RowMapper;
  readonly limits?: BatchLimits;
  /** Events asked for per pull (the change stream's batchSize). */
  readonly batchSize?: number;
  readonly clock?: Clock;
  /** Before events are mapped: a chance to evolve the schema for the documents they carry. */
  readonly beforeMap?: (events: readonly ChangeEvent[], signal: AbortSignal) => Promise<void>;
  readonly observer?: StreamObserver;
  /** A row's size in the sink's requests, for the batch limits; default its JSON length (rowBytes). */
  readonly sizeOf?: (row: Readonly<Record<string, unknown>>) => number;
  /** How long flushing may go on after `signal` aborts; default DEFAULT_FINAL_FLUSH_TIMEOUT_MS. */
  readonly finalFlushTimeoutMs?: number;
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
 * to it. An idle stream still advances its checkpoint. Ends when `signal` aborts (after flushing what was
 * read) or when the collection is dropped, renamed or invalidated.
 */
export async function runStreamLoop(
  options: StreamLoopOptions,
  start: StreamStart,
  signal: AbortSignal,
): Promise<CollectionGone | undefined> {
  const clock = options.clock ?? SYSTEM_CLOCK;
  const batcher = new Batcher<HistoryRecord>(options.limits ?? DEFAULT_BATCH_LIMITS);
  const observer = options.observer;
  const sizeOf = options.sizeOf ?? rowBytes;
  let readUpTo: Position | undefined = start.kind === 'startAt' ? undefined : start.position;
  let saved: Position | undefined = readUpTo;
  // Some servers (mongo-java-server) answer a resume after a drop with an invalidate carrying the very token
  // we resumed from. It is not a change: a marker for it would hide the documents of a re-created collection.
  const resumedFrom = start.kind === 'startAt' ? undefined : start.position.token;
  const cursor = await options.source.open(start, signal);
  // Stopping ends the reading at once, but not the writing: what was read is written and checkpointed, so
  // the next owner need not read it again. Flushes get their own signal, which aborts only once the stop is
  // older than the final flush's deadline.
  const flushing = deadlineAfter(signal, options.finalFlushTimeoutMs ?? DEFAULT_FINAL_FLUSH_TIMEOUT_MS);

  const flush = async (): Promise<void> => {
    try {
      if (batcher.size > 0) {
        await options.sink.write(
          batcher.take().map((e) => e.item),
          flushing.signal,
        );
      }
      if (readUpTo !== undefined && readUpTo.token !== saved?.token) {
        await options.checkpoints.save(
          { position: readUpTo },
          within(flushing.signal, DEFAULT_CHECKPOINT_SAVE_TIMEOUT_MS),
        );
        saved = readUpTo;
      }
    } catch (error) {
      // The sink's or the store's reaction to the deadline says less than the deadline itself.
      if (flushing.signal.aborted) throw flushing.signal.reason;
      throw error;
    }
  };

  try {
    while (!signal.aborted) {
      let batch;
      try {
        batch = await cursor.next(options.batchSize ?? DEFAULT_STREAM_BATCH_SIZE, signal);
      } catch (error) {
        // Aborting interrupts the pull; anything else is the source's failure.
        if (isAborted(signal)) break;
        throw error;
      }
      if (batch.events.length > 0) {
        try {
          await options.beforeMap?.(batch.events, signal);
        } catch (error) {
          // Stopped while the schema evolves: this batch is left unread (its position is not saved), and
          // what was read before it is still flushed.
          if (isAborted(signal)) break;
          throw error;
        }
      }
      const now = new Date(clock.now());
      let gone: CollectionGone | undefined;
      const read = new Map<string, number>();
      for (const event of batch.events) {
        const operation = operationTypeOf(event);
        read.set(operation, (read.get(operation) ?? 0) + 1);
        const position: Position =
          event.kind === 'collection-gone' && event.operationType === 'invalidate'
            ? { token: event.token, clusterTime: event.clusterTime, invalidate: true }
            : { token: event.token, clusterTime: event.clusterTime };
        switch (event.kind) {
          case 'collection-gone':
          case 'upsert':
          case 'delete': {
            if (event.kind === 'collection-gone' && event.token === resumedFrom) break;
            const record = changeRecord(options.mapper(), event, now);
            const bytes = sizeOf(record.row);
            batcher.add({ row: record.row, document: record.document, bytes }, bytes, clock.now());
            break;
          }
          case 'lookup-missed':
            // The document was deleted after this update; its delete event follows in the stream.
            observer?.lookupMissed();
            break;
          case 'ignored':
            break;
          default:
            event satisfies never;
        }
        // A split event's own token is no safe place to resume from: the batch's position (the change
        // before it, or a later one) stands for it, and where the source has none nothing is saved for it.
        if (event.split !== true) readUpTo = position;
        if (event.kind === 'collection-gone') {
          gone = { kind: 'collection-gone', position };
          break;
        }
      }
      for (const [operation, count] of read) observer?.eventsRead(operation, count);
      // An idle stream opened after an invalidate reports the invalidate's own token as its post-batch
      // position: that is still the invalidate, to be continued from with startAfter.
      if (!gone && batch.position)
        readUpTo = batch.position.token === readUpTo?.token ? readUpTo : batch.position;
      if (gone || batch.events.length === 0 || batcher.due(clock.now())) await flush();
      if (gone) return gone;
    }
    await flush();
    return undefined;
  } finally {
    flushing.dispose();
    await cursor.close();
  }
}

/** Where a stream continues from a saved position: after an invalidate only `startAfter` is accepted. */
export function resumeFrom(position: Position): StreamStart {
  return position.invalidate ? { kind: 'startAfter', position } : { kind: 'resumeAfter', position };
}

function isAborted(signal: AbortSignal): boolean {
  return signal.aborted;
}

/** Wire size of a row (its JSON in UTF-8), for the byte limit of a batch. */
export function rowBytes(row: Readonly<Record<string, unknown>>): number {
  return Buffer.byteLength(JSON.stringify(row), 'utf8');
}
