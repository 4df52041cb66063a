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
   * tell (then the last event's token is the position).
   */
  readonly position: Position | undefined;
}

/** A pull-based change stream cursor: `next` asks for what is there; nothing is ever pushed. */
export interface ChangeCursor {
  /** At most `maxEvents`, waiting a bounded time for the first; an empty batch means the stream is idle. */
  next(maxEvents: number, signal: AbortSignal): Promise<ChangeBatch>;
  close(): Promise<void>;
}

export interface ChangeSource {
  open(start: StreamStart, signal: AbortSignal): Promise<ChangeCursor>;
  /** The source's current cluster time (the start point recorded before a backfill). */
  currentTime(signal: AbortSignal): Promise<ClusterTime>;
}

/** What survives a restart of one mapping. */
export interface Checkpoint {
  /** Last change whose rows BigQuery acknowledged (the original service's `lastChangeId` holds its token). */
  readonly position: Position | undefined;
  readonly backfill?: BackfillProgress;
}

export interface BackfillProgress {
  readonly snapshotStart: ClusterTime;
  /** The `_id` of the last document whose rows were acknowledged, as canonical Extended JSON. */
  readonly lastId: string | undefined;
  readonly copied: number;
  readonly done: boolean;
}

export interface CheckpointStore {
  load(signal: AbortSignal): Promise<Checkpoint>;
  /** Persists only after the sink acknowledged every row up to the checkpoint. */
  save(checkpoint: Checkpoint, signal: AbortSignal): Promise<void>;
}

export interface Clock {
  now(): number;
}

export const SYSTEM_CLOCK: Clock = { now: () => Date.now() };
