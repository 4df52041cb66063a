import { type EncodedRow, type HistoryRow } from '../core/history-rows.js';
import { type RowEncoding } from '../core/prepared.js';
import { type WriterKind } from '../core/settings.js';
import { type TableField } from '../schema/types.js';

export { type EncodedRow, type HistoryRow } from '../core/history-rows.js';

/** A row BigQuery refused on its own (the rest of its request landed). */
export interface RowRejection {
  /** Index in the rows given to `append`. */
  readonly index: number;
  readonly reason: string;
}

export interface AppendOutcome {
  readonly rejected: readonly RowRejection[];
}

/**
 * A row handed to `append`: as a writer encoded it when it was batched, and the row itself, built again on
 * demand, for a writer that cannot send that encoding (another writer made it, or for another schema).
 */
export interface OutgoingRow {
  readonly encoded: EncodedRow;
  row(): HistoryRow;
}

/**
 * Writes rows into one history table. `append` resolves once BigQuery acknowledged the request (rows it
 * refused individually are returned, not thrown); any other failure rejects with a classified error. It
 * never retries by itself: retrying is the caller's decision, with the same `_event_id`s.
 */
export interface TableWriter {
  readonly kind: WriterKind;
  append(rows: readonly OutgoingRow[], signal?: AbortSignal): Promise<AppendOutcome>;
  /**
   * The row as this writer sends it, and its size in this writer's requests, for batching: encoded once,
   * so that the row object need not be kept until its append. Never throws for the row's values: a row
   * that cannot be encoded is sized by its JSON and refused by `append`.
   */
  encode(row: HistoryRow): EncodedRow;
  /**
   * How `encode` encodes now, as plain data for worker threads, and how to take back what they encoded
   * (see RowEncoding); the same object until the schema changes. Writers without it (test doubles) have
   * their rows encoded again when they are sent.
   */
  rowEncoding?(): RowEncoding;
  /** After an additive schema change: rebuild what depends on the schema (encoder, stream connection). */
  updateSchema(schema: readonly TableField[]): Promise<void>;
  close(): Promise<void>;
}
