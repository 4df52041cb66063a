import { setTimeout as sleep } from 'node:timers/promises';
import {
  headroomOf,
  lagRate,
  secondsUntilLost,
  windowSeconds,
  type Headroom,
  type OplogUnavailableReason,
  type OplogWindowReading,
} from '../core/oplog-headroom.js';
import { formatDuration } from '../core/progress.js';
import { type Logger } from '../observability/logger.js';

/** The `/readyz` detail of a mapping whose headroom is below the threshold (it replaces the state). */
export const AT_RISK = 'at-risk';

/** What the guard reports to; `Metrics` is one. */
export interface OplogGuardMetrics {
  /** The window of `source` in seconds; undefined drops the series (the window cannot be read). */
  oplogWindow(source: string, seconds: number | undefined): void;
  /** A mapping's headroom in seconds; undefined drops the series. */
  oplogHeadroom(mapping: string, seconds: number | undefined): void;
}

export interface OplogGuardOptions {
  /** One read of the source's window (src/mongodb/oplog-window.ts). */
  readonly readWindow: (signal: AbortSignal) => Promise<OplogWindowReading>;
  /** The mappings this instance runs now. */
  readonly mappings: () => readonly string[];
  /** Where each of `ids` resumes its stream (cluster time seconds), from the saved checkpoints. */
  readonly resumePoints: (
    ids: readonly string[],
    signal: AbortSignal,
  ) => Promise<ReadonlyMap<string, number>>;
  /** At risk below this share of the window (OPLOG_HEADROOM_WARN_RATIO). */
  readonly warnRatio: number;
  /** Between two polls (OPLOG_WINDOW_POLL_INTERVAL_MS). */
  readonly intervalMs: number;
  readonly metrics: OplogGuardMetrics;
  readonly logger: Logger;
  /** Milliseconds since the epoch; for the lag's rate between two polls. */
  readonly now?: () => number;
}

/** What the guard last found of one mapping. */
interface MappingMark {
  readonly headroom: Headroom;
  readonly atMs: number;
}

/**
 * The oplog headroom guard: every `intervalMs` it reads the source's oplog window once (one read for the
 * whole daemon, not one per mapping) and the resume point of each mapping this instance runs, and from them
 * each mapping's headroom: how long the oplog still holds the history it would resume from. Below
 * `warnRatio` of the window it warns once (and says so again when the mapping recovers), and `annotate`
 * turns the mapping's `/readyz` detail to `at-risk`. Readiness itself is left alone: a restart or a rollout
 * cannot give the mapping more oplog, and holding them back would only make things worse.
 *
 * A server that does not tell its window (a standalone, mongos, a user without the privilege) turns the
 * guard off with one log line saying why; it keeps polling, in case a privilege is granted, and says when
 * the window can be read again. A failed read (MongoDB unreachable) is logged once per run of failures;
 * the values of the last read stay.
 */
export class OplogGuard {
  readonly #o: OplogGuardOptions;
  readonly #now: () => number;
  readonly #marks = new Map<string, MappingMark>();
  /** The reason last logged for an unavailable window; undefined while it can be read. */
  #unavailable: string | undefined;
  #failing = false;
  #source: string | undefined;

  constructor(options: OplogGuardOptions) {
    this.#o = options;
    this.#now = options.now ?? Date.now;
  }

  /** Polls until `signal` aborts; never throws (a failed poll is logged and the next one tries again). */
  async run(signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      await this.poll(signal);
      try {
        // Unreferenced: the guard alone never keeps the process running.
        await sleep(this.#o.intervalMs, undefined, { signal, ref: false });
      } catch {
        return;
      }
    }
  }

  /** One poll: the window, the resume points, each mapping's headroom, metrics and logs. */
  async poll(signal: AbortSignal): Promise<void> {
    let reading: OplogWindowReading;
    let points: ReadonlyMap<string, number>;
    const ids = this.#o.mappings();
    try {
      reading = await this.#o.readWindow(signal);
      points = reading.kind === 'window' ? await this.#o.resumePoints(ids, signal) : new Map();
    } catch (error) {
      if (signal.aborted) return;
      if (!this.#failing) {
        this.#o.logger.warn(
          { err: error },
          'could not read the oplog window; the headroom guard keeps its last values and tries again',
        );
      }
      this.#failing = true;
      return;
    }
    this.#failing = false;
    if (reading.kind === 'unavailable') {
      this.#off(reading.message, reading.reason);
      return;
    }
    const { window } = reading;
    if (this.#unavailable !== undefined) {
      this.#o.logger.info({ source: window.source }, 'the oplog window can be read again: headroom guard on');
      this.#unavailable = undefined;
    }
    if (this.#source !== undefined && this.#source !== window.source) {
      this.#o.metrics.oplogWindow(this.#source, undefined);
    }
    this.#source = window.source;
    this.#o.metrics.oplogWindow(window.source, windowSeconds(window));
    const atMs = this.#now();
    for (const id of [...this.#marks.keys()]) {
      if (!points.has(id)) this.#forget(id);
    }
    for (const [id, resumeSeconds] of points) {
      const headroom = headroomOf(window, resumeSeconds, this.#o.warnRatio);
      // An oplog still filling drops nothing yet: window minus lag would be a limit that is not there.
      this.#o.metrics.oplogHeadroom(id, headroom.filling ? undefined : headroom.headroomSeconds);
      const earlier = this.#marks.get(id);
      this.#marks.set(id, { headroom, atMs });
      const rate = lagRate(earlier && { lagSeconds: earlier.headroom.lagSeconds, atMs: earlier.atMs }, {
        lagSeconds: headroom.lagSeconds,
        atMs,
      });
      this.#report(id, headroom, earlier?.headroom.atRisk === true, rate);
    }
  }

  /** `detail` (the supervisor's readiness detail) with every mapping at risk marked `at-risk`. */
  annotate<R extends { readonly detail: Readonly<Record<string, string>> }>(readiness: R): R {
    const detail = { ...readiness.detail };
    let changed = false;
    for (const [id, mark] of this.#marks) {
      if (mark.headroom.atRisk && id in detail) {
        detail[id] = AT_RISK;
        changed = true;
      }
    }
    return changed ? { ...readiness, detail } : readiness;
  }

  /** The last headroom found for `mapping`, if any. */
  headroom(mapping: string): Headroom | undefined {
    return this.#marks.get(mapping)?.headroom;
  }

  #report(id: string, headroom: Headroom, wasAtRisk: boolean, rate: number | undefined): void {
    const fields = {
      mapping: id,
      headroomSeconds: Math.round(headroom.headroomSeconds),
      windowSeconds: Math.round(headroom.windowSeconds),
      lagSeconds: Math.round(headroom.lagSeconds),
    };
    if (headroom.atRisk && !wasAtRisk) {
      const lostIn = secondsUntilLost(headroom.headroomSeconds, rate);
      const when =
        headroom.headroomSeconds <= 0
          ? 'its resume point has already left the oplog'
          : lostIn === undefined
            ? `the oplog holds its resume point for another ${formatDuration(headroom.headroomSeconds)} if it stops now`
            : `history lost in ~${formatDuration(lostIn)} at the current rate`;
      this.#o.logger.warn(
        { ...fields, ...(lostIn !== undefined && { lostInSeconds: Math.round(lostIn) }) },
        `oplog headroom below ${String(Math.round(this.#o.warnRatio * 100))}% of the ${formatDuration(headroom.windowSeconds)} window: ${when}; see docs/operations.md, "Oplog headroom"`,
      );
    } else if (!headroom.atRisk && wasAtRisk) {
      this.#o.logger.info(fields, 'oplog headroom back above the threshold');
    }
  }

  #off(message: string, reason: OplogUnavailableReason): void {
    if (this.#unavailable !== reason) {
      // A missing privilege is the operator's to fix (a warning); no oplog or mongos is how the source is.
      const level = reason === 'unauthorized' ? 'warn' : 'info';
      this.#o.logger[level]({ reason }, `oplog headroom guard off: ${message}`);
      this.#unavailable = reason;
    }
    if (this.#source !== undefined) this.#o.metrics.oplogWindow(this.#source, undefined);
    this.#source = undefined;
    for (const id of [...this.#marks.keys()]) this.#forget(id);
  }

  #forget(id: string): void {
    this.#marks.delete(id);
    this.#o.metrics.oplogHeadroom(id, undefined);
  }
}
