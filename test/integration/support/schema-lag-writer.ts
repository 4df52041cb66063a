import { type WriterDecorator } from '../../../src/bigquery/destination.js';
import { toBigQueryError } from '../../../src/bigquery/error-mapping.js';
import {
  type AppendOutcome,
  type EncodedRow,
  type HistoryRow,
  type OutgoingRow,
  type TableWriter,
} from '../../../src/bigquery/writer.js';
import { type TableField } from '../../../src/schema/types.js';

/** What a `SchemaLagWriter` saw, for the test's assertions. */
export interface SchemaLagLog {
  /** Columns the wrapped writers were told about after they were made, when, and when they became writable. */
  readonly added: { readonly column: string; readonly at: number; readonly visibleAt: number }[];
  /** Appends refused because a column was not writable yet. */
  refused: number;
  /** Appends passed on to the real writer. */
  passed: number;
}

/**
 * BigQuery's answer to an append while a new column has not reached the default stream: gRPC INVALID_ARGUMENT
 * (3) in the AppendRowsResponse's status, message as recorded from BigQuery (docs/testing.md), wrapped the
 * way StorageWriteWriter wraps a non-OK append status.
 */
function inputSchemaHasMoreFields(
  project: string,
  dataset: string,
  table: string,
  columns: readonly string[],
) {
  const entity = `projects/${project}/datasets/${dataset}/tables/${table}`;
  return toBigQueryError(
    Object.assign(
      new Error(
        `Input schema has more fields than BigQuery schema, extra fields: '${columns.join(',')}' Entity: ${entity}/streams/_default`,
      ),
      { name: 'AppendStatusError', code: 3 },
    ),
    `Storage Write append to ${entity}`,
  );
}

/**
 * Stands in front of a real writer on the emulator and, like BigQuery, shows a column added to the table to
 * writes only `lagMs` after the writer learnt of it (`updateSchema`): until then every append is refused with
 * BigQuery's error, whether or not its rows carry the new column, as BigQuery refuses a request whose writer
 * schema has the column. The emulator itself accepts the column at once.
 */
class SchemaLagWriter implements TableWriter {
  readonly #inner: TableWriter;
  readonly #lagMs: number;
  readonly #log: SchemaLagLog;
  readonly #project: string;
  readonly #dataset: string;
  readonly #table: string;
  #known: Set<string>;
  /** Not yet writable columns, with the time they become writable. */
  readonly #pending = new Map<string, number>();

  constructor(
    inner: TableWriter,
    where: { project: string; dataset: string; table: string; schema: readonly TableField[] },
    lagMs: number,
    log: SchemaLagLog,
  ) {
    this.#inner = inner;
    this.#lagMs = lagMs;
    this.#log = log;
    this.#project = where.project;
    this.#dataset = where.dataset;
    this.#table = where.table;
    this.#known = new Set(where.schema.map((f) => f.name));
  }

  get kind() {
    return this.#inner.kind;
  }

  encode(row: HistoryRow): EncodedRow {
    return this.#inner.encode(row);
  }

  append(rows: readonly OutgoingRow[], signal?: AbortSignal): Promise<AppendOutcome> {
    const now = Date.now();
    const invisible = [...this.#pending].filter(([, visibleAt]) => visibleAt > now).map(([c]) => c);
    if (invisible.length > 0 && rows.length > 0) {
      this.#log.refused++;
      return Promise.reject(inputSchemaHasMoreFields(this.#project, this.#dataset, this.#table, invisible));
    }
    this.#log.passed++;
    return this.#inner.append(rows, signal);
  }

  async updateSchema(schema: readonly TableField[]): Promise<void> {
    const now = Date.now();
    for (const field of schema) {
      if (this.#known.has(field.name)) continue;
      this.#pending.set(field.name, now + this.#lagMs);
      this.#log.added.push({ column: field.name, at: now, visibleAt: now + this.#lagMs });
    }
    this.#known = new Set(schema.map((f) => f.name));
    await this.#inner.updateSchema(schema);
  }

  close(): Promise<void> {
    return this.#inner.close();
  }
}

/** A decorator for `startArchiver` that puts a `SchemaLagWriter` in front of every history-table writer. */
export function schemaLag(project: string, lagMs: number, log: SchemaLagLog): WriterDecorator {
  return (writer, table) =>
    new SchemaLagWriter(
      writer,
      { project, dataset: table.datasetId, table: table.tableId, schema: table.schema },
      lagMs,
      log,
    );
}
