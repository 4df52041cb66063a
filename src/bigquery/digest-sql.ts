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
import { NULL_PART, RECORD_PART, ROW_HASH_HEX_DIGITS } from '../transform/row-digest.js';

/**
 * The SQL twin of `transform/row-digest.ts`: the canonical string of a view row and its 60-bit hash, built
 * from the table's columns (every name validated and quoted by `quoteColumn`), and the `_id` range a row
 * falls in (`transform/id-order.ts`). Both must agree with the JavaScript side on real BigQuery (per its
 * documentation) and on the emulator: `test/integration/bigquery/digest-sql.test.ts` holds them together.
 * No CONCAT, BYTE_LENGTH, FORMAT, FORMAT_TIME or REGEXP_EXTRACT: with any of them in a query, the emulator
 * loses the view's RECORD columns (transform/row-digest.ts says why); `concatSql` stands for CONCAT.
 */

/** CONCAT of non-null strings, spelt as ARRAY_TO_STRING (see above). */
export function concatSql(parts: readonly string[]): string {
  return `ARRAY_TO_STRING([${parts.join(', ')}], '')`;
}

/** 2^e as FLOAT64 for an INT64 `e` (SQL) in [-1074, 1023]: exact, as every power of two there is. */
function pow2(e: string): string {
  return `POW(2.0, ${e})`;
}

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
      return `CASE WHEN IS_NAN(${x}) THEN 'NaN' WHEN IS_INF(${x}) THEN IF(${x} > 0, 'Inf', '-Inf') WHEN ${x} = 0 THEN '0' ELSE ${floatBitsSql(x)} END`;
    case 'NUMERIC':
    case 'BIGNUMERIC':
      // The emulator pads the fraction to the type's scale; BigQuery does not. Both agree once stripped.
      return `IF(STRPOS(CAST(${x} AS STRING), '.') > 0, REGEXP_REPLACE(CAST(${x} AS STRING), r'\\.?0*$', ''), CAST(${x} AS STRING))`;
    case 'TIMESTAMP':
      return `CAST(UNIX_MICROS(${x}) AS STRING)`;
    case 'DATETIME':
      return `CAST(DATETIME_DIFF(${x}, DATETIME '0001-01-01 00:00:00', MICROSECOND) AS STRING)`;
    case 'TIME':
      return `CAST(TIME_DIFF(${x}, TIME '00:00:00', MICROSECOND) AS STRING)`;
    case 'JSON':
      // Presence only here (the part is `0:`); the content is compared apart (`canonicalPartsSql`).
      return `''`;
    default:
      return type satisfies never;
  }
}

/**
 * A finite, non-zero FLOAT64 `x` as `<sign><m>p<e>` (`floatBits`): e from LOG, corrected by one either way
 * (LOG may round across a power of two) and kept in the range of exact powers of two, then m = |x| / 2^e *
 * 2^52, exact since dividing and multiplying by powers of two only moves the exponent.
 */
function floatBitsSql(x: string): string {
  const a = `ABS(${x})`;
  const e0 = `LEAST(1023, GREATEST(-1074, CAST(FLOOR(LOG(${a}, 2)) AS INT64)))`;
  const scaled = `${a} / ${pow2(e0)}`;
  const e = `(${e0} + IF(${scaled} >= 2, 1, 0) - IF(${scaled} < 1, 1, 0))`;
  const m = `CAST(${a} / ${pow2(e)} * ${pow2('52')} AS INT64)`;
  return concatSql([`IF(${x} < 0, '-', '')`, `CAST(${m} AS STRING)`, `'p'`, `CAST(${e} AS STRING)`]);
}

function scalarPartSql(type: ScalarType, x: string): string {
  const text = scalarTextSql(type, x);
  return `IF(${x} IS NULL, '${NULL_PART}', ${concatSql([`CAST(CHAR_LENGTH(${text}) AS STRING)`, `':'`, text])})`;
}

/** The canonical part of a value `x` of a column (REPEATED around its element type; RECORDs recursively). */
function valueSql(column: ColumnSpec, x: string, depth: number): string {
  if (column.mode !== 'REPEATED') return elementSql(column, x, depth);
  const e = `__mba_e${String(depth)}`;
  const o = `__mba_o${String(depth)}`;
  const element = elementSql(column, e, depth + 1);
  return concatSql([
    `'A'`,
    `CAST(COALESCE(ARRAY_LENGTH(${x}), 0) AS STRING)`,
    `':'`,
    `COALESCE((SELECT STRING_AGG(${element}, '' ORDER BY ${o}) FROM UNNEST(${x}) AS ${e} WITH OFFSET AS ${o}), '')`,
  ]);
}

/** One (element) value `x`: a scalar's part, or a RECORD's `R` and its fields' parts (NULL: `N`). */
function elementSql(column: ColumnSpec, x: string, depth: number): string {
  if (column.type !== 'RECORD') return scalarPartSql(column.type, x);
  const fields = (column.fields ?? []).map((field) =>
    valueSql(field, `${x}.${quoteColumn(field.name)}`, depth),
  );
  return `IF(${x} IS NULL, '${NULL_PART}', ${concatSql([`'${RECORD_PART}'`, ...fields])})`;
}

/** The column name the inner query gives the canonical part of the i-th value (see `canonicalPartsSql`). */
export function partColumn(i: number): string {
  return `__mba_p${String(i)}`;
}

/**
 * The canonical parts of a row aliased `alias`, one SQL expression per value: `_doc_id`, the user columns in
 * order, then `_unmapped`, as `compileRowCanonical` makes them. JSON values are present or NULL here; their
 * content is read back as text and compared in JavaScript (`jsonRowsSql` in view-reader.ts,
 * `jsonContentHash`), since no SQL text of a JSON value agrees between BigQuery and the emulator. `alias` names a query over
 * the view that selects its columns; the query over it selects the parts as columns named `partColumn(i)`,
 * and the one over that concatenates them (`canonicalRowSql`).
 */
export function canonicalPartsSql(columns: readonly ColumnSpec[], alias: string): string[] {
  return [
    scalarPartSql('STRING', `${alias}.\`_doc_id\``),
    ...columns.map((column) => valueSql(column, `${alias}.${quoteColumn(column.name)}`, 0)),
    scalarPartSql('JSON', `${alias}.\`_unmapped\``),
  ];
}

/** The canonical string, over the columns `partColumn(0..)` of the query below. */
export function canonicalRowSql(columns: readonly ColumnSpec[]): string {
  return concatSql(Array.from({ length: columns.length + 2 }, (_, i) => partColumn(i)));
}

/** The 60-bit hash (INT64) of a canonical string `canonical` (SQL), as `canonicalHash` computes it. */
export function hashSql(canonical: string): string {
  return `CAST(${concatSql([`'0x'`, `SUBSTR(TO_HEX(SHA256(${canonical})), 1, ${String(ROW_HASH_HEX_DIGITS)})`])} AS INT64)`;
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
  const isInteger = `REGEXP_CONTAINS(${docId}, r'${INTEGER_DOC_ID.source}')`;
  // The digits of {"$numberInt":"-5"} or {"$numberLong":"-5"} once the whole id is known to be one of them.
  const digits = `REPLACE(REPLACE(REPLACE(${docId}, '{"$numberInt":"', ''), '{"$numberLong":"', ''), '"}', '')`;
  return {
    rank: `CASE WHEN ${objectId} THEN ${String(OBJECT_ID_RANK)} WHEN ${string} THEN ${String(STRING_RANK)} WHEN ${isInteger} THEN ${String(NUMBER_RANK)} END`,
    number: `IF(${isInteger}, SAFE_CAST(${digits} AS INT64), NULL)`,
    // Compared as STRING: "all string comparisons are done byte-by-byte" in BigQuery (string functions
    // reference), MongoDB's order of UTF-8 strings. CAST AS BYTES would hold under a dataset's default
    // collation too, but bqemulator reads backslash escapes in the string as it casts (a documented limit).
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
