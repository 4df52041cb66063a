import { quoteColumn } from '../schema/identifiers.js';
import { type ColumnSpec, type ColumnType } from '../schema/types.js';
import {
  INTEGER_DOC_ID,
  NUMBER_RANK,
  OBJECT_ID_DOC_ID,
  OBJECT_ID_RANK,
  rangeBounds,
  STRING_RANK,
  type BoundKey,
} from '../transform/id-order.js';
import { NULL_PART, ROW_HASH_HEX_DIGITS } from '../transform/row-digest.js';

/**
 * The SQL twin of `transform/row-digest.ts`: the canonical string of a view row and its 60-bit hash, built
 * from the table's columns (every name validated and quoted by `quoteColumn`), and the `_id` range a row
 * falls in (`transform/id-order.ts`). Both must agree with the JavaScript side on real BigQuery (per its
 * documentation) and on the emulator: `test/integration/bigquery/digest-sql.test.ts` holds them together.
 */

type ScalarType = Exclude<ColumnType, 'RECORD'>;

/** The canonical text of a non-null value `x` (SQL expression) of a scalar type. */
function scalarTextSql(type: ScalarType, x: string): string {
  switch (type) {
    case 'STRING':
      return x;
    case 'DATE':
      // CAST keeps the four-digit year (FORMAT_DATE's %Y does not pad on the emulator).
      return `CAST(${x} AS STRING)`;
    case 'BYTES':
      return `TO_BASE64(${x})`;
    case 'INTEGER':
      return `CAST(${x} AS STRING)`;
    case 'BOOLEAN':
      return `IF(${x}, 'true', 'false')`;
    case 'FLOAT':
      // FORMAT's %g names NaN and infinities in lower case and keeps the sign of zero: decided here instead.
      return `CASE WHEN IS_NAN(${x}) THEN 'NaN' WHEN IS_INF(${x}) THEN IF(${x} > 0, 'Inf', '-Inf') WHEN ${x} = 0 THEN '0' ELSE FORMAT('%.17g', ${x}) END`;
    case 'NUMERIC':
    case 'BIGNUMERIC':
      // The emulator pads the fraction to the type's scale; BigQuery does not. Both agree once stripped.
      return `IF(STRPOS(CAST(${x} AS STRING), '.') > 0, REGEXP_REPLACE(CAST(${x} AS STRING), r'\\.?0*$', ''), CAST(${x} AS STRING))`;
    case 'TIMESTAMP':
      return `CAST(UNIX_MICROS(${x}) AS STRING)`;
    case 'DATETIME':
      return `CONCAT(CAST(DATE(${x}) AS STRING), ' ', FORMAT_TIME('%H:%M:%E6S', TIME(${x})))`;
    case 'TIME':
      return `FORMAT_TIME('%H:%M:%E6S', ${x})`;
    case 'JSON':
      return `''`;
    default:
      return type satisfies never;
  }
}

function scalarPartSql(type: ScalarType, x: string): string {
  const text = scalarTextSql(type, x);
  return `IF(${x} IS NULL, '${NULL_PART}', CONCAT(CAST(BYTE_LENGTH(${text}) AS STRING), ':', ${text}))`;
}

/** The canonical part of a value `x` of a scalar column (REPEATED around its element type). */
function valueSql(column: ColumnSpec & { type: ScalarType }, x: string, depth: number): string {
  if (column.mode !== 'REPEATED') return scalarPartSql(column.type, x);
  const e = `__mba_e${String(depth)}`;
  const o = `__mba_o${String(depth)}`;
  const element = scalarPartSql(column.type, e);
  return `CONCAT('A', CAST(COALESCE(ARRAY_LENGTH(${x}), 0) AS STRING), ':', COALESCE((SELECT STRING_AGG(${element}, '' ORDER BY ${o}) FROM UNNEST(${x}) AS ${e} WITH OFFSET AS ${o}), ''))`;
}

/** The name the innermost query gives what the digest reads of the i-th column when it is a RECORD. */
function recordFact(i: number): string {
  return `__mba_r${String(i)}`;
}

/**
 * What the digest reads of RECORD columns, as `<expression> AS <name>` for the innermost query over the
 * view aliased `alias`: whether a RECORD is NULL, how many elements a REPEATED RECORD has (a RECORD is
 * compared by presence only, see transform/row-digest.ts). Read there, apart from everything else:
 * bqemulator fails to bind a RECORD column of a view in a query that also has an UNNEST subquery.
 */
export function recordFactsSql(columns: readonly ColumnSpec[], alias: string): string[] {
  return columns.flatMap((column, i) => {
    if (column.type !== 'RECORD') return [];
    const x = `${alias}.${quoteColumn(column.name)}`;
    const fact = column.mode === 'REPEATED' ? `COALESCE(ARRAY_LENGTH(${x}), 0)` : `${x} IS NULL`;
    return [`${fact} AS ${recordFact(i)}`];
  });
}

function recordPartSql(column: ColumnSpec, fact: string): string {
  return column.mode === 'REPEATED'
    ? `CONCAT('A', CAST(${fact} AS STRING), ':', REPEAT('R', ${fact}))`
    : `IF(${fact}, '${NULL_PART}', 'R')`;
}

/** The column name the inner query gives the canonical part of the i-th value (see `canonicalPartsSql`). */
export function partColumn(i: number): string {
  return `__mba_p${String(i)}`;
}

/**
 * The canonical parts of a row aliased `alias`, one SQL expression per value: `_doc_id`, the user columns in
 * order, then `_unmapped` (presence only), as `compileRowCanonical` makes them. `alias` names a query over
 * the view that selects its columns and `recordFactsSql`; the query over it selects the parts as columns
 * named `partColumn(i)`, and the one over that concatenates them (`canonicalRowSql`).
 */
export function canonicalPartsSql(columns: readonly ColumnSpec[], alias: string): string[] {
  return [
    scalarPartSql('STRING', `${alias}.\`_doc_id\``),
    ...columns.map((column, i) =>
      column.type === 'RECORD'
        ? recordPartSql(column, `${alias}.${recordFact(i)}`)
        : valueSql({ ...column, type: column.type }, `${alias}.${quoteColumn(column.name)}`, 0),
    ),
    scalarPartSql('JSON', `${alias}.\`_unmapped\``),
  ];
}

/** The canonical string, over the columns `partColumn(0..)` of the query below. */
export function canonicalRowSql(columns: readonly ColumnSpec[]): string {
  const parts = Array.from({ length: columns.length + 2 }, (_, i) => partColumn(i));
  return `CONCAT(${parts.join(', ')})`;
}

/** The 60-bit hash (INT64) of a canonical string `canonical` (SQL), as `canonicalHash` computes it. */
export function hashSql(canonical: string): string {
  return `CAST(CONCAT('0x', SUBSTR(TO_HEX(SHA256(${canonical})), 1, ${String(ROW_HASH_HEX_DIGITS)})) AS INT64)`;
}

/** SQL expressions (or column names) of an id's sort key. */
export interface IdKeyColumns {
  readonly rank: string;
  readonly number: string;
  readonly text: string;
}

/**
 * The sort key of `_doc_id` (SQL expression `docId`) as three columns: its type rank (NULL for an id
 * verify does not place), its integer value, its string value (the unquoted string, or the ObjectId's hex).
 */
export function idKeySql(docId: string): IdKeyColumns {
  const objectId = `REGEXP_CONTAINS(${docId}, r'${OBJECT_ID_DOC_ID.source}')`;
  const string = `STARTS_WITH(${docId}, '"')`;
  const integer = `REGEXP_EXTRACT(${docId}, r'${INTEGER_DOC_ID.source}')`;
  return {
    rank: `CASE WHEN ${objectId} THEN ${String(OBJECT_ID_RANK)} WHEN ${string} THEN ${String(STRING_RANK)} WHEN ${integer} IS NOT NULL THEN ${String(NUMBER_RANK)} END`,
    number: `SAFE_CAST(${integer} AS INT64)`,
    text: `CASE WHEN ${objectId} THEN ${docId} WHEN ${string} THEN JSON_VALUE(${docId}) END`,
  };
}

/** A string literal for SQL: every character that could end or escape it is escaped. */
export function stringLiteral(text: string): string {
  let out = "'";
  for (const ch of text) {
    const code = ch.codePointAt(0) ?? 0;
    if (ch === "'" || ch === '\\') out += `\\${ch}`;
    else if (code < 0x20 || code === 0x7f) out += `\\x${code.toString(16).padStart(2, '0')}`;
    else out += ch;
  }
  return `${out}'`;
}

function valueLiteral(value: bigint | number | string): string {
  if (typeof value === 'string') return stringLiteral(value);
  if (typeof value === 'bigint') return value.toString();
  // A double bound between integers: INT64 ids compare with it as FLOAT64, as MongoDB compares numbers.
  return Number.isFinite(value)
    ? `CAST(${stringLiteral(String(value))} AS FLOAT64)`
    : `CAST(${stringLiteral(Number.isNaN(value) ? 'nan' : value > 0 ? 'inf' : '-inf')} AS FLOAT64)`;
}

/** `key > bound` in SQL, over the key columns named in `key`. */
function afterBoundSql(key: IdKeyColumns, bound: BoundKey): string {
  const rank = String(bound.rank);
  if (
    bound.value === undefined ||
    (bound.rank !== NUMBER_RANK && bound.rank !== STRING_RANK && bound.rank !== OBJECT_ID_RANK)
  ) {
    return `${key.rank} > ${rank}`;
  }
  const column = bound.rank === NUMBER_RANK ? key.number : key.text;
  return `(${key.rank} > ${rank} OR (${key.rank} = ${rank} AND ${column} > ${valueLiteral(bound.value)}))`;
}

/** A range as a SQL condition over the key columns: after `after`, up to `upTo` (inclusive). */
export function inRangeSql(
  key: IdKeyColumns,
  range: { readonly after: string | undefined; readonly upTo: string | undefined },
): string {
  const bounds = rangeBounds(range);
  const conditions = [`${key.rank} IS NOT NULL`];
  if (bounds.after) conditions.push(afterBoundSql(key, bounds.after));
  if (bounds.upTo) conditions.push(`NOT ${afterBoundSql(key, bounds.upTo)}`);
  return conditions.join(' AND ');
}

/** The index of the first of `ranges` a row is in (SQL INT64), NULL when in none or not placed. */
export function rangeIndexSql(
  key: IdKeyColumns,
  ranges: readonly { readonly after: string | undefined; readonly upTo: string | undefined }[],
): string {
  const cases = ranges.map((range, i) => `WHEN ${inRangeSql(key, range)} THEN ${String(i)}`);
  return `CASE ${cases.join(' ')} END`;
}
