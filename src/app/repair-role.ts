import { abortableSleep, backoffDelay, type BackoffPolicy } from '../core/backoff.js';
import { DEFAULT_CHECKPOINT_SAVE_TIMEOUT_MS, within } from '../core/deadline.js';
import { snapshotDeleteRecord, type HistoryRecord } from '../core/history-rows.js';
import { type ClusterTime } from '../core/model.js';
import {
  SYSTEM_CLOCK,
  type BackfillCheckpointStore,
  type BackfillProgress,
  type Clock,
  type IdRange,
  type SnapshotSource,
} from '../core/ports.js';
import { type RecordSink } from '../core/stream-loop.js';
import { type RepairRequest, type ViewReader } from '../core/verify-model.js';
import { type RepairProgress, type RepairResult } from '../mongodb/checkpoint-store.js';
import { FencedOutError } from '../errors.js';
import { type Logger } from '../observability/logger.js';
import { docIdString } from '../transform/values.js';
import { runBackfill, type BackfillRecords, type BackfillSchema } from './backfill-role.js';

/** Delete rows handed to the sink at once (the sink splits by size as for every write). */
export const DEFAULT_REPAIR_DELETE_BATCH = 500;

/** Where a repair keeps its progress and says it is done (MongoCheckpointStore in the daemon). */
export interface RepairStore {
  saveRepair(progress: RepairProgress, signal: AbortSignal): Promise<void>;
  /** Removes the requests served (by id), clears the progress, keeps `result`. */
  repairServed(result: RepairResult, requests: readonly string[], signal: AbortSignal): Promise<void>;
}

/** Which of some `_doc_id`s the collection holds when asked (MongoExistingIds in the daemon). */
export interface ExistingIds {
  existing(docIds: readonly string[], signal: AbortSignal): Promise<ReadonlySet<string>>;
}

export interface RepairRoleOptions {
  /** The collection, read over the repaired ranges only. */
  readonly source: SnapshotSource;
  readonly sink: RecordSink;
  readonly store: RepairStore;
  readonly schema: BackfillSchema;
  /** As the backfill's (worker threads); absent, chunks are mapped on this thread. */
  readonly records?: BackfillRecords;
  /** The ids `<table>_view` has in a range (its `documentDigests`). */
  readonly view: Pick<ViewReader, 'documentDigests'>;
  readonly existing: ExistingIds;
  /** The `_id` value of a `_doc_id` (for the `_id`-mapped column of a delete row). */
  readonly idValue: (docId: string) => unknown;
  readonly log: Logger;
  /** Ranges copied at once; default the backfill's. */
  readonly parallelism?: number;
  readonly clock?: Clock;
  readonly deleteBatch?: number;
  /** Current documents acknowledged, and delete rows acknowledged, as they come. */
  readonly onWritten?: (documents: number, deletes: number) => void;
}

/**
 * The progress a new repair starts from, to be saved before any row is written: every pending request's
 * ranges (overlaps are copied twice, harmlessly: the same rows with the same `_event_id`), at a snapshot
 * start taken now. A range open at the top ends at `lastId`, the greatest `_id` read once the snapshot had
 * started (as the backfill's last range does, endAtLastId): later ids are the stream's, and a copy that took
 * them in would never end on a collection growing at the top faster than it is copied.
 */
export function beginRepair(
  pending: readonly RepairRequest[],
  snapshotStart: ClusterTime,
  lastId?: string,
): RepairProgress | undefined {
  const newest = pending.at(-1);
  if (!newest) return undefined;
  const requested = pending.flatMap((request) => request.ranges);
  // The copy's ranges only: the delete passes run over the ranges as requested (ids past the greatest
  // `_id` may be in the view alone).
  const ranges = requested.map((range) =>
    range.upTo === undefined && lastId !== undefined ? { ...range, upTo: lastId } : range,
  );
  return {
    through: newest.requestedAt,
    requests: pending.map((request) => request.id),
    reason: newest.reason,
    ranges: requested,
    backfill: {
      snapshotStart,
      lastId: undefined,
      copied: 0,
      done: false,
      ranges: ranges.map((range) => ({ ...range, lastId: undefined, copied: 0, done: false })),
      // The copy's estimate is of what it copies, not of the collection (a repair does not know it).
      estimated: 0,
    },
    deletesDone: ranges.map(() => false),
    deletes: 0,
  };
}

/**
 * Repairs some `_id` ranges of a mapping, resuming from `progress` (saved by whoever began it): the backfill
 * copy over exactly those ranges (current documents as backfill rows at the repair's snapshot start), then,
 * per range, a delete pass: every id the view has in the range that the collection does not have when
 * checked gets a delete row at that same snapshot start's `_seq`.
 *
 * The delete rows are safe although the stream keeps running: the check runs after the snapshot start was
 * recorded (it was saved before anything else), so a document the check does not find either was deleted
 * before it (a delete at the snapshot start is right, and a delete the stream wrote after it sorts later
 * anyway) or is inserted again after the snapshot start, and then its insert's change has a later `_seq`
 * than the delete row and wins in the view. A document inserted before the snapshot start and still there
 * is found by the check and gets no delete row. A stale row sorts before the snapshot start: the copy's row
 * of a present document wins over it.
 *
 * Progress (the copy's ranges, each range's delete pass) is saved as it goes, so a restart resumes it; the
 * requests are marked served only once every range is done, so a failure leaves them pending.
 */
export async function runRepair(
  options: RepairRoleOptions,
  progress: RepairProgress,
  signal: AbortSignal,
): Promise<RepairResult> {
  let current = progress;
  // As requested (the copy's may be closed at the greatest `_id`); the delete passes run over these.
  const ranges = current.ranges;
  const save = async (next: RepairProgress): Promise<void> => {
    current = next;
    await options.store.saveRepair(next, within(signal, DEFAULT_CHECKPOINT_SAVE_TIMEOUT_MS));
  };
  if (!current.backfill.done) {
    // The backfill saves its progress through here, into the repair's, never into the mapping's backfill.
    const checkpoints: BackfillCheckpointStore = {
      load: () => Promise.reject(new Error('the repair never loads a checkpoint')),
      save: () => Promise.reject(new Error('the repair never saves a position')),
      saveBackfill: (backfill: BackfillProgress, s: AbortSignal) => {
        current = { ...current, backfill };
        return options.store.saveRepair(current, s);
      },
    };
    const copied = await runBackfill(
      {
        source: options.source,
        sink: options.sink,
        checkpoints,
        schema: options.schema,
        ...(options.records && { records: options.records }),
        log: options.log,
        ...(options.parallelism !== undefined && { parallelism: options.parallelism }),
        ...(options.clock && { clock: options.clock }),
        onCopied: (documents) => options.onWritten?.(documents, 0),
      },
      current.backfill,
      signal,
    );
    current = { ...current, backfill: copied };
  }
  for (const [index, range] of ranges.entries()) {
    if (current.deletesDone[index] === true) continue;
    const deleted = await deletePass(options, range, current.backfill.snapshotStart, signal);
    const deletesDone = ranges.map((_, i) => i === index || current.deletesDone[i] === true);
    await save({ ...current, deletesDone, deletes: current.deletes + deleted });
  }
  const result: RepairResult = {
    through: current.through,
    reason: current.reason,
    finishedAt: new Date((options.clock ?? SYSTEM_CLOCK).now()),
    ranges: ranges.length,
    documents: current.backfill.copied,
    deletes: current.deletes,
  };
  await options.store.repairServed(
    result,
    current.requests,
    within(signal, DEFAULT_CHECKPOINT_SAVE_TIMEOUT_MS),
  );
  options.log.info(
    { ...result, rows: result.documents + result.deletes },
    `repair wrote ${String(result.documents + result.deletes)} rows (${String(result.documents)} documents, ` +
      `${String(result.deletes)} deletes) over ${String(result.ranges)} ranges`,
  );
  return result;
}

/**
 * Writes a delete row for every id the view has in `range` and the collection does not (each under the
 * view's own `_doc_id`, as read); returns how many.
 */
async function deletePass(
  options: RepairRoleOptions,
  range: IdRange,
  snapshotStart: ClusterTime,
  signal: AbortSignal,
): Promise<number> {
  const inView = (await options.view.documentDigests(range, signal)).value.map((d) => d.docId);
  // Compared by canonical form (the existence check answers in it): a `_doc_id` spelt otherwise (an older
  // writer, a hand-inserted row) names the same document, and must not be taken for gone while it exists.
  const canonical = new Map(inView.map((docId) => [docId, docIdString(options.idValue(docId))]));
  // Checked now, after the snapshot start was saved (see runRepair).
  const present = await options.existing.existing([...new Set(canonical.values())], signal);
  const gone = inView.filter((docId) => !present.has(canonical.get(docId) ?? docId));
  const now = new Date((options.clock ?? SYSTEM_CLOCK).now());
  const mapper = options.schema.mapper;
  const batch = options.deleteBatch ?? DEFAULT_REPAIR_DELETE_BATCH;
  for (let i = 0; i < gone.length; i += batch) {
    const records: HistoryRecord[] = gone
      .slice(i, i + batch)
      .map((docId) => snapshotDeleteRecord(mapper, options.idValue(docId), snapshotStart, now, docId));
    await options.sink.write(records, signal);
    options.onWritten?.(0, records.length);
  }
  return gone.length;
}

/**
 * Between failed attempts of the repair role: full jitter from 5 s growing to at most 10 minutes, for ever
 * (`maxAttempts` is not used: a repair owed stays owed).
 */
export const DEFAULT_REPAIR_BACKOFF: BackoffPolicy = Object.freeze({
  initialMs: 5_000,
  maxMs: 600_000,
  multiplier: 2,
  maxAttempts: Number.POSITIVE_INFINITY,
});

export interface KeepServingOptions {
  readonly log: Logger;
  /** Makes a failure visible where operators look (the mapping's `lastFailure`, shown by `status`). */
  readonly reportFailure: (error: unknown) => Promise<void>;
  readonly policy?: BackoffPolicy;
  /** Injected in tests. */
  readonly sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
  readonly random?: () => number;
}

/**
 * Runs `serve` (the verification owed after a lost history, then the repairs asked for) until it returns,
 * without ever failing the mapping for it: the repair role runs beside the stream, and the first error of a
 * role stops every role, so a failed view query or a MongoDB timeout would stop archiving, and a restart
 * would begin the same verification again. A failure is logged and reported instead, and `serve` runs again
 * after a backoff; what it serves stays recorded (the request pending, the history-lost mark set), so
 * nothing is lost. A fenced-out write is passed on: the mapping belongs to another instance now. Returns
 * once `serve` returns, or when `signal` aborts.
 */
export async function keepServing(
  serve: (signal: AbortSignal) => Promise<void>,
  options: KeepServingOptions,
  signal: AbortSignal,
): Promise<void> {
  const policy = options.policy ?? DEFAULT_REPAIR_BACKOFF;
  const wait = options.sleep ?? abortableSleep;
  // A call, not the property: narrowing would take `aborted` for unchanged across the awaits.
  const stopped = (): boolean => signal.aborted;
  for (let attempt = 0; !stopped(); attempt++) {
    try {
      await serve(signal);
      return;
    } catch (error) {
      if (stopped()) return;
      if (error instanceof FencedOutError) throw error;
      const delayMs = backoffDelay(attempt, policy, options.random);
      options.log.warn(
        { err: error, attempt: attempt + 1, delayMs },
        'repair or verification failed; the stream goes on, and it is tried again later',
      );
      // Deliberately ignored: a failure to report the failure must not stop the retry either.
      await options.reportFailure(error).catch(() => undefined);
      try {
        await wait(delayMs, signal);
      } catch {
        // The mapping stops.
        return;
      }
    }
  }
}
