/** What a running backfill has done, as the orchestrator knows it. */
export interface BackfillProgressInput {
  /** Documents copied by the backfill so far, earlier runs of it included (the checkpoint's `copied`). */
  readonly copied: number;
  /** The collection's estimated document count when the backfill started; undefined when unknown. */
  readonly estimated: number | undefined;
  /** Seconds since this run of the backfill started (or resumed). */
  readonly elapsedSeconds: number;
  /**
   * Documents already copied when this run started (the checkpoint it resumed from; 0 for a new backfill):
   * the rate counts only what this run copied in its own elapsed time.
   */
  readonly copiedAtStart?: number;
}

/** How far a backfill is and when it should end; a field is undefined where there is no basis for it. */
export interface BackfillEstimate {
  /** Copied over estimated, in percent, at most 100 (the estimate is a count taken at the start). */
  readonly percent: number | undefined;
  /** Documents per second copied by this run. */
  readonly rate: number | undefined;
  /**
   * Seconds until the estimated total is reached at the current rate, rounded up. Undefined before
   * anything was copied, without an estimate, and once the copy has reached the estimate (documents
   * inserted since the start make it run past it: then only the end of the ranges says when it is done).
   */
  readonly etaSeconds: number | undefined;
}

/**
 * Percent, rate (docs/s) and ETA of a backfill, for `status`, metrics and logs. Pure: the caller keeps the
 * start time and the count it resumed from, and calls this whenever it reports.
 */
export function estimateBackfill(input: BackfillProgressInput): BackfillEstimate {
  const { copied, estimated, elapsedSeconds } = input;
  const copiedHere = copied - (input.copiedAtStart ?? 0);
  const known = estimated !== undefined && Number.isFinite(estimated) && estimated > 0;
  const percent = known ? Math.min(100, (100 * copied) / estimated) : undefined;
  const rate =
    elapsedSeconds > 0 && Number.isFinite(elapsedSeconds) && copiedHere > 0
      ? copiedHere / elapsedSeconds
      : undefined;
  const remaining = known ? estimated - copied : 0;
  const etaSeconds = rate !== undefined && remaining > 0 ? Math.ceil(remaining / rate) : undefined;
  return { percent, rate, etaSeconds };
}

/** A duration for people: `45s`, `12m05s`, `3h07m`, `2d04h`. */
export function formatDuration(seconds: number): string {
  const whole = Math.max(0, Math.ceil(seconds));
  const two = (n: number) => String(n).padStart(2, '0');
  if (whole < 60) return `${String(whole)}s`;
  if (whole < 3_600) return `${String(Math.floor(whole / 60))}m${two(whole % 60)}s`;
  if (whole < 86_400) return `${String(Math.floor(whole / 3_600))}h${two(Math.floor((whole % 3_600) / 60))}m`;
  return `${String(Math.floor(whole / 86_400))}d${two(Math.floor((whole % 86_400) / 3_600))}h`;
}
