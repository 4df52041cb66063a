import { type BigQuery } from '@google-cloud/bigquery';
import { type IdRange } from '../core/ports.js';
import {
  type DocumentDigest,
  type RangeDigest,
  type ViewAnswer,
  type ViewReader,
} from '../core/verify-model.js';
import { tableRef, type TableRef } from '../schema/identifiers.js';
import { type ColumnSpec } from '../schema/types.js';
import {
  canonicalPartsSql,
  canonicalRowSql,
  hashSql,
  idKeySql,
  inRangeSql,
  partColumn,
  rangeIndexSql,
  type IdKeyColumns,
} from './digest-sql.js';
import { toBigQueryError } from './error-mapping.js';
import { viewNames } from './views.js';

export interface BigQueryViewReaderOptions {
  /** The REST client (`createBigQueryClients(...).bigquery`). */
  readonly bigquery: BigQuery;
  readonly projectId: string;
  readonly datasetId: string;
  /** The history table; the reader reads `<table>_view`. */
  readonly table: string;
  /** The mapping's columns, as the table has them (the digest is built from them). */
  readonly columns: readonly ColumnSpec[];
  /** Where the dataset is (sent with every query); BigQuery's default when unset. */
  readonly location?: string;
}

/** The key columns of the inner query (see `keyedRowsSql`). */
const KEY: IdKeyColumns = { rank: 'k_rank', number: 'k_number', text: 'k_text' };

/**
 * Every row of the view as its `_doc_id` (`d`), its sort key (KEY), its canonical string (`c`) and its hash
 * (`h`), in layers (see `canonicalPartsSql`): the view's columns, the canonical parts, then their
 * concatenation and hash.
 */
export function keyedRowsSql(view: TableRef, columns: readonly ColumnSpec[]): string {
  const key = idKeySql('w.`_doc_id`');
  const parts = canonicalPartsSql(columns, 'w').map((sql, i) => `  ${sql} AS ${partColumn(i)}`);
  return [
    `SELECT d, ${KEY.rank}, ${KEY.number}, ${KEY.text}, c, ${hashSql('c')} AS h FROM (`,
    `SELECT d, ${KEY.rank}, ${KEY.number}, ${KEY.text}, ${canonicalRowSql(columns)} AS c FROM (`,
    `SELECT w.\`_doc_id\` AS d, ${key.rank} AS ${KEY.rank}, ${key.number} AS ${KEY.number}, ${key.text} AS ${KEY.text},`,
    parts.join(',\n'),
    `FROM (SELECT v.* FROM ${view.sql} AS v) AS w))`,
  ].join('\n');
}

/**
 * `ViewReader` over `<table>_view` with query jobs of the REST client. Each answer carries the bytes the job
 * says it processed (`statistics.query.totalBytesProcessed`; 0 where an emulator reports none). The hashes
 * come back as decimal text: the client would read an INT64 as a JavaScript number and lose bits.
 */
export class BigQueryViewReader implements ViewReader {
  readonly view: TableRef;
  readonly #o: BigQueryViewReaderOptions;

  constructor(options: BigQueryViewReaderOptions) {
    this.#o = options;
    this.view = tableRef(options.projectId, options.datasetId, viewNames(options.table).view);
  }

  async rangeDigests(ranges: readonly IdRange[], signal: AbortSignal): Promise<ViewAnswer<RangeDigest[]>> {
    if (ranges.length === 0) return { value: [], bytesScanned: 0 };
    const sql = [
      `SELECT r, COUNT(*) AS n, CAST(BIT_XOR(h) AS STRING) AS x FROM (`,
      `  SELECT ${rangeIndexSql(KEY, ranges)} AS r, h FROM (${this.#keyed()})`,
      `) WHERE r IS NOT NULL GROUP BY r`,
    ].join('\n');
    const { rows, bytesScanned } = await this.#query(sql, 'reading range digests', signal);
    const value = ranges.map((): RangeDigest => ({ count: 0, digest: 0n }));
    for (const row of rows) {
      const index = Number(row.r);
      if (index >= 0 && index < value.length)
        value[index] = { count: Number(row.n), digest: BigInt(String(row.x)) };
    }
    return { value, bytesScanned };
  }

  async documentDigests(range: IdRange, signal: AbortSignal): Promise<ViewAnswer<DocumentDigest[]>> {
    const sql = `SELECT d, CAST(h AS STRING) AS x FROM (${this.#keyed()}) WHERE ${inRangeSql(KEY, range)}`;
    const { rows, bytesScanned } = await this.#query(sql, 'reading document digests', signal);
    return {
      value: rows.map((row) => ({ docId: String(row.d), hash: BigInt(String(row.x)) })),
      bytesScanned,
    };
  }

  /** Every row of the view as its `_doc_id` (`d`), its sort key and its hash (`h`). */
  #keyed(): string {
    return keyedRowsSql(this.view, this.#o.columns);
  }

  async #query(
    sql: string,
    context: string,
    signal: AbortSignal,
  ): Promise<{ rows: Record<string, unknown>[]; bytesScanned: number }> {
    signal.throwIfAborted();
    try {
      const [job] = await this.#o.bigquery.createQueryJob({
        query: sql,
        ...(this.#o.location !== undefined && { location: this.#o.location }),
      });
      const [rows] = await job.getQueryResults();
      signal.throwIfAborted();
      const metadata = (await job.getMetadata())[0] as { statistics?: Record<string, unknown> };
      const statistics = metadata.statistics;
      const stats = statistics?.query as Record<string, unknown> | undefined;
      const bytes = Number(stats?.totalBytesProcessed ?? statistics?.totalBytesProcessed ?? 0);
      return { rows: rows as Record<string, unknown>[], bytesScanned: Number.isFinite(bytes) ? bytes : 0 };
    } catch (error) {
      if (signal.aborted) throw signal.reason;
      throw toBigQueryError(error, `${context} of ${this.view.tableId}`);
    }
  }
}
