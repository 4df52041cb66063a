import { type IdRange } from './ports.js';

/**
 * The vocabulary shared by `verify` (comparing a collection with its `<table>_view`), repair (copying again
 * only the ranges that differ) and the background verifier. Pure types: the comparison itself lives in
 * `app/verifier.ts`, the BigQuery side in `bigquery/view-reader.ts`.
 */

/** Ids listed in a report at most, per list: a report names examples, it is not an export. */
export const MAX_REPORTED_IDS = 100;

/**
 * The count and the order-independent digest of the documents of one `_id` range: the XOR of every
 * document's 60-bit hash of its mapped row (see `app/verifier.ts` for the canonical form both sides hash).
 */
export interface RangeDigest {
  readonly count: number;
  readonly digest: bigint;
}

/** One document's id (`_doc_id`, the canonical string of its `_id`) and the hash of its mapped row. */
export interface DocumentDigest {
  readonly docId: string;
  readonly hash: bigint;
}

/** What a query over `<table>_view` returned, and what BigQuery says it scanned to answer it. */
export interface ViewAnswer<T> {
  readonly value: T;
  readonly bytesScanned: number;
}

/**
 * The read side of BigQuery, as `verify` and repair need it: digests of `<table>_view` over `_id` ranges.
 * The ranges are the backfill's (`SnapshotSource.split`): bounds are canonical Extended JSON `_id`s in BSON
 * order.
 */
export interface ViewReader {
  /** Count and digest per range, in the order given (one query for all of them). */
  rangeDigests(ranges: readonly IdRange[], signal: AbortSignal): Promise<ViewAnswer<RangeDigest[]>>;
  /** Every document of one range with its hash (for a range that differs, to name the ids). */
  documentDigests(range: IdRange, signal: AbortSignal): Promise<ViewAnswer<DocumentDigest[]>>;
}

/** A list of document ids in a report: how many there are, and the first MAX_REPORTED_IDS of them. */
export interface ReportedIds {
  readonly count: number;
  /** `_doc_id` strings (ObjectId as hex, other ids as canonical Extended JSON). */
  readonly ids: readonly string[];
}

/** What one verification found, after the ranges that differed were checked again. */
export interface VerifyReport {
  /** The mapping's id (its settings document's `_id` as a string). */
  readonly mapping: string;
  /** `project.dataset.<table>_view`. */
  readonly view: string;
  readonly startedAt: Date;
  readonly finishedAt: Date;
  /** Ranges compared in this run (all of them, or the background verifier's share). */
  readonly rangesChecked: number;
  /** Ranges whose difference persisted once the mapping's checkpoint had passed the first read. */
  readonly differingRanges: readonly IdRange[];
  readonly documentsChecked: number;
  /** In MongoDB, not in the view. */
  readonly missing: ReportedIds;
  /** In the view, not in MongoDB. */
  readonly extra: ReportedIds;
  /** In both, with different content. */
  readonly differing: ReportedIds;
  /** Bytes BigQuery reported as processed by the verification queries. */
  readonly bytesScanned: number;
  /**
   * Documents of the checked ranges whose `_id` type verify cannot place in a range in SQL (neither an
   * ObjectId, a string nor an integer): not compared. Absent: none.
   */
  readonly unverifiable?: number;
  /**
   * False when the mapping's checkpoint did not pass the time of a read within the settle timeout (the
   * daemon stopped or far behind): the report then shows what persisted after the wait, changes in flight
   * included. Absent: it did.
   */
  readonly settled?: boolean;
}

/** Verifies one mapping; the daemon's background verifier and `on_history_lost: repair` hold one per mapping. */
export interface MappingVerifier {
  /**
   * Compares the collection with the view over `ranges` `_id` ranges (default: the verifier's), or over a
   * `share` (0 < share <= 1) of them chosen in turn across runs, so that successive runs cover everything.
   */
  verify(
    options: { readonly ranges?: number; readonly share?: number },
    signal: AbortSignal,
  ): Promise<VerifyReport>;
}

/** Why a repair was asked for. */
export const REPAIR_REASONS = ['verify', 'background', 'history-lost'] as const;
export type RepairReason = (typeof REPAIR_REASONS)[number];

/**
 * A request to copy again only some `_id` ranges of a mapping: current documents as backfill rows, and a
 * delete row for every id in the view that MongoDB no longer has, all at one new snapshot start, so that the
 * views converge without touching the other ranges.
 */
export interface RepairRequest {
  /** Random, given when the request is recorded: what a repair that served it removes it by. */
  readonly id: string;
  readonly ranges: readonly IdRange[];
  readonly reason: RepairReason;
  readonly requestedAt: Date;
}
