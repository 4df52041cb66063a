import { type BigQuery } from '@google-cloud/bigquery';
import { type IdRange } from '../core/ports.js';
import {
  type DocumentDigest,
  type RangeDigest,
  type ViewAnswer,
  type ViewReader,
} from '../core/verify-model.js';
import { quoteColumn, tableRef, type TableRef } from '../schema/identifiers.js';
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
import { jsonContentHash, jsonContentPaths, type JsonPath } from '../transform/row-digest.js';
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
  /** Rows of JSON text read per page (DEFAULT_JSON_PAGE_ROWS): what memory holds of them at once. */
  readonly jsonPageRows?: number;
}

/**
 * Rows of JSON text one page of the JSON query holds at most: documents with JSON content are read back page
 * by page and folded into their range's digest, so memory holds one page, never a whole range.
 */
export const DEFAULT_JSON_PAGE_ROWS = 5_000;

/** The key columns of the inner query (see `keyedRowsSql`). */
const KEY: IdKeyColumns = { rank: 'k_rank', number: 'k_number', text: 'k_text' };

/** The value (or the list) at `names` of a row aliased `alias` (every name validated and quoted). */
function namesSql(alias: string, names: readonly string[]): string {
  return [alias, ...names.map(quoteColumn)].join('.');
}

/**
 * The aliases of a list's element and of its offset in the JSON query's subquery, whose own FROM names come
 * before the columns of the row around it.
 */
const ELEMENT = '__mba_je';
const OFFSET = '__mba_jo';

/**
 * Whether a JSON value is present in a row aliased `alias`: not NULL, or for a list, not empty. BigQuery
 * stores a NULL array as an empty one (and the mapper writes NULL for a field a document lacks), so only a
 * list with elements counts on both sides, as `compileJsonHash` counts it.
 */
function presentSql(alias: string, path: JsonPath): string {
  const value = namesSql(alias, path.names);
  return path.element === undefined ? `${value} IS NOT NULL` : `COALESCE(ARRAY_LENGTH(${value}), 0) > 0`;
}

/**
 * The text of a present JSON value of a row aliased `alias`, NULL when absent (`presentSql`). A REPEATED JSON
 * column is TO_JSON_STRING of the array, which GoogleSQL writes as a JSON array of its elements' JSON
 * ("JSON encodings" in its JSON functions reference). A JSON field of a REPEATED RECORD's elements is
 * TO_JSON_STRING of the array of that field alone, in the elements' order (WITH OFFSET; NULL where an element
 * lacks it, written `null`: arrays with NULL elements may be used inside a query, only not returned), so that
 * no other field of the record is turned into text: their text differs between BigQuery and the emulator.
 */
function jsonTextSql(alias: string, path: JsonPath): string {
  const value = namesSql(alias, path.names);
  const { element } = path;
  if (element === undefined) return `IF(${value} IS NULL, NULL, TO_JSON_STRING(${value}))`;
  const list =
    element.length === 0
      ? value
      : `ARRAY(SELECT ${namesSql(ELEMENT, element)} FROM UNNEST(${value}) AS ${ELEMENT} WITH OFFSET AS ${OFFSET} ORDER BY ${OFFSET})`;
  return `IF(${presentSql(alias, path)}, TO_JSON_STRING(${list}), NULL)`;
}

/** Whether any JSON value whose content verify compares is present (`jsonContentPaths`), over alias `w`. */
function anyJsonSql(columns: readonly ColumnSpec[]): string {
  return `(${jsonContentPaths(columns)
    .map((path) => presentSql('w', path))
    .join(' OR ')})`;
}

/**
 * Every row of the view as its `_doc_id` (`d`), its sort key (KEY), its canonical string (`c`), its hash
 * (`h`) and whether it has JSON content (`jn`), in layers (see `canonicalPartsSql`): the view's columns, the
 * canonical parts, then their concatenation and hash.
 */
export function keyedRowsSql(view: Pick<TableRef, 'sql'>, columns: readonly ColumnSpec[]): string {
  const key = idKeySql('w.`_doc_id`');
  const parts = canonicalPartsSql(columns, 'w').map((sql, i) => `  ${sql} AS ${partColumn(i)}`);
  return [
    `SELECT d, ${KEY.rank}, ${KEY.number}, ${KEY.text}, c, ${hashSql('c')} AS h, jn FROM (`,
    `SELECT d, ${KEY.rank}, ${KEY.number}, ${KEY.text}, ${canonicalRowSql(columns)} AS c, jn FROM (`,
    `SELECT w.\`_doc_id\` AS d, ${key.rank} AS ${KEY.rank}, ${key.number} AS ${KEY.number}, ${key.text} AS ${KEY.text},`,
    `  ${anyJsonSql(columns)} AS jn,`,
    parts.join(',\n'),
    `FROM (SELECT v.* FROM ${view.sql} AS v) AS w))`,
  ].join('\n');
}

/** The column the JSON query gives the text of the i-th JSON value (`jsonContentPaths` order). */
function jsonColumn(i: number): string {
  return `__mba_j${String(i)}`;
}

/**
 * The documents of the view in `ranges` that have JSON content: the index of their range (`r`), `_doc_id`
 * (`d`), and the text of each JSON value (`jsonColumn(i)`, NULL when absent; a list as one JSON array, see
 * `jsonTextSql`) as TO_JSON_STRING gives it: valid JSON text, in BigQuery normalised, on the emulator as
 * written; `jsonContentHash` makes both agree, and a list's text agree with the mapped row's element texts.
 * A query of its own: the digest query only adds a presence flag (`jn`, over columns it reads anyway), and
 * only ranges where that flag is set run this one.
 */
export function jsonRowsSql(
  view: Pick<TableRef, 'sql'>,
  columns: readonly ColumnSpec[],
  ranges: readonly IdRange[],
): string {
  const key = idKeySql('w.`_doc_id`');
  const paths = jsonContentPaths(columns);
  const names = paths.map((_, i) => jsonColumn(i));
  const texts = paths.map((path, i) => `${jsonTextSql('w', path)} AS ${jsonColumn(i)}`);
  return [
    `SELECT r, d, ${names.join(', ')} FROM (`,
    `SELECT ${rangeIndexSql(KEY, ranges)} AS r, d, ${names.join(', ')} FROM (`,
    `SELECT w.\`_doc_id\` AS d, ${key.rank} AS ${KEY.rank}, ${key.number} AS ${KEY.number}, ${key.text} AS ${KEY.text},`,
    `  ${texts.join(',\n  ')}`,
    `FROM (SELECT v.* FROM ${view.sql} AS v) AS w WHERE ${anyJsonSql(columns)}))`,
    `WHERE r IS NOT NULL`,
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
      `SELECT r, COUNT(*) AS n, CAST(BIT_XOR(h) AS STRING) AS x, SUM(IF(jn, 1, 0)) AS nj FROM (`,
      `  SELECT ${rangeIndexSql(KEY, ranges)} AS r, h, jn FROM (${this.#keyed(ranges)})`,
      `) WHERE r IS NOT NULL GROUP BY r`,
    ].join('\n');
    const { rows, bytesScanned } = await this.#query(sql, 'reading range digests', signal);
    const value = ranges.map((): { count: number; digest: bigint } => ({ count: 0, digest: 0n }));
    /** The indexes (into `ranges`) of the ranges with JSON content. */
    const withJson: number[] = [];
    for (const row of rows) {
      const index = Number(row.r);
      if (index >= 0 && index < value.length) {
        value[index] = { count: Number(row.n), digest: BigInt(String(row.x)) };
        if (Number(row.nj) > 0) withJson.push(index);
      }
    }
    withJson.sort((a, b) => a - b);
    const json = await this.#jsonHashes(
      withJson.map((i) => ranges[i] ?? { after: undefined, upTo: undefined }),
      (r, _docId, hash) => {
        const entry = value[withJson[r] ?? -1];
        if (entry) entry.digest ^= hash;
      },
      signal,
    );
    return { value, bytesScanned: bytesScanned + json };
  }

  async documentDigests(range: IdRange, signal: AbortSignal): Promise<ViewAnswer<DocumentDigest[]>> {
    const sql = `SELECT d, CAST(h AS STRING) AS x, jn FROM (${this.#keyed([range])}) WHERE ${inRangeSql(KEY, range)}`;
    const { rows, bytesScanned } = await this.#query(sql, 'reading document digests', signal);
    const hashes = new Map<string, bigint>();
    for (const row of rows) hashes.set(String(row.d), BigInt(String(row.x)));
    const json = rows.some((row) => row.jn === true)
      ? await this.#jsonHashes(
          [range],
          (_r, docId, hash) => {
            const before = hashes.get(docId);
            if (before !== undefined) hashes.set(docId, before ^ hash);
          },
          signal,
        )
      : 0;
    return {
      value: [...hashes].map(([docId, hash]) => ({ docId, hash })),
      bytesScanned: bytesScanned + json,
    };
  }

  /**
   * Reads the JSON text of the documents of `ranges` that have JSON content, page by page, and hands each
   * one's JSON content hash (`jsonContentHash`) to `fold` with the index of its range; the bytes scanned.
   * Between this query and the digest query the daemon may have written: such a document then differs in
   * one read, which is what the verifier's second read of differing documents is for.
   */
  async #jsonHashes(
    ranges: readonly IdRange[],
    fold: (range: number, docId: string, hash: bigint) => void,
    signal: AbortSignal,
  ): Promise<number> {
    if (ranges.length === 0) return 0;
    const current = currentStateViewSql(this.#history, docIdPrefilterSql(ranges));
    const sql = jsonRowsSql({ sql: `(${current})` }, this.#o.columns, ranges);
    const paths = jsonContentPaths(this.#o.columns);
    return this.#queryPages(sql, 'reading JSON values', signal, (rows) => {
      for (const row of rows) {
        const docId = String(row.d);
        const texts = paths.map((_, i) => {
          const text = row[jsonColumn(i)];
          return typeof text === 'string' ? text : null;
        });
        fold(Number(row.r), docId, jsonContentHash(docId, texts));
      }
    });
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

  /** Runs a query and hands its rows to `onPage` a page at a time; the bytes BigQuery scanned. */
  async #queryPages(
    sql: string,
    context: string,
    signal: AbortSignal,
    onPage: (rows: readonly Record<string, unknown>[]) => void,
  ): Promise<number> {
    signal.throwIfAborted();
    const maxResults = this.#o.jsonPageRows ?? DEFAULT_JSON_PAGE_ROWS;
    try {
      const [job] = await this.#o.bigquery.createQueryJob({
        query: sql,
        ...(this.#o.location !== undefined && { location: this.#o.location }),
      });
      let pageToken: string | undefined;
      do {
        const [rows, next] = await job.getQueryResults({
          autoPaginate: false,
          maxResults,
          ...(pageToken !== undefined && { pageToken }),
        });
        signal.throwIfAborted();
        onPage(rows as Record<string, unknown>[]);
        pageToken = (next as { pageToken?: string } | null | undefined)?.pageToken;
      } while (pageToken !== undefined);
      return await bytesProcessed(job);
    } catch (error) {
      if (signal.aborted) throw signal.reason;
      throw toBigQueryError(error, `${context} of ${this.view.tableId}`);
    }
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
      return { rows: rows as Record<string, unknown>[], bytesScanned: await bytesProcessed(job) };
    } catch (error) {
      if (signal.aborted) throw signal.reason;
      throw toBigQueryError(error, `${context} of ${this.view.tableId}`);
    }
  }
}

/** What a finished job says it processed (`statistics.query.totalBytesProcessed`; 0 where none is given). */
async function bytesProcessed(job: { getMetadata(): Promise<unknown[]> }): Promise<number> {
  const metadata = (await job.getMetadata())[0] as { statistics?: Record<string, unknown> } | undefined;
  const statistics = metadata?.statistics;
  const stats = statistics?.query as Record<string, unknown> | undefined;
  const bytes = Number(stats?.totalBytesProcessed ?? statistics?.totalBytesProcessed ?? 0);
  return Number.isFinite(bytes) ? bytes : 0;
}
