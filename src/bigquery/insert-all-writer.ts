import { type Table } from '@google-cloud/bigquery';
import { abortable } from '../core/deadline.js';
import { type RowEncoding } from '../core/prepared.js';
import { BigQueryError } from '../errors.js';
import { type TableField } from '../schema/types.js';
import { toBigQueryError } from './error-mapping.js';
import {
  type AppendOutcome,
  type EncodedRow,
  type HistoryRow,
  type OutgoingRow,
  type RowRejection,
  type TableWriter,
} from './writer.js';

interface InsertAllResponse {
  readonly insertErrors?: readonly {
    readonly index?: number;
    readonly errors?: readonly {
      readonly reason?: string;
      readonly message?: string;
      /** The refused field's path ("no such field." names no field itself). */
      readonly location?: string;
    }[];
  }[];
}

/** What every request says besides its rows: the JSON text before the first row and after the last. */
export const INSERT_ALL_BODY_HEAD =
  '{"kind":"bigquery#tableDataInsertAllRequest","skipInvalidRows":true,"ignoreUnknownValues":false,"rows":[';
export const INSERT_ALL_BODY_TAIL = ']}';

/**
 * A row as an insertAll request carries it: its entry of the body (`{"insertId":...,"json":...}`) in UTF-8,
 * in a buffer outside the JavaScript heap. `size` is the row's JSON alone, as BigQuery counts it.
 */
class JsonRow implements EncodedRow {
  constructor(
    readonly size: number,
    /** Undefined when the row has no insertId: its append refuses it (see `insertIdOf`). */
    readonly entry: Buffer | undefined,
    /** The column the insertId was taken from. */
    readonly idColumn: string,
  ) {}
}

/**
 * A row's entry of an insertAll body (`{"insertId":…,"json":…}` in UTF-8, the insertId from `idColumn`) and
 * its size, the row's JSON alone in UTF-8 (as BigQuery counts it). `entry` is undefined when the row has no
 * insertId: its append refuses it. Pure, so worker threads encode rows exactly as the writer does.
 */
export function insertAllEntry(
  row: HistoryRow,
  idColumn: string,
): { readonly size: number; readonly entry: Buffer | undefined } {
  const json = JSON.stringify(row);
  const size = Buffer.byteLength(json, 'utf8');
  const id = row[idColumn];
  const entry =
    typeof id === 'string' && id.length > 0
      ? Buffer.from(`{"insertId":${JSON.stringify(id)},"json":${json}}`, 'utf8')
      : undefined;
  return { size, entry };
}

const COMMA = Buffer.from(',');
const BODY_HEAD = Buffer.from(INSERT_ALL_BODY_HEAD);
const BODY_TAIL = Buffer.from(INSERT_ALL_BODY_TAIL);

/**
 * The legacy streaming path (`tabledata.insertAll`), the original service's: every row carries
 * `insertId = _event_id`, so BigQuery's best-effort dedup drops a retried row it already has, and
 * `skipInvalidRows` lets the valid rows of a request land when some are refused.
 *
 * The body goes to the client library as JSON text, not as an object: given an object, the library replaces
 * `{{projectId}}` in every string of it with the project id (rewriting archived data, in the caller's row
 * objects too) and walks every row to do so. Each row is serialised once, by `encode`, into its entry of
 * the body; `append` joins the entries.
 */
export class InsertAllWriter implements TableWriter {
  readonly kind = 'insert-all' as const;
  readonly #table: Table;
  readonly #idColumn: string;
  #encoding: RowEncoding | undefined;

  /** `idColumn` names the column whose value is the insertId (the dead-letter table uses `event_id`). */
  constructor(table: Table, idColumn = '_event_id') {
    this.#table = table;
    this.#idColumn = idColumn;
  }

  /** Its encoding for worker threads: their bytes are the entry `encode` makes (see RowEncoding). */
  rowEncoding(): RowEncoding {
    this.#encoding ??= {
      spec: { format: 'insert-all', idColumn: this.#idColumn },
      wrap: (bytes, size) =>
        new JsonRow(
          size,
          bytes === undefined ? undefined : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength),
          this.#idColumn,
        ),
    };
    return this.#encoding;
  }

  /** The row's entry of the request body; its size is the row's JSON in UTF-8. */
  encode(row: HistoryRow): JsonRow {
    const { size, entry } = insertAllEntry(row, this.#idColumn);
    return new JsonRow(size, entry, this.#idColumn);
  }

  async append(rows: readonly OutgoingRow[], signal?: AbortSignal): Promise<AppendOutcome> {
    if (rows.length === 0) return { rejected: [] };
    signal?.throwIfAborted();
    const parts: Buffer[] = [BODY_HEAD];
    for (const [index, row] of rows.entries()) {
      if (index > 0) parts.push(COMMA);
      parts.push(this.#entryOf(row));
    }
    parts.push(BODY_TAIL);
    const body = Buffer.concat(parts).toString('utf8');
    let response: InsertAllResponse;
    try {
      // `request` rather than `insert`: insert deep-copies every row and retries failed rows by itself.
      // An aborted caller stops waiting at once (a stop must not hang on an unanswered request); the request
      // may still land, which is harmless: whoever sends these rows again sends them under the same insertId.
      const result: unknown = await abortable(
        this.#table.request({
          method: 'POST',
          uri: '/insertAll',
          body,
          headers: { 'Content-Type': 'application/json' },
        }),
        signal,
      );
      response = (Array.isArray(result) ? result[0] : result) as InsertAllResponse;
    } catch (error) {
      // The caller's own reason, not a BigQuery failure to classify.
      if (signal?.aborted && error === signal.reason) throw error;
      throw toBigQueryError(error, `insertAll into ${this.#table.id ?? '?'}`);
    }
    return { rejected: rejectionsOf(response, rows.length) };
  }

  /** The row's entry as encoded at batching when it was encoded for this id column, else made now. */
  #entryOf(row: OutgoingRow): Buffer {
    const encoded = row.encoded;
    if (encoded instanceof JsonRow && encoded.idColumn === this.#idColumn && encoded.entry !== undefined) {
      return encoded.entry;
    }
    const values = row.row();
    const entry = `{"insertId":${JSON.stringify(insertIdOf(values, this.#idColumn))},"json":${JSON.stringify(values)}}`;
    return Buffer.from(entry, 'utf8');
  }

  /** insertAll sends JSON by column name: nothing here depends on the schema. */
  updateSchema(_schema: readonly TableField[]): Promise<void> {
    return Promise.resolve();
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}

function insertIdOf(row: HistoryRow, column: string): string {
  const id = row[column];
  if (typeof id !== 'string' || id.length === 0) {
    throw new BigQueryError('poison', `a row without ${column} cannot be written (it is the dedup key)`);
  }
  return id;
}

/**
 * Rows BigQuery refused. With skipInvalidRows the others landed; a row marked only `stopped` was refused
 * because of another row, which skipInvalidRows rules out, so it is reported like any refusal.
 */
function rejectionsOf(response: InsertAllResponse, count: number): RowRejection[] {
  const rejected: RowRejection[] = [];
  for (const failure of response.insertErrors ?? []) {
    const index = failure.index;
    if (index === undefined || index < 0 || index >= count) continue;
    const reasons = (failure.errors ?? []).map(
      (e) => [e.reason, e.message].filter(Boolean).join(': ') + (e.location ? ` (field ${e.location})` : ''),
    );
    rejected.push({ index, reason: reasons.join('; ') || 'refused by BigQuery without a reason' });
  }
  return rejected;
}
