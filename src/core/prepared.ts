import { type TableField } from '../schema/types.js';
import { type ColumnSpec } from '../schema/types.js';
import { type EncodedRow, type HistoryRecord } from './history-rows.js';
import { type ChangeEvent, type ClusterTime, type Position } from './model.js';

/**
 * A change as the stream loop needs it once it is decoded, mapped and encoded: what it was, where it stands
 * in the stream, and its history record (with the row already encoded for the writer). Made on the reading
 * thread from a decoded event, or on a worker thread from its BSON bytes.
 */
export interface PreparedChange {
  readonly kind: ChangeEvent['kind'];
  /** MongoDB's operationType as `operationTypeOf` gives it (metrics; `invalidate` needs `startAfter`). */
  readonly operationType: string;
  /** The event's resume token (`_id._data`). */
  readonly token: string;
  readonly clusterTime: ClusterTime;
  /** Put together from the fragments of a split event: its own token is no safe place to resume from. */
  readonly split?: boolean;
  /** The history row of an upsert, delete or collection-gone; absent for lookup misses and ignored events. */
  readonly record?: HistoryRecord | undefined;
}

/** A pull's changes, prepared, in stream order, and the position after them (as the pull's). */
export interface PreparedBatch {
  readonly changes: readonly PreparedChange[];
  readonly position: Position | undefined;
}

/**
 * Turns what a cursor returned into prepared changes; `now` is the rows' `time_archived`. Called in stream
 * order; several may run at once (read-ahead), and each resolves with its own batch.
 */
export type Prepare<B> = (batch: B, now: Date, signal: AbortSignal) => Promise<PreparedBatch>;

/**
 * How a writer encodes rows, as plain data a worker thread can compile the same encoder from: Storage
 * Write's protobuf rows for `schema` (the client library's descriptor of it), or insertAll's body entries
 * (`{"insertId":…,"json":…}`, the insertId from `idColumn`).
 */
export type EncodingSpec =
  | {
      readonly format: 'storage-write';
      readonly schema: readonly TableField[];
      /**
       * While BigQuery does not take `schema` on the stream yet (a column was just added): the schema it
       * takes. A row with nothing beyond it is encoded with it, as the writer's own `encode` does, so that
       * it is sent as it is (see RowSchema).
       */
      readonly accepted?: readonly TableField[];
    }
  | { readonly format: 'insert-all'; readonly idColumn: string };

/**
 * Which schema of a Storage Write spec a row was encoded with: `schema` (no `accepted` in the spec, or none
 * asked), `accepted`, or `schema` because the row has a value `accepted` has no field for.
 */
export type RowSchema = 'schema' | 'accepted' | 'beyond-accepted';

/**
 * A writer's encoding at one schema: `spec` for the worker threads, and `wrap` to make the bytes a worker
 * encoded with it into this writer's EncodedRow (tied to that schema, so they go out only with it).
 * `bytes` undefined: a value did not fit its column (the writer refuses the row when it is sent); `size`
 * is then the row's JSON length. The same object as long as the writer's schema stays the same.
 */
export interface RowEncoding {
  readonly spec: EncodingSpec;
  wrap(bytes: Uint8Array | undefined, size: number, schema?: RowSchema): EncodedRow;
}

/** How rows are mapped, as plain data a worker thread compiles the same RowMapper from. */
export interface MappingSpec {
  readonly columns: readonly ColumnSpec[];
  /** As RowMapperOptions' `captureUnmapped`. */
  readonly captureUnmapped: boolean;
  /**
   * With `add_columns`: the columns evolution plans from (SchemaEvolution's `planned`). A document with a
   * field planning would add is reported, and its batch is evolved and mapped again on the reading thread.
   */
  readonly planned?: readonly ColumnSpec[];
}
