/*
 * The oplog headroom guard's vocabulary and arithmetic, pure: what a read of the source's oplog window
 * gives, and how much of that window each mapping has left. The MongoDB adapter reads the window
 * (src/mongodb/oplog-window.ts), the daemon's guard polls it (src/app/oplog-guard.ts), and `status`
 * computes the same numbers from the same functions, so both say the same thing.
 */

/**
 * A mapping is at risk when its headroom falls below this share of the window (OPLOG_HEADROOM_WARN_RATIO):
 * with a day's window, six hours before the oldest entry it resumes from leaves the oplog.
 */
export const DEFAULT_OPLOG_HEADROOM_WARN_RATIO = 0.25;
/**
 * How often the daemon reads the window (OPLOG_WINDOW_POLL_INTERVAL_MS). The window moves slowly (hours to
 * days); a minute warns in time and costs two one-document reads of the oplog per minute.
 */
export const DEFAULT_OPLOG_WINDOW_POLL_INTERVAL_MS = 60_000;

/** The source's oplog as one read found it: the cluster times (seconds) of its oldest and newest entries. */
export interface OplogWindow {
  /** Which oplog: the replica set's name (the `source` label of `mba_oplog_window_seconds`). */
  readonly source: string;
  readonly firstSeconds: number;
  readonly lastSeconds: number;
  /** Bytes the oplog holds now and its configured maximum, when the server told them. */
  readonly size?: { readonly bytes: number; readonly maxBytes: number };
}

/**
 * Below this share of its configured size the oplog is still filling: MongoDB drops its oldest entries only
 * once it is full, so its window is the time since it began (or was enlarged), not a limit, and nothing is
 * at risk yet. A full oplog is truncated a slice at a time and hovers between about 90% and 100%; 80% keeps
 * a margin (a full one is never taken for filling).
 */
export const OPLOG_FILLING_SHARE = 0.8;

/** Whether the oplog is still filling (see OPLOG_FILLING_SHARE); false when its size is unknown. */
export function oplogFilling(window: OplogWindow): boolean {
  const size = window.size;
  return size !== undefined && size.maxBytes > 0 && size.bytes < OPLOG_FILLING_SHARE * size.maxBytes;
}

/** Why the window cannot be read; the guard is then off, says so once, and the daemon carries on. */
export const OPLOG_UNAVAILABLE_REASONS = ['no-oplog', 'mongos', 'unauthorized'] as const;
export type OplogUnavailableReason = (typeof OPLOG_UNAVAILABLE_REASONS)[number];

/** One read of the window: the window, or why the server does not tell it. */
export type OplogWindowReading =
  | { readonly kind: 'window'; readonly window: OplogWindow }
  | { readonly kind: 'unavailable'; readonly reason: OplogUnavailableReason; readonly message: string };

/** The time span the oplog holds, in seconds. */
export function windowSeconds(window: OplogWindow): number {
  return Math.max(0, window.lastSeconds - window.firstSeconds);
}

/** A mapping's standing against the window. */
export interface Headroom {
  readonly windowSeconds: number;
  /**
   * How far the resume point is behind the oplog's newest entry. The newest entry is the server's own
   * clock (an idle replica set still writes a no-op every 10 s), so no clock of ours enters the sum.
   */
  readonly lagSeconds: number;
  /**
   * Window minus lag: how long the oplog still holds the resume point if nothing moves. At or below 0 the
   * history is already gone (a resume would fail with ChangeStreamHistoryLost).
   */
  readonly headroomSeconds: number;
  /** Headroom below `warnRatio` of the window, on an oplog that is full (one still filling drops nothing). */
  readonly atRisk: boolean;
  /** The oplog is still filling (OPLOG_FILLING_SHARE): its window only grows until it is full. */
  readonly filling: boolean;
}

/**
 * The headroom of a mapping whose stream resumes from cluster time `resumeSeconds` (its checkpoint's
 * position, or the snapshot start of a backfill that has saved no position yet).
 */
export function headroomOf(window: OplogWindow, resumeSeconds: number, warnRatio: number): Headroom {
  const span = windowSeconds(window);
  const lagSeconds = Math.max(0, window.lastSeconds - resumeSeconds);
  const headroomSeconds = span - lagSeconds;
  const filling = oplogFilling(window);
  return {
    windowSeconds: span,
    lagSeconds,
    headroomSeconds,
    atRisk: !filling && headroomSeconds < warnRatio * span,
    filling,
  };
}

/**
 * How the lag moved between two reads: seconds of lag gained per second. 1 for a mapping that stands
 * still, below 0 for one catching up; undefined without two reads in order.
 */
export function lagRate(
  earlier: { readonly lagSeconds: number; readonly atMs: number } | undefined,
  now: { readonly lagSeconds: number; readonly atMs: number },
): number | undefined {
  if (!earlier || now.atMs <= earlier.atMs) return undefined;
  return (now.lagSeconds - earlier.lagSeconds) / ((now.atMs - earlier.atMs) / 1_000);
}

/**
 * Seconds until the history a mapping resumes from leaves the oplog, if its lag keeps growing at `rate`
 * (seconds per second) and the window keeps its length: headroom / rate. Undefined when the lag is not
 * growing (or its rate is unknown): then only the headroom can be said.
 */
export function secondsUntilLost(headroomSeconds: number, rate: number | undefined): number | undefined {
  if (rate === undefined || rate <= 0) return undefined;
  return Math.max(0, headroomSeconds) / rate;
}
