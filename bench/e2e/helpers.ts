// Pure helpers of the end-to-end benchmark (bench/e2e-peers.ts): document shapes, the plan of the writer's
// operations, and the CPU time of a process group read from /proc.

/** Whether `value` is a plain object or array (not a BSON value such as ObjectId, Decimal128 or Date). */
function isContainer(value: unknown): value is Record<string, unknown> | unknown[] {
  if (Array.isArray(value)) return true;
  if (typeof value !== 'object' || value === null) return false;
  const proto = Object.getPrototypeOf(value) as unknown;
  return proto === Object.prototype || proto === null;
}

/**
 * The document with every nested object and array spread into top-level fields named by their path joined
 * with `_` (`campaign.tags[1]` becomes `campaign_tags_1`), so that its inferred schema has no RECORD and no
 * REPEATED column: bqemulator takes only such tables through the Storage Write API. `_id` stays as it is.
 */
export function flattenDocument(doc: Readonly<Record<string, unknown>>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const visit = (prefix: string, value: unknown): void => {
    if (isContainer(value)) {
      const entries = Array.isArray(value)
        ? value.map((v, i) => [String(i), v] as const)
        : Object.entries(value);
      for (const [key, inner] of entries) visit(`${prefix}_${key}`, inner);
      return;
    }
    out[prefix] = value;
  };
  for (const [key, value] of Object.entries(doc)) {
    if (key === '_id') out[key] = value;
    else visit(key, value);
  }
  return out;
}

/** One round of the writer: an insertMany, a bulkWrite of updates, a bulkWrite of deletes. */
export interface WriteRound {
  /** Indexes (into the new documents) of the documents inserted. */
  readonly inserts: readonly [start: number, end: number];
  /** Indexes (into the backfilled documents) of the documents updated. */
  readonly updates: readonly number[];
  /** Indexes (into the backfilled documents) of the documents deleted. */
  readonly deletes: readonly number[];
}

/**
 * The writer's plan for `events` change events on a collection of `existing` backfilled documents, in rounds
 * of `roundEvents` events: half inserts of new documents, 30% updates and 20% deletes of backfilled ones.
 * Every delete takes a different document; updates take the documents no delete takes, in turn (one may be
 * updated more than once), so every operation changes a document and yields exactly one change event.
 */
export function writePlan(events: number, existing: number, roundEvents = 1_000): WriteRound[] {
  const deletes = Math.floor(events * 0.2);
  const updates = Math.floor(events * 0.3);
  const inserts = events - deletes - updates;
  if (deletes >= existing) {
    throw new Error(
      `${events} events delete ${deletes} documents: the collection needs more than ${existing}`,
    );
  }
  const rounds: WriteRound[] = [];
  const count = Math.ceil(events / roundEvents);
  const share = (total: number, round: number): [number, number] => [
    Math.floor((total * round) / count),
    Math.floor((total * (round + 1)) / count),
  ];
  for (let r = 0; r < count; r++) {
    const [i0, i1] = share(inserts, r);
    const [u0, u1] = share(updates, r);
    const [d0, d1] = share(deletes, r);
    rounds.push({
      inserts: [i0, i1],
      updates: Array.from({ length: u1 - u0 }, (_, k) => deletes + ((u0 + k) % (existing - deletes))),
      deletes: Array.from({ length: d1 - d0 }, (_, k) => d0 + k),
    });
  }
  return rounds;
}

/** The process group and the CPU time (user + system, in clock ticks) of one line of /proc/<pid>/stat. */
export function parseProcStat(text: string): { readonly pgrp: number; readonly ticks: number } {
  // The command name (field 2) is in parentheses and may hold spaces and parentheses: fields are counted
  // from the last ')'. After it come state (3), ppid (4), pgrp (5) ... utime (14), stime (15).
  const close = text.lastIndexOf(')');
  if (close < 0) throw new Error(`not a /proc/<pid>/stat line: ${text.slice(0, 80)}`);
  const fields = text
    .slice(close + 2)
    .trim()
    .split(/\s+/);
  const pgrp = Number(fields[2]);
  const ticks = Number(fields[11]) + Number(fields[12]);
  if (!Number.isFinite(pgrp) || !Number.isFinite(ticks)) {
    throw new Error(`unreadable /proc/<pid>/stat line: ${text.slice(0, 80)}`);
  }
  return { pgrp, ticks };
}

/** Rounds a rate or a duration for the JSON lines: three significant digits at most, integers above 100. */
export function round3(value: number): number {
  return Math.abs(value) >= 100 ? Math.round(value) : Number(value.toPrecision(3));
}

/** The total of a series in Prometheus text (`mba_change_events_total`, `..._sum`), over all its label sets. */
export function seriesTotal(text: string, series: string): number {
  let total = 0;
  for (const row of text.split('\n')) {
    const match = /^(\S+?)(?:\{[^}]*\})?\s+(\S+)$/.exec(row);
    if (match?.[1] === series) total += Number(match[2]);
  }
  return total;
}

/** The `_sum` and `_count` of a histogram in Prometheus text, over all its label sets. */
export function histogramTotals(
  text: string,
  name: string,
): { readonly sum: number; readonly count: number } {
  return { sum: seriesTotal(text, `${name}_sum`), count: seriesTotal(text, `${name}_count`) };
}
