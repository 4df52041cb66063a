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
  stringLiteral,
  type IdKeyColumns,
} from './digest-sql.js';
import { NUMBER_RANK, OBJECT_ID_RANK, rangeBounds, STRING_RANK } from '../transform/id-order.js';
import { toBigQueryError } from './error-mapping.js';
import { currentStateViewSql, viewNames } from './views.js';

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
export function keyedRowsSql(view: Pick<TableRef, 'sql'>, columns: readonly ColumnSpec[]): string {
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

/** The docIds (SQL literal text) of each block of placed ids, in the byte order BigQuery compares. */
const STRING_BLOCK = { from: '"', below: '#' } as const;
const OBJECT_ID_BLOCK = { from: '0', below: 'g' } as const;
const NUMBER_BLOCK = { from: '{"$number', below: '{"$numbes' } as const;
/** The character every JSON string escape starts with, `\` (0x5C); see `stringPrefix`. */
const ESCAPE_START = 0x5c;

/**
 * The longest prefix of `text` that JSON (docIdString) writes as it is and in an order no escape can
 * upset: code points above `\`. A `_doc_id` of a string `t` is `JSON.stringify(t)`, whose escapes
 * (controls, `"`, `\`) all begin with `\`, so below that character the order of the quoted text is not
 * the order of the strings; above it, it is. Lone surrogates (never in MongoDB's UTF-8) stop it too.
 */
function stringPrefix(text: string): { prefix: string; whole: boolean } {
  let prefix = '';
  for (const ch of text) {
    const code = ch.codePointAt(0) ?? 0;
    if (code <= ESCAPE_START || (code >= 0xd800 && code <= 0xdfff)) return { prefix, whole: false };
    prefix += ch;
  }
  return { prefix, whole: true };
}

/** An interval of `_doc_id` text in BigQuery's byte order: from `from`, below (or up to) `to`. */
export interface DocIdInterval {
  readonly from: string;
  /** Whether `from` itself is in (`>=`) or not (`>`). */
  readonly fromIncluded: boolean;
  readonly to: string;
  /** Whether `to` itself is in (`<=`) or not (`<`). */
  readonly toIncluded: boolean;
}

/**
 * Intervals of `_doc_id` text that hold every id placed in `range` (and possibly some outside it: the exact
 * test on the derived key follows), one per type of id the range spans: ObjectIds by their hex (exact),
 * strings between quoted prefixes of the bounds (see `stringPrefix`), integers by their Extended JSON
 * prefix only (their text does not sort as their values).
 */
export function docIdIntervals(range: IdRange): DocIdInterval[] {
  const { after, upTo } = rangeBounds(range);
  const spans = (rank: number): boolean =>
    (after === undefined || after.rank <= rank) && (upTo === undefined || upTo.rank >= rank);
  const intervals: DocIdInterval[] = [];
  const block = (b: { readonly from: string; readonly below: string }): DocIdInterval => ({
    from: b.from,
    fromIncluded: true,
    to: b.below,
    toIncluded: false,
  });
  if (spans(NUMBER_RANK)) intervals.push(block(NUMBER_BLOCK));
  if (spans(STRING_RANK)) {
    let interval = block(STRING_BLOCK);
    if (after?.rank === STRING_RANK && typeof after.value === 'string') {
      interval = { ...interval, from: `"${stringPrefix(after.value).prefix}` };
    }
    if (upTo?.rank === STRING_RANK && typeof upTo.value === 'string') {
      const { prefix, whole } = stringPrefix(upTo.value);
      // A bound written whole: no string up to it sorts past its own quoted form. Otherwise the strings up
      // to it, escapes included, sort below the prefix followed by the character after `\`.
      interval = whole
        ? { ...interval, to: `"${prefix}"`, toIncluded: true }
        : { ...interval, to: `"${prefix}${String.fromCodePoint(ESCAPE_START + 1)}` };
    }
    intervals.push(interval);
  }
  if (spans(OBJECT_ID_RANK)) {
    let interval = block(OBJECT_ID_BLOCK);
    if (after?.rank === OBJECT_ID_RANK && typeof after.value === 'string') {
      interval = { ...interval, from: after.value, fromIncluded: false };
    }
    if (upTo?.rank === OBJECT_ID_RANK && typeof upTo.value === 'string') {
      interval = { ...interval, to: upTo.value, toIncluded: true };
    }
    intervals.push(interval);
  }
  return intervals;
}

function intervalSql(interval: DocIdInterval): string {
  const d = 'h.`_doc_id`';
  return `${d} ${interval.fromIncluded ? '>=' : '>'} ${stringLiteral(interval.from)} AND ${d} ${interval.toIncluded ? '<=' : '<'} ${stringLiteral(interval.to)}`;
}

/**
 * A condition on the history table's `h._doc_id` that holds for every id placed in `ranges`
 * (`docIdIntervals`), made of plain comparisons BigQuery can prune clustered blocks with. Adjoining ranges
 * (one's `after` the previous one's `upTo`, as a split's and a range's sub-ranges are) are merged first, so
 * the condition stays short.
 */
export function docIdPrefilterSql(ranges: readonly IdRange[]): string {
  const merged: IdRange[] = [];
  for (const range of ranges) {
    const previous = merged.at(-1);
    if (previous?.upTo !== undefined && previous.upTo === range.after) {
      merged[merged.length - 1] = { after: previous.after, upTo: range.upTo };
    } else {
      merged.push(range);
    }
  }
  const intervals = merged.flatMap(docIdIntervals);
  // No placed id in any range: every row would fail the exact test anyway.
  if (intervals.length === 0) return 'FALSE';
  return intervals.map((interval) => `(${intervalSql(interval)})`).join(' OR ');
}

/**
 * `ViewReader` over `<table>_view` with query jobs of the REST client. Each answer carries the bytes the job
 * says it processed (`statistics.query.totalBytesProcessed`; 0 where an emulator reports none). The hashes
 * come back as decimal text: the client would read an INT64 as a JavaScript number and lose bits.
 */
export class BigQueryViewReader implements ViewReader {
  readonly view: TableRef;
  readonly #o: BigQueryViewReaderOptions;
  readonly #history: TableRef;

  constructor(options: BigQueryViewReaderOptions) {
    this.#o = options;
    this.view = tableRef(options.projectId, options.datasetId, viewNames(options.table).view);
    this.#history = tableRef(options.projectId, options.datasetId, options.table);
  }

  async rangeDigests(ranges: readonly IdRange[], signal: AbortSignal): Promise<ViewAnswer<RangeDigest[]>> {
    if (ranges.length === 0) return { value: [], bytesScanned: 0 };
    const sql = [
      `SELECT r, COUNT(*) AS n, CAST(BIT_XOR(h) AS STRING) AS x FROM (`,
      `  SELECT ${rangeIndexSql(KEY, ranges)} AS r, h FROM (${this.#keyed(ranges)})`,
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
    const sql = `SELECT d, CAST(h AS STRING) AS x FROM (${this.#keyed([range])}) WHERE ${inRangeSql(KEY, range)}`;
    const { rows, bytesScanned } = await this.#query(sql, 'reading document digests', signal);
    return {
      value: rows.map((row) => ({ docId: String(row.d), hash: BigInt(String(row.x)) })),
      bytesScanned,
    };
  }

  /**
   * Every row of the view in `ranges` (and maybe some outside) as its `_doc_id` (`d`), its sort key and its
   * hash (`h`): the view's query over the history table with `docIdPrefilterSql` applied to the table's
   * `_doc_id` before the window, where clustering prunes it (a filter on the view's derived key cannot).
   */
  #keyed(ranges: readonly IdRange[]): string {
    const current = currentStateViewSql(this.#history, docIdPrefilterSql(ranges));
    return keyedRowsSql({ sql: `(${current})` }, this.#o.columns);
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
