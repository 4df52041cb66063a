import { type WriterKind } from '../core/settings.js';
import { type TableField } from '../schema/types.js';

/** A complete history-table row (user columns, metadata, `_unmapped`) in insertAll wire form. */
export type HistoryRow = Readonly<Record<string, unknown>>;

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
 * Writes rows into one history table. `append` resolves once BigQuery acknowledged the request (rows it
 * refused individually are returned, not thrown); any other failure rejects with a classified error. It
 * never retries by itself: retrying is the caller's decision, with the same `_event_id`s.
 */
export interface TableWriter {
  readonly kind: WriterKind;
  append(rows: readonly HistoryRow[], signal?: AbortSignal): Promise<AppendOutcome>;
  /**
   * The row's size in this writer's requests, for batching. A writer that must encode the row to know may
   * keep that encoding for the row's append. Without it, the row's JSON length is used.
   */
  measure?(row: HistoryRow): number;
  /** After an additive schema change: rebuild what depends on the schema (encoder, stream connection). */
  updateSchema(schema: readonly TableField[]): Promise<void>;
  close(): Promise<void>;
}
