import { type RowMapper } from '../transform/row-mapper.js';
import { Batcher, DEFAULT_BATCH_LIMITS, type BatchLimits } from './batcher.js';
import { changeRecord, type HistoryRecord } from './history-rows.js';
import { type ChangeEvent, type Position } from './model.js';
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

export interface StreamCounters {
  events: number;
  rowsWritten: number;
  deadLettered: number;
  lookupMisses: number;
  checkpoints: number;
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
  readonly counters?: StreamCounters;
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
  const counters = options.counters;
  let readUpTo: Position | undefined = start.kind === 'startAt' ? undefined : start.position;
  let saved: Position | undefined = readUpTo;
  const cursor = await options.source.open(start, signal);

  const flush = async (): Promise<void> => {
    if (batcher.size > 0) {
      const result = await options.sink.write(
        batcher.take().map((e) => e.item),
        signal,
      );
      if (counters) {
        counters.rowsWritten += result.written;
        counters.deadLettered += result.deadLettered;
      }
    }
    if (readUpTo !== undefined && readUpTo.token !== saved?.token) {
      // A checkpoint write may run after an abort: the rows it covers are already in BigQuery.
      await options.checkpoints.save({ position: readUpTo }, AbortSignal.timeout(30_000));
      saved = readUpTo;
      if (counters) counters.checkpoints++;
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
      if (batch.events.length > 0) await options.beforeMap?.(batch.events, signal);
      const now = new Date(clock.now());
      let gone: CollectionGone | undefined;
      for (const event of batch.events) {
        if (counters) counters.events++;
        const position = { token: event.token, clusterTime: event.clusterTime };
        switch (event.kind) {
          case 'upsert':
          case 'delete':
          case 'collection-gone': {
            const record = changeRecord(options.mapper(), event, now);
            const bytes = rowBytes(record.row);
            batcher.add({ ...record, bytes }, bytes, clock.now());
            break;
          }
          case 'lookup-missed':
            // The document was deleted after this update; its delete event follows in the stream.
            if (counters) counters.lookupMisses++;
            break;
          case 'ignored':
            break;
          default:
            event satisfies never;
        }
        readUpTo = position;
        if (event.kind === 'collection-gone') {
          gone = { kind: 'collection-gone', position };
          break;
        }
      }
      if (!gone && batch.position) readUpTo = batch.position;
      if (gone || batch.events.length === 0 || batcher.due(clock.now())) await flush();
      if (gone) return gone;
    }
    await flush();
    return undefined;
  } finally {
    await cursor.close();
  }
}

function isAborted(signal: AbortSignal): boolean {
  return signal.aborted;
}

/** Wire size of a row (its JSON in UTF-8), for the byte limit of a batch. */
export function rowBytes(row: Readonly<Record<string, unknown>>): number {
  return Buffer.byteLength(JSON.stringify(row), 'utf8');
}
