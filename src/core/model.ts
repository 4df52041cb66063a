/** Operation types written to the history table's `operationType` column. */
export const OPERATION_TYPES = ['insert', 'update', 'replace', 'delete', 'drop', 'backfill'] as const;
export type OperationType = (typeof OPERATION_TYPES)[number];

/** A MongoDB cluster time (BSON Timestamp): seconds and the ordinal within the second. */
export interface ClusterTime {
  readonly t: number;
  readonly i: number;
}

/**
 * Where a change stream stands: the opaque resume token (only its `_data` string is kept) and the cluster
 * time of the change it follows. Serialisable and comparable; raw tokens never wander further.
 */
export interface Position {
  readonly token: string;
  readonly clusterTime: ClusterTime;
  /**
   * The position is an `invalidate` event (after a drop, rename or dropDatabase). MongoDB refuses to resume
   * after one with `resumeAfter` (InvalidResumeToken, 260): a stream continues from it with `startAfter`.
   */
  readonly invalidate?: true;
  /**
   * The token is a database-level stream's, perhaps of a change of another collection (a mapping's share of
   * a shared pull carries the pull's position). MongoDB resumes `resumeAfter` a token only on a stream that
   * contains its change (otherwise ChangeStreamFatalError 280, "resume token was not found"), so such a
   * position is resumed at its cluster time (`startAt`, inclusive): a change at that very time may come again,
   * which the views' one row per `_seq` hides; none is skipped.
   */
  readonly shared?: true;
}

interface EventBase {
  /** Resume token `_data` of this event: resuming after it continues with the next event. */
  readonly token: string;
  readonly clusterTime: ClusterTime;
  /**
   * Put together from the fragments `$changeStreamSplitLargeEvent` cut it into (an event over 16 MB). Its
   * token is the last fragment's, which MongoDB resumes from only while the event splits the same way (a
   * looked-up document that changed since does not: ChangeStreamFatalError, 280), so it is never a
   * checkpoint; the source's position before the event is.
   */
  readonly split?: true;
}

/** A change of the collection, as the pipeline consumes it. */
export type ChangeEvent =
  | (EventBase & {
      readonly kind: 'upsert';
      readonly operationType: 'insert' | 'update' | 'replace';
      readonly documentId: unknown;
      readonly document: Readonly<Record<string, unknown>>;
    })
  | (EventBase & { readonly kind: 'delete'; readonly documentId: unknown })
  /** An update whose document was deleted before the lookup: skipped, its delete follows in the stream. */
  | (EventBase & {
      readonly kind: 'lookup-missed';
      readonly operationType: 'insert' | 'update' | 'replace';
      readonly documentId: unknown;
    })
  /** drop, rename, dropDatabase or invalidate: a `drop` marker row, then the stream continues with startAfter. */
  | (EventBase & {
      readonly kind: 'collection-gone';
      readonly operationType: 'drop' | 'rename' | 'dropDatabase' | 'invalidate';
    })
  /** Anything else a change stream may report (createIndexes, modify...): advances the position only. */
  | (EventBase & { readonly kind: 'ignored'; readonly operationType: string });

/** MongoDB's operation type of a change event (`mba_change_events_total` counts by it). */
export function operationTypeOf(event: ChangeEvent): string {
  switch (event.kind) {
    case 'upsert':
    case 'lookup-missed':
    case 'collection-gone':
    case 'ignored':
      return event.operationType;
    case 'delete':
      return 'delete';
    default:
      return event satisfies never;
  }
}

const HEX32 = 8;

/** Fixed-width hex of a cluster time, sortable as text. */
export function clusterTimeHex(time: ClusterTime): string {
  return time.t.toString(16).padStart(HEX32, '0') + time.i.toString(16).padStart(HEX32, '0');
}

/**
 * `_seq`: a total order of changes of one collection, stable across restarts because it is derived from the
 * event itself: the cluster time in fixed-width hex, then the resume token's `_data` (KeyString-encoded
 * tokens compare in event order, which orders the events of one transaction that share a cluster time).
 */
export function changeSeq(event: EventBase): string {
  return `${clusterTimeHex(event.clusterTime)}${event.token}`;
}

/**
 * `_seq` of a backfill row: the snapshot start time with an empty suffix, so it sorts before every change
 * that happened at or after the snapshot started.
 */
export function backfillSeq(snapshotStart: ClusterTime): string {
  return clusterTimeHex(snapshotStart);
}

/** `_event_id` of a change: its resume token, unique per event and the same when the event is replayed. */
export function changeEventId(event: EventBase): string {
  return event.token;
}

/** `_event_id` of a backfill row: the snapshot and the document id. */
export function backfillEventId(snapshotStart: ClusterTime, docId: string): string {
  return `backfill:${clusterTimeHex(snapshotStart)}:${docId}`;
}

/**
 * `position` as a resume point that any stream accepts (see Position's `shared`); an invalidate keeps its
 * token (only `startAfter` continues from it).
 */
export function sharedPosition(position: Position): Position {
  return position.invalidate || position.shared ? position : { ...position, shared: true };
}

export function compareClusterTime(a: ClusterTime, b: ClusterTime): number {
  return a.t - b.t || a.i - b.i;
}

/**
 * Orders positions: negative when `a` comes before `b`. By cluster time, then by resume token (`_data` is
 * a hex string whose order is the server's order of the events, for tokens of the same format).
 */
export function comparePositions(a: Position, b: Position): number {
  const byTime = compareClusterTime(a.clusterTime, b.clusterTime);
  if (byTime !== 0) return byTime;
  const x = a.token.toUpperCase();
  const y = b.token.toUpperCase();
  return x < y ? -1 : x > y ? 1 : 0;
}

let lastIsoSeconds = Number.NaN;
let lastIso = '';

/**
 * Seconds since the epoch of a cluster time, as an ISO timestamp for `_cluster_time`. Consecutive changes
 * mostly share their second: the last text is reused rather than formatted again for every row.
 */
export function clusterTimeIso(time: ClusterTime): string {
  if (time.t !== lastIsoSeconds) {
    lastIso = new Date(time.t * 1000).toISOString();
    lastIsoSeconds = time.t;
  }
  return lastIso;
}
