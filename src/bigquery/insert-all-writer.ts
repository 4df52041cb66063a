import { type Table } from '@google-cloud/bigquery';
import { abortable } from '../core/deadline.js';
import { BigQueryError } from '../errors.js';
import { type TableField } from '../schema/types.js';
import { toBigQueryError } from './error-mapping.js';
import { type AppendOutcome, type HistoryRow, type RowRejection, type TableWriter } from './writer.js';

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
 * The legacy streaming path (`tabledata.insertAll`), the original service's: every row carries
 * `insertId = _event_id`, so BigQuery's best-effort dedup drops a retried row it already has, and
 * `skipInvalidRows` lets the valid rows of a request land when some are refused.
 *
 * The body goes to the client library as JSON text, not as an object: given an object, the library replaces
 * `{{projectId}}` in every string of it with the project id (rewriting archived data, in the caller's row
 * objects too) and walks every row to do so. Each row is serialised once: `measure` keeps the text for the
 * row's append.
 */
export class InsertAllWriter implements TableWriter {
  readonly kind = 'insert-all' as const;
  readonly #table: Table;
  readonly #idColumn: string;
  readonly #measured = new WeakMap<HistoryRow, string>();

  /** `idColumn` names the column whose value is the insertId (the dead-letter table uses `event_id`). */
  constructor(table: Table, idColumn = '_event_id') {
    this.#table = table;
    this.#idColumn = idColumn;
  }

  /** The row's size in the request body (its JSON in UTF-8); the text is kept for the row's append. */
  measure(row: HistoryRow): number {
    const json = JSON.stringify(row);
    this.#measured.set(row, json);
    return Buffer.byteLength(json, 'utf8');
  }

  async append(rows: readonly HistoryRow[], signal?: AbortSignal): Promise<AppendOutcome> {
    if (rows.length === 0) return { rejected: [] };
    signal?.throwIfAborted();
    const entries = rows.map(
      (row) =>
        `{"insertId":${JSON.stringify(insertIdOf(row, this.#idColumn))},"json":${this.#measured.get(row) ?? JSON.stringify(row)}}`,
    );
    const body = `${INSERT_ALL_BODY_HEAD}${entries.join(',')}${INSERT_ALL_BODY_TAIL}`;
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
