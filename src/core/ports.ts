import { type ColumnsOrigin, type ColumnSpec } from '../schema/types.js';
import { type ChangeEvent, type ClusterTime, type Position } from './model.js';

/** Where a change stream starts. */
export type StreamStart =
  | { readonly kind: 'resumeAfter'; readonly position: Position }
  /** After an invalidate (drop/rename): continue with the re-created collection. */
  | { readonly kind: 'startAfter'; readonly position: Position }
  /** Inclusive: events at this cluster time and later. */
  | { readonly kind: 'startAt'; readonly clusterTime: ClusterTime };

export interface ChangeBatch {
  readonly events: readonly ChangeEvent[];
  /**
   * The position after this batch (the post-batch resume token), also when it is empty: checkpointing it
   * keeps the resume token of an idle collection inside the oplog window. Undefined when the source cannot
   * tell (then the last event's token is the position, unless that event was split: see ChangeEvent's
   * `split`).
   */
  readonly position: Position | undefined;
}

/**
 * One change event as the server sent it, undecoded: its BSON document, or, for an event over 16 MB that
 * `$changeStreamSplitLargeEvent` split, its fragments in order (each a whole BSON document with
 * `splitEvent`). Decoded where there is a core to spare (worker threads), not on the thread that reads.
 */
export type RawChange = readonly Uint8Array[];

/** What a raw change stream cursor returns: events as BSON bytes, and the position after them. */
export interface RawChangeBatch {
  readonly changes: readonly RawChange[];
  /** As ChangeBatch's `position`: the post-batch resume token (never a fragment's token), or undefined. */
  readonly position: Position | undefined;
}

/**
 * A pull-based change stream cursor: `next` asks for what is there; nothing is ever pushed. `B` is what a
 * pull returns: decoded events (ChangeBatch) or raw ones (RawChangeBatch).
 */
export interface ChangeCursor<B = ChangeBatch> {
  /** At most `maxEvents`, waiting a bounded time for the first; an empty batch means the stream is idle. */
  next(maxEvents: number, signal: AbortSignal): Promise<B>;
  close(): Promise<void>;
}

export interface ChangeSource<B = ChangeBatch> {
  open(start: StreamStart, signal: AbortSignal): Promise<ChangeCursor<B>>;
  /** The source's current cluster time (the start point recorded before a backfill). */
  currentTime(signal: AbortSignal): Promise<ClusterTime>;
}

/**
 * The change stream of a whole source database (CHANGE_STREAM_SCOPE `database`), shared by the mappings of
 * its collections: one server-side cursor instead of one per collection. `B` is what a pull returns, as for
 * ChangeSource.
 */
export interface SharedStreamSource<B> {
  /**
   * Opens the database's stream at `start`, filtered on the server to the changes of `collections` (never
   * empty) and to the database-wide ones (`dropDatabase`, `invalidate`). The post-batch token of its pulls
   * is the database stream's: it may name a change of one collection, after which another collection's own
   * stream cannot resume (MongoDB does not find it there), so a collection's share of it is marked `shared`
   * and resumed at its cluster time (see Position).
   */
  open(start: StreamStart, collections: readonly string[], signal: AbortSignal): Promise<ChangeCursor<B>>;
}

/**
 * What the fan-out needs to know of a pull without decoding its changes (they may be raw BSON: the adapter
 * reads the few fields it needs from the bytes).
 */
export interface PullShape<B> {
  /**
   * The pull's changes by collection, in order, each part carrying the pull's own position; changes of
   * collections not in `collections` are left out, a database-wide change (`dropDatabase`, `invalidate`)
   * is in every part. A collection with no change in the pull gets no part (see `empty`).
   */
  split(pull: B, collections: ReadonlySet<string>): ReadonlyMap<string, B>;
  /**
   * The changes of `pull` that come after `position`, with the pull's position. In doubt (the same cluster
   * time, tokens that do not compare) a change is kept: a duplicate row is harmless (the views keep one row
   * per `_seq`), a lost change is not.
   */
  after(pull: B, position: Position): B;
  /**
   * A pull with no change, at `position` as given (an idle collection's share of a pull of the others: the
   * fan-out marks such a position `shared`, see Position).
   */
  empty(position: Position | undefined): B;
  position(pull: B): Position | undefined;
  /** The number of changes in the pull (queues between the shared cursor and the mappings are bounded by it). */
  count(pull: B): number;
}

/** What survives a restart of one mapping. */
export interface Checkpoint {
  /** Last change whose rows BigQuery acknowledged (the original service's `lastChangeId` holds its token). */
  readonly position: Position | undefined;
  readonly backfill?: BackfillProgress;
  /**
   * This checkpoint began with a resync request (`mongo-bigquery-archiver resync`): its backfill is owed even
   * when the settings do not ask for one. Set by the store as it loads; never saved by the pipeline.
   */
  readonly resync?: boolean;
  /**
   * Saved with no rows written since the save before (an idle stream's position, or ignored events): the
   * store keeps it in the checkpoint only, never in the watched settings document, whose `lastChangeId`
   * stays the position saved with the last rows written. Set by the stream loop as it saves.
   */
  readonly idle?: true;
}

export interface BackfillProgress {
  readonly snapshotStart: ClusterTime;
  /**
   * The `_id` of the last document whose rows were acknowledged, as canonical Extended JSON: the progress of
   * a backfill copied as one range (the previous release's form). Undefined when `ranges` is set.
   */
  readonly lastId: string | undefined;
  readonly copied: number;
  readonly done: boolean;
  /**
   * The `_id` ranges the collection was split into, copied concurrently and each resumable on its own;
   * absent in a backfill copied as one range (see `lastId`).
   */
  readonly ranges?: readonly BackfillRangeProgress[];
  /** The collection's estimated document count when the backfill started (for percent and ETA). */
  readonly estimated?: number;
}

/**
 * A part of the `_id` space in BSON order, bounds as canonical Extended JSON: ids after `after` (exclusive;
 * undefined: from the first) up to `upTo` (inclusive; undefined: to the last).
 */
export interface IdRange {
  readonly after: string | undefined;
  readonly upTo: string | undefined;
}

export interface BackfillRangeProgress extends IdRange {
  /** The last `_id` of the range whose row was acknowledged (and every one before it in the range). */
  readonly lastId: string | undefined;
  readonly copied: number;
  readonly done: boolean;
}

/** A document as read by the backfill. */
export type SourceDocument = Readonly<Record<string, unknown>>;

/**
 * The collection as the backfill reads it: in `_id` order (BSON order, across types), in bounded chunks,
 * within ranges that can be read concurrently.
 */
export interface SnapshotSource {
  estimatedCount(signal: AbortSignal): Promise<number>;
  /**
   * At most `parts` ranges that together cover every `_id` exactly once, in order, split at points from a
   * bounded sample (never a full scan). One range covering everything when the collection is small or empty.
   */
  split(parts: number, signal: AbortSignal): Promise<readonly IdRange[]>;
  /**
   * The next chunk of `range` after `lastId` (canonical Extended JSON; undefined: from the range's start), in
   * `_id` order; empty when the range is done.
   */
  nextChunk(
    range: IdRange,
    lastId: string | undefined,
    signal: AbortSignal,
  ): Promise<readonly SourceDocument[]>;
  /**
   * The same chunk as `nextChunk`, undecoded: each document's BSON bytes, and the `_id` of the last one as
   * canonical Extended JSON (what `lastId` of the next call and of the range's progress is). Decoding is then
   * left to whoever maps the documents (worker threads). Sources that cannot read raw leave it out.
   */
  nextRawChunk?(range: IdRange, lastId: string | undefined, signal: AbortSignal): Promise<RawChunk>;
}

/** A backfill chunk as BSON bytes (see SnapshotSource.nextRawChunk); empty when the range is done. */
export interface RawChunk {
  readonly documents: readonly Uint8Array[];
  /** The `_id` of the last document as canonical Extended JSON; undefined when `documents` is empty. */
  readonly lastId: string | undefined;
}

export interface CheckpointStore {
  /**
   * The checkpoint of the mapping as configured now. One of another scope (the mapping now reads another
   * collection or writes another table) or older than an unserved resync request is cleared as it is loaded:
   * the result is then empty, and nothing of the old one can come back later.
   */
  load(signal: AbortSignal): Promise<Checkpoint>;
  /**
   * Persists only after the sink acknowledged every row up to the checkpoint. A checkpoint with backfill
   * progress replaces the whole checkpoint (an undefined position clears the saved one: a new backfill never
   * inherits the position of what came before); one without moves the position only.
   */
  save(checkpoint: Checkpoint, signal: AbortSignal): Promise<void>;
}

/**
 * The checkpoint store as a mapping run uses it, the backfill included (the stream loop needs only
 * `load` and `save`, so its fakes stay as they are).
 */
export interface BackfillCheckpointStore extends CheckpointStore {
  /**
   * Persists the progress of the backfill under way and nothing else: the position is left as it is, so the
   * stream running alongside the copy and the copy itself save concurrently without undoing each other. The
   * backfill began with `save` (which replaced the whole checkpoint and cleared the position).
   */
  saveBackfill(progress: BackfillProgress, signal: AbortSignal): Promise<void>;
}

export interface Clock {
  now(): number;
}

export const SYSTEM_CLOCK: Clock = { now: () => Date.now() };

/**
 * What a mapping is doing, written to its settings document's `status`, shown by `status` and exported as
 * `mba_mapping_state`: `starting` (tables being prepared), `backfilling`, `streaming`, `retrying` (waiting
 * out a backoff after a retryable failure), `failed` (stopped by a fatal error, `lastFailure` says why),
 * `stopped`, `invalid` (its settings document is invalid) and `dryrun` (logging what it would write).
 */
export const MAPPING_STATES = [
  'starting',
  'backfilling',
  'streaming',
  'retrying',
  'failed',
  'stopped',
  'invalid',
  'dryrun',
] as const;
export type MappingState = (typeof MAPPING_STATES)[number];

export interface MappingStatus {
  readonly state: MappingState;
  readonly lastCheckpointAt?: Date;
  readonly eventsRead?: number;
  readonly rowsWritten?: number;
  readonly deadLettered?: number;
  /** Documents the backfill copied so far, earlier runs of it included. */
  readonly backfillCopied?: number;
  /** The collection's estimated document count when the backfill started. */
  readonly backfillEstimated?: number;
  /** Documents per second this run of the backfill copies (see estimateBackfill in core/progress.ts). */
  readonly backfillRate?: number;
  /** Seconds until the backfill reaches its estimated total at that rate. */
  readonly backfillEtaSeconds?: number;
  readonly message?: string;
}

/** One settings document as stored; `id` is its `_id` as a string. */
export interface SettingsEntry {
  readonly id: string;
  readonly document: Readonly<Record<string, unknown>>;
}

/**
 * The settings collection. Reads are polled (real MongoDB refuses change streams on the `config`
 * database); a change stream may wake the poll sooner where the database allows one. The service's own
 * writes (`columns`, `lastFailure`, `status`) go through here and never restart anything.
 */
export interface SettingsStore {
  /** Creates the settings collection when it does not exist. */
  ensure(signal: AbortSignal): Promise<void>;
  list(signal: AbortSignal): Promise<readonly SettingsEntry[]>;
  /** Resolves when the settings may have changed, or after the poll interval. */
  waitForChange(signal: AbortSignal): Promise<void>;
  /** Writes `lastFailure` (null clears it). */
  reportFailure(id: string, message: string | null, fence?: number): Promise<void>;
  reportStatus(id: string, status: MappingStatus, fence?: number): Promise<void>;
  /**
   * Writes inferred or evolved columns back, in the original column-spec format. With `origin: 'inferred'`
   * their fingerprint goes next to them, so that the mapping still counts as inferred when it is read again
   * (see `MappingSettings.columnsOrigin`); otherwise an earlier fingerprint is removed.
   */
  saveColumns(
    id: string,
    columns: readonly ColumnSpec[],
    fence?: number,
    origin?: ColumnsOrigin,
  ): Promise<void>;
  /** The newest fencing token the mapping's writes carried (see LeaseStore); undefined when none did. */
  fenceOf(id: string, signal: AbortSignal): Promise<number | undefined>;
  /** `fenceOf` for many mappings in a couple of round trips; a mapping without a token is left out. */
  fencesOf(ids: readonly string[], signal: AbortSignal): Promise<ReadonlyMap<string, number>>;
}

/** A mapping this instance owns: `token` is its fencing token, greater than every earlier owner's. */
export interface Lease {
  readonly mappingId: string;
  readonly token: number;
}

/**
 * Leases on mappings, shared by every running instance: one owner per mapping at a time, an expiry the owner
 * keeps pushing back, and a fencing token that only grows. Every write of the mapping's checkpoint and state
 * carries the owner's token, and the store refuses a token older than the newest it has seen, so an owner
 * that was paused past its expiry cannot undo its successor's work.
 */
export interface LeaseStore {
  /** How long a lease lasts without renewal: the longest a dead instance's mappings wait for a new owner. */
  readonly ttlMs: number;
  /** Records this instance as alive for `ttlMs`; returns how many instances are alive (this one included). */
  heartbeat(signal: AbortSignal): Promise<number>;
  /**
   * Takes the mapping's lease when it is free or expired; undefined when another instance holds it. The new
   * token exceeds `floor` (the newest token the mapping's writes carried), even if the leases were reset.
   */
  tryAcquire(mappingId: string, floor: number | undefined, signal: AbortSignal): Promise<Lease | undefined>;
  /**
   * `tryAcquire` for many mappings in a few round trips whatever their number (a takeover of a dead
   * instance's hundreds of leases must end well within the TTL); returns the leases taken.
   */
  tryAcquireAll(
    requests: readonly { readonly mappingId: string; readonly floor: number | undefined }[],
    signal: AbortSignal,
  ): Promise<readonly Lease[]>;
  /**
   * Pushes the expiry of every one of `leases` back, in one round trip (plus one to tell which were lost when
   * some were); returns the mapping ids whose lease is still ours. A lease left out was taken by another
   * instance after it expired, or released meanwhile.
   */
  renewAll(leases: readonly Lease[], signal: AbortSignal): Promise<ReadonlySet<string>>;
  /** Gives the lease up at once (shutdown, rebalancing), so another instance need not wait for its expiry. */
  release(lease: Lease): Promise<void>;
  /** Removes this instance from the live ones (shutdown). */
  leave(): Promise<void>;
}
