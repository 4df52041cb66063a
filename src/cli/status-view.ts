import { type Document } from 'mongodb';
import { bsonKind, isDocument } from '../base/bson-kind.js';
import { settingsIdString } from '../core/settings.js';
import { estimateBackfill, formatDuration } from '../core/progress.js';
import { toClusterTime } from '../mongodb/change-event.js';
import { headroomOf, lagRate, secondsUntilLost, type OplogWindow } from '../core/oplog-headroom.js';
import { resumeSecondsOf } from '../mongodb/oplog-window.js';
import { scrubText } from '../observability/logger.js';
import { readRepairState } from '../mongodb/checkpoint-store.js';

/** A backfill under way, as `status` shows it; a field is null where there is no basis for it. */
export interface BackfillOverview {
  /** Documents copied so far, earlier runs of the same backfill included (the checkpoint's count). */
  readonly copied: number;
  /** The collection's estimated count when the backfill started. */
  readonly estimated: number | null;
  readonly percent: number | null;
  /** Documents per second: between two reads of `status --watch`, else as the owner last reported it. */
  readonly docsPerSecond: number | null;
  /** Seconds until the estimate is reached at that rate. */
  readonly etaSeconds: number | null;
  /** Ranges done and ranges in all, when the copy was split. */
  readonly rangesDone: number | null;
  readonly ranges: number | null;
}

/**
 * A mapping's standing against the source's oplog window, as the daemon's headroom guard computes it
 * (src/core/oplog-headroom.ts): null in `MappingOverview.oplog` when the window or the resume point is unknown.
 */
export interface OplogOverview {
  readonly windowSeconds: number;
  /** How far the resume point (position, or a backfill's snapshot start) is behind the newest oplog entry. */
  readonly lagSeconds: number;
  /** Window minus lag: how long the oplog still holds the resume point (below 0: gone). */
  readonly headroomSeconds: number;
  /** Headroom below OPLOG_HEADROOM_WARN_RATIO of the window, on a full oplog. */
  readonly atRisk: boolean;
  /** The oplog is not full yet: it has dropped nothing, and its window grows until it is. */
  readonly filling: boolean;
  /** Seconds of lag gained per second (1: standing still); null when unknown (one read of a running mapping). */
  readonly lagRate: number | null;
  /** Seconds until the history is lost at that rate; null when the lag is not growing or its rate is unknown. */
  readonly lostInSeconds: number | null;
}

/** What `status` knows of the source's oplog: its window, the threshold, and a mapping's lag at the previous read. */
export interface OplogContext {
  readonly window: OplogWindow;
  readonly warnRatio: number;
  /** The mapping's oplog lag at an earlier read of `--watch` (lagBaseline), for the rate between the two. */
  readonly earlier?: { readonly lagSeconds: number; readonly atMs: number };
}

/**
 * The shortest time `status --watch` measures the lag rate over: the lag moves in steps (an oplog no-op every
 * 10 s, a checkpoint about every 30 s), so a rate between two redraws 2 s apart would jump between 0 and 5.
 */
export const MIN_LAG_RATE_WINDOW_MS = 60_000;

/** A mapping's oplog lag read by `status --watch`. */
export interface LagSample {
  readonly lagSeconds: number;
  readonly atMs: number;
}

/**
 * The baseline of the lag rate at `nowMs`: the newest sample at least MIN_LAG_RATE_WINDOW_MS old, or, before
 * a minute has passed, the first sample; undefined without one.
 */
export function lagBaseline(kept: readonly LagSample[], nowMs: number): LagSample | undefined {
  let base = kept[0];
  for (const sample of kept) if (nowMs - sample.atMs >= MIN_LAG_RATE_WINDOW_MS) base = sample;
  return base;
}

/** The samples to keep once `sample` is read: from the newest baseline it could need on (a minute's worth). */
export function keepLagSamples(kept: readonly LagSample[], sample: LagSample): LagSample[] {
  const all = [...kept, sample];
  const base = lagBaseline(all, sample.atMs);
  return base === undefined ? all : all.slice(all.indexOf(base));
}

/** States in which nothing moves a mapping's position on: its lag grows a second per second. */
const STANDING_STILL: ReadonlySet<string> = new Set(['stopped', 'failed', 'retrying', 'invalid', 'unknown']);

/**
 * The mapping's headroom at `now`. The rate of its lag comes from the previous read (`--watch`); without one,
 * a mapping no instance runs (no lease holder) or that stands still (STANDING_STILL) gains a second per second,
 * and a running one's rate is unknown (then only the headroom is said).
 */
export function oplogOverview(
  records: MappingRecords,
  state: string,
  now: number,
  oplog: OplogContext | undefined,
): OplogOverview | null {
  const resume = records.checkpoint ? resumeSecondsOf(records.checkpoint) : undefined;
  if (!oplog || resume === undefined) return null;
  const headroom = headroomOf(oplog.window, resume, oplog.warnRatio);
  const still = records.holder == null || STANDING_STILL.has(state);
  const rate =
    lagRate(oplog.earlier, { lagSeconds: headroom.lagSeconds, atMs: now }) ?? (still ? 1 : undefined);
  return {
    ...headroom,
    lagRate: rate ?? null,
    lostInSeconds: secondsUntilLost(headroom.headroomSeconds, rate) ?? null,
  };
}

/** The line `status` prints under an at-risk mapping's row; undefined when it is not at risk. */
export function oplogRiskText(oplog: OplogOverview | null): string | undefined {
  if (oplog?.atRisk !== true) return undefined;
  const share = `oplog headroom ${formatDuration(Math.max(0, oplog.headroomSeconds))} of ${formatDuration(oplog.windowSeconds)}`;
  if (oplog.headroomSeconds <= 0) return `${share}: history already lost (its resume point left the oplog)`;
  if (oplog.lagRate === null) return `${share}; \`status --watch\` shows the rate`;
  if (oplog.lostInSeconds === null) return `${share}; the lag is not growing`;
  return `${share}: history lost in ~${formatDuration(oplog.lostInSeconds)} at the current rate`;
}

/** One mapping as `status` shows it (and `status --json` prints it); null where nothing is known. */
export interface MappingOverview {
  readonly id: string;
  /** `<mongo_database>.<mongo_collection>` */
  readonly source: string;
  readonly target: string;
  /** The state the owner last reported (`unknown` before it reported one). */
  readonly state: string;
  readonly message: string | null;
  /**
   * Now minus the cluster time of the checkpointed change-stream position. An idle mapping's position is
   * saved at most every IDLE_CHECKPOINT_INTERVAL_MS, so it shows up to that much; null before a position.
   */
  readonly lagSeconds: number | null;
  /** Where the change stream resumes after (the checkpoint's cluster time), ISO 8601. */
  readonly position: string | null;
  /** The resume point is the invalidate after a drop or rename. */
  readonly afterDrop: boolean;
  /** When the checkpoint was last saved. */
  readonly checkpointAt: string | null;
  readonly backfill: BackfillOverview | null;
  readonly lastFailure: { readonly message: string; readonly at: string | null } | null;
  /** The instance holding the mapping's lease now (null when nobody holds a live one). */
  readonly holder: string | null;
  /** When the owner last wrote the status. */
  readonly updatedAt: string | null;
  /** Its oplog headroom; null where the window cannot be read or the mapping has no resume point. */
  readonly oplog: OplogOverview | null;
  /** The repair under way, the requests waiting and the last repair done (null: none ever). */
  readonly repair: RepairOverview | null;
  /** What the last verification found (null: never verified, or not kept). */
  readonly lastVerification: VerificationOverview | null;
}

/** Repairs of one mapping, as `status` shows them. */
export interface RepairOverview {
  /** Requests not served yet (a repair under way serves the ones it was started for). */
  readonly pending: number;
  readonly running: {
    readonly reason: string;
    readonly ranges: number;
    /** Ranges whose copy and delete pass are both done. */
    readonly rangesDone: number;
    readonly documents: number;
    readonly deletes: number;
  } | null;
  readonly last: {
    readonly reason: string;
    readonly finishedAt: string;
    readonly ranges: number;
    readonly documents: number;
    readonly deletes: number;
  } | null;
}

/** The last verification of one mapping, as `status` shows it. */
export interface VerificationOverview {
  readonly finishedAt: string;
  readonly rangesChecked: number;
  readonly rangesDiffering: number;
  readonly missing: number;
  readonly extra: number;
  readonly differing: number;
  readonly bytesScanned: number;
}

/** What `status` read of one mapping: its settings document, checkpoint and lease holder. */
export interface MappingRecords {
  readonly settings: Document;
  readonly checkpoint: Document | undefined;
  readonly holder: string | null | undefined;
}

/** A backfill's count at an earlier read, for the rate between two reads of `--watch`. */
export interface EarlierCount {
  readonly copied: number;
  /** Milliseconds since the epoch. */
  readonly at: number;
}

function count(value: unknown): number | undefined {
  return typeof value === 'number' && Number.isFinite(value) && value >= 0 ? value : undefined;
}

function iso(value: unknown): string | null {
  return value instanceof Date && Number.isFinite(value.getTime()) ? value.toISOString() : null;
}

function text(value: unknown): string | null {
  return typeof value === 'string' ? value : null;
}

/** The checkpoint's change-stream cluster time in milliseconds since the epoch; undefined without one. */
function positionTime(checkpoint: Document | undefined): number | undefined {
  const position: unknown = checkpoint?.position;
  const time: unknown = isDocument(position) ? position.clusterTime : undefined;
  return bsonKind(time) === 'Timestamp' ? toClusterTime(time).t * 1_000 : undefined;
}

/** Documents per second between an earlier read and now; undefined without one, or after a restart. */
function rateOf(copied: number, now: number, earlier: EarlierCount | undefined): number | undefined {
  if (!earlier || now <= earlier.at || copied < earlier.copied) return undefined;
  return (copied - earlier.copied) / ((now - earlier.at) / 1_000);
}

/**
 * The progress of the checkpoint's backfill, when one is under way. While the mapping is `backfilling`, the
 * rate is the change of `copied` since `earlier` (a previous read of `--watch`) when there is one,
 * otherwise the rate the owner reported; in another state there is none. The ETA follows from the rate.
 */
export function backfillOverview(
  status: Document | undefined,
  checkpoint: Document | undefined,
  now: number,
  earlier?: EarlierCount,
): BackfillOverview | null {
  const backfill: unknown = checkpoint?.backfill;
  if (!isDocument(backfill) || backfill.done === true) return null;
  // The checkpoint counts what was saved, the owner's status what it copied by its last report: the larger is
  // the newer (a rate next to the checkpoint's 0 of a copy under way would promise an ETA from nothing copied).
  const copied = Math.max(count(backfill.copied) ?? 0, count(status?.backfillCopied) ?? 0);
  const estimated = count(backfill.estimated) ?? count(status?.backfillEstimated);
  const { percent } = estimateBackfill({ copied, estimated, elapsedSeconds: 0 });
  const backfilling = status?.state === 'backfilling';
  // Stopped, retrying or failed: a rate would be a stale one, or the zero of a copy that does not run.
  const rate = backfilling ? (rateOf(copied, now, earlier) ?? count(status.backfillRate)) : undefined;
  const remaining = estimated === undefined ? 0 : estimated - copied;
  const etaSeconds =
    rate !== undefined && rate > 0 && remaining > 0 ? Math.ceil(remaining / rate) : undefined;
  const ranges: unknown = backfill.ranges;
  const split = Array.isArray(ranges) && ranges.length > 0 ? (ranges as unknown[]) : undefined;
  return {
    copied,
    estimated: estimated ?? null,
    percent: percent ?? null,
    docsPerSecond: rate ?? null,
    etaSeconds: etaSeconds ?? null,
    rangesDone: split ? split.filter((range) => isDocument(range) && range.done === true).length : null,
    ranges: split ? split.length : null,
  };
}

/** The repairs of the checkpoint (under way, waiting, last done); null when there never was one. */
export function repairOverview(checkpoint: Document | undefined): RepairOverview | null {
  const state = readRepairState(checkpoint ?? null);
  const { progress, last } = state;
  if (!progress && !last && state.pending.length === 0) return null;
  const serving = new Set(progress?.requests);
  const ranges = progress?.backfill.ranges ?? [];
  return {
    pending: state.pending.filter((r) => !serving.has(r.id)).length,
    running: progress
      ? {
          reason: progress.reason,
          ranges: ranges.length,
          rangesDone: ranges.filter((r, i) => r.done && progress.deletesDone[i] === true).length,
          documents: progress.backfill.copied,
          deletes: progress.deletes,
        }
      : null,
    last: last
      ? {
          reason: last.reason,
          finishedAt: last.finishedAt.toISOString(),
          ranges: last.ranges,
          documents: last.documents,
          deletes: last.deletes,
        }
      : null,
  };
}

/** The checkpoint's `lastVerification`; null without one. */
export function verificationOverview(checkpoint: Document | undefined): VerificationOverview | null {
  const kept: unknown = checkpoint?.lastVerification;
  if (!isDocument(kept)) return null;
  const finishedAt = iso(kept.finishedAt);
  if (finishedAt === null) return null;
  return {
    finishedAt,
    rangesChecked: count(kept.rangesChecked) ?? 0,
    rangesDiffering: count(kept.rangesDiffering) ?? 0,
    missing: count(kept.missing) ?? 0,
    extra: count(kept.extra) ?? 0,
    differing: count(kept.differing) ?? 0,
    bytesScanned: count(kept.bytesScanned) ?? 0,
  };
}

/**
 * The lines `status` prints under a mapping's row for its repairs and its last verification: a repair under
 * way with its progress, requests waiting, and the last verification with what it found.
 */
export function verifyRepairLines(mapping: MappingOverview, now: number): string[] {
  const lines: string[] = [];
  const running = mapping.repair?.running;
  if (running) {
    lines.push(
      `repair (${running.reason}) under way: ${String(running.rangesDone)}/${String(running.ranges)} ranges, ` +
        `${formatCount(running.documents)} documents and ${formatCount(running.deletes)} deletes written`,
    );
  }
  const pending = mapping.repair?.pending ?? 0;
  if (pending > 0) lines.push(`${String(pending)} repair request(s) waiting`);
  const last = mapping.repair?.last;
  if (last && !running) {
    lines.push(
      `last repair (${last.reason}) ${formatAge(last.finishedAt, now)}: wrote ` +
        `${formatCount(last.documents + last.deletes)} rows (${formatCount(last.documents)} documents, ` +
        `${formatCount(last.deletes)} deletes) over ${String(last.ranges)} ranges`,
    );
  }
  const verified = mapping.lastVerification;
  if (verified) {
    const found =
      verified.rangesDiffering === 0
        ? 'no difference'
        : `${String(verified.rangesDiffering)} ranges differ (${formatCount(verified.missing)} missing, ` +
          `${formatCount(verified.extra)} extra, ${formatCount(verified.differing)} differing)`;
    lines.push(
      `verified ${formatAge(verified.finishedAt, now)}: ${String(verified.rangesChecked)} ranges, ${found}`,
    );
  }
  return lines;
}

/** One mapping's overview at `now` (milliseconds since the epoch). */
export function mappingOverview(
  records: MappingRecords,
  now: number,
  earlier?: EarlierCount,
  oplog?: OplogContext,
): MappingOverview {
  const { settings, checkpoint } = records;
  const status = isDocument(settings.status) ? settings.status : undefined;
  const time = positionTime(checkpoint);
  const position: unknown = checkpoint?.position;
  // A failure's text may quote a connection string: scrubbed as the logs are, for the table and --json alike.
  const stored = text(settings.lastFailure);
  const failure = stored === null ? null : scrubText(stored);
  return {
    id: settingsIdString(settings._id),
    source: `${String(settings.mongo_database)}.${String(settings.mongo_collection)}`,
    target: String(settings.bigquery_table),
    state: text(status?.state) ?? 'unknown',
    message: text(status?.message),
    // Cluster times have whole seconds: a lag under one second shows as 0 (never negative on a skewed clock).
    lagSeconds: time === undefined ? null : Math.max(0, Math.round((now - time) / 1_000)),
    position: time === undefined ? null : new Date(time).toISOString(),
    afterDrop: isDocument(position) && position.invalidate === true,
    // The checkpoints collection is authoritative; the settings document's copy may have been edited away.
    checkpointAt: iso(checkpoint?.updatedAt) ?? iso(status?.lastCheckpointAt),
    backfill: backfillOverview(status, checkpoint, now, earlier),
    lastFailure: failure === null ? null : { message: failure, at: iso(settings.lastFailureAt) },
    holder: records.holder ?? null,
    updatedAt: iso(status?.updatedAt),
    oplog: oplogOverview(records, text(status?.state) ?? 'unknown', now, oplog),
    repair: repairOverview(checkpoint),
    lastVerification: verificationOverview(checkpoint),
  };
}

const COMPACT = new Intl.NumberFormat('en', { notation: 'compact', maximumFractionDigits: 1 });

/** `1.2K`, `3.4M`: a count that fits a column. */
export function formatCount(value: number): string {
  return COMPACT.format(value);
}

/** `12s ago`, `3m05s ago`; `-` without a time. */
export function formatAge(at: string | null, now: number): string {
  return at === null ? '-' : `${formatDuration(Math.max(0, (now - Date.parse(at)) / 1_000))} ago`;
}

function shorten(value: string, width: number): string {
  const line = value.replace(/\s+/g, ' ').trim();
  return line.length <= width ? line : `${line.slice(0, Math.max(1, width - 1))}…`;
}

const HEADER = ['MAPPING', 'STATE', 'LAG', 'BACKFILL', 'DONE', 'RATE', 'ETA', 'HOLDER', 'UPDATED'] as const;
/** The holder is an instance name (host and process): its tail is what tells two replicas apart. */
const HOLDER_WIDTH = 20;
const MAPPING_WIDTH = 24;
/**
 * The last failure is the last column when the others leave it this much of the line; otherwise it goes on
 * a line of its own under its mapping's row, with the holder and the update time when even those do not fit
 * (an 80-column terminal keeps the progress columns aligned and readable).
 */
const MIN_FAILURE_WIDTH = 24;
/** The columns that stay in the row whatever the width: mapping, state, lag and the backfill's progress. */
const PROGRESS_COLUMNS = 7;
const CONTINUATION = '  ↳ ';
export const DEFAULT_TERMINAL_COLUMNS = 120;

function cells(mapping: MappingOverview, now: number): string[] {
  const b = mapping.backfill;
  const holder = mapping.holder ?? '-';
  return [
    shorten(mapping.id, MAPPING_WIDTH),
    mapping.state,
    mapping.lagSeconds === null ? '-' : formatDuration(mapping.lagSeconds),
    b === null ? '-' : `${formatCount(b.copied)}/${b.estimated === null ? '?' : formatCount(b.estimated)}`,
    b?.percent == null ? '-' : `${b.percent.toFixed(1)}%`,
    b?.docsPerSecond == null ? '-' : `${formatCount(Math.round(b.docsPerSecond))}/s`,
    b?.etaSeconds == null ? '-' : formatDuration(b.etaSeconds),
    holder.length > HOLDER_WIDTH ? `…${holder.slice(-(HOLDER_WIDTH - 1))}` : holder,
    formatAge(mapping.updatedAt, now),
  ];
}

function failureText(mapping: MappingOverview, now: number): string | undefined {
  const failure = mapping.lastFailure;
  if (failure === null) return undefined;
  return failure.at === null ? failure.message : `${formatAge(failure.at, now)}: ${failure.message}`;
}

/**
 * The table `status` prints: a header and one aligned row per mapping, missing values shown as `-`. The
 * last failure (with how long ago it was written) is the last column, cut to what `columns` leaves of the
 * line; when too little is left it goes under the row, after the holder and the update time when the line
 * cannot hold those either.
 */
export function renderStatusTable(
  mappings: readonly MappingOverview[],
  now: number,
  columns: number = DEFAULT_TERMINAL_COLUMNS,
): string[] {
  const all = mappings.map((mapping) => cells(mapping, now));
  const widths = HEADER.map((title, i) => Math.max(title.length, ...all.map((row) => row[i]?.length ?? 0)));
  const width = (count: number) => widths.slice(0, count).reduce((sum, w) => sum + w + 2, 0);
  const inline = columns - width(HEADER.length) >= MIN_FAILURE_WIDTH;
  const shown = inline || width(HEADER.length) - 2 <= columns ? HEADER.length : PROGRESS_COLUMNS;
  const line = (row: readonly string[], last: string) =>
    [...row.slice(0, shown).map((cell, i) => cell.padEnd(widths[i] ?? 0)), last].join('  ').trimEnd();
  const lines = [line(HEADER, inline ? 'LAST FAILURE' : '')];
  mappings.forEach((mapping, i) => {
    const row = all[i] ?? [];
    const failure = failureText(mapping, now);
    const verifyRepair = verifyRepairLines(mapping, now).map(
      (text) => `${CONTINUATION}${shorten(text, Math.max(MIN_FAILURE_WIDTH, columns - CONTINUATION.length))}`,
    );
    if (inline) {
      lines.push(line(row, failure === undefined ? '-' : shorten(failure, columns - width(HEADER.length))));
      pushOplogRisk(lines, mapping, columns);
      lines.push(...verifyRepair);
      return;
    }
    lines.push(line(row, ''));
    const details = [
      ...(shown < HEADER.length ? [`holder ${row[7] ?? '-'}`, `updated ${row[8] ?? '-'}`] : []),
      ...(failure === undefined ? [] : [`last failure ${failure}`]),
    ];
    if (details.length > 0) {
      const room = Math.max(MIN_FAILURE_WIDTH, columns - CONTINUATION.length);
      lines.push(`${CONTINUATION}${shorten(details.join(', '), room)}`);
    }
    pushOplogRisk(lines, mapping, columns);
    lines.push(...verifyRepair);
  });
  return lines;
}

/** An at-risk mapping's headroom on a line of its own under its row (and under its other details). */
function pushOplogRisk(lines: string[], mapping: MappingOverview, columns: number): void {
  const risk = oplogRiskText(mapping.oplog);
  if (risk === undefined) return;
  lines.push(`${CONTINUATION}${shorten(risk, Math.max(MIN_FAILURE_WIDTH, columns - CONTINUATION.length))}`);
}
