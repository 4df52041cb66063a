import { hash } from 'node:crypto';
import { type ColumnSpec, type ColumnType } from '../schema/types.js';
import { canonicalJson } from './json-canonical.js';
import { type Row } from './row-mapper.js';

/**
 * The canonical form of a mapped row that `verify` hashes on both sides: here from the mapper's row (the
 * insertAll wire values), in BigQuery from the view's columns (`bigquery/digest-sql.ts`, its twin). Each
 * type has the one text form real BigQuery (per its documentation) and the emulator both produce and this
 * module can produce too:
 *
 * - STRING, DATE, BYTES (base64): as stored; BOOLEAN `true`/`false`; INTEGER as decimal digits;
 * - FLOAT: exactly, as `<sign><m>p<e>` with x = m * 2^(e-52) and 2^52 <= m < 2^53 (the double's own
 *   significand and exponent, computed in SQL by exact division by powers of two; no text formatting
 *   function, see below), `NaN`, `Inf`, `-Inf`, and `0` for both zeros (the sign of zero is not compared);
 * - NUMERIC, BIGNUMERIC: the decimal without trailing fraction zeros or a trailing dot (the emulator pads);
 * - TIMESTAMP: microseconds since the epoch; DATETIME microseconds since 0001-01-01 00:00:00; TIME
 *   microseconds since midnight;
 * - RECORD: `R` and its fields' parts in order, recursively (a REPEATED RECORD as an array of them), so a
 *   change inside a sub-document is seen;
 * - JSON (`_unmapped`, JSON columns, REPEATED ones and those in REPEATED RECORDs): presence only in this
 *   string (`N`, or `0:`; a list's length), which SQL can compute alike on both; the content is compared
 *   apart, by `compileJsonHash` (below): BigQuery stores JSON parsed and
 *   gives back normalised text (keys reordered, numbers respelt) while the emulator keeps it as written, so
 *   no text form SQL could hash agrees, and the JSON text is read back and put in canonical form in
 *   JavaScript instead (`transform/json-canonical.ts`). A document's hash is the XOR of both
 *   (`compileDocumentHash`).
 *
 * Every value is length-prefixed (`<characters>:<text>`, in Unicode code points: CHAR_LENGTH), NULL is `N`,
 * an array `A<count>:` and its elements: no two rows concatenate to the same string.
 *
 * Why no CONCAT, BYTE_LENGTH, FORMAT or FORMAT_TIME on the SQL side: the test emulator (bqemulator 1.4)
 * drops RECORD columns when it expands the view's `SELECT *` in a query holding any of them ("Values list
 * v does not have a column named rec"), so the SQL uses ARRAY_TO_STRING, CHAR_LENGTH, arithmetic and
 * *_DIFF instead, which both BigQuery and the emulator evaluate with the view's RECORDs intact.
 */

/** Hex digits of the SHA-256 kept: 60 bits, so that BigQuery's INT64 holds the hash and its XOR. */
export const ROW_HASH_HEX_DIGITS = 15;

/** The text of NULL in the canonical form: every other part starts with a digit, `A` or `R`. */
export const NULL_PART = 'N';

/** What starts the part of a non-null RECORD (its fields' parts follow). */
export const RECORD_PART = 'R';

const FLOAT_VIEW = new DataView(new ArrayBuffer(8));
const SIGNIFICAND_BITS = 52;
const EXPONENT_BIAS = 1023;

/**
 * A finite, non-zero double as `<sign><m>p<e>`: x = m * 2^(e-52), 2^52 <= m < 2^53 (subnormals
 * normalised the same way), read from the double's bits; exact, so equal only for the same double.
 */
export function floatBits(x: number): string {
  // In Numbers, not BigInts: the significand has at most 53 bits, which a double holds exactly.
  FLOAT_VIEW.setFloat64(0, Math.abs(x));
  const high = FLOAT_VIEW.getUint32(0);
  const biased = high >>> 20;
  let m = (high & 0xf_ffff) * 2 ** 32 + FLOAT_VIEW.getUint32(4);
  let e: number;
  if (biased === 0) {
    // Subnormal: m * 2^-1074; shift its leading one up to bit 52.
    const top = high & 0xf_ffff;
    const leading = top === 0 ? 31 - Math.clz32(FLOAT_VIEW.getUint32(4)) : 63 - Math.clz32(top);
    const shift = SIGNIFICAND_BITS - leading;
    m *= 2 ** shift;
    e = 1 - EXPONENT_BIAS - shift;
  } else {
    m += 2 ** SIGNIFICAND_BITS;
    e = biased - EXPONENT_BIAS;
  }
  return `${x < 0 ? '-' : ''}${String(m)}p${String(e)}`;
}

/** The canonical text of a FLOAT wire value (a number, or `NaN`, `Infinity`, `-Infinity`, `-0` as text). */
export function floatText(value: unknown): string {
  const x = typeof value === 'number' ? value : Number(value);
  if (Number.isNaN(x)) return 'NaN';
  if (!Number.isFinite(x)) return x > 0 ? 'Inf' : '-Inf';
  return x === 0 ? '0' : floatBits(x);
}

/** The canonical text of a NUMERIC or BIGNUMERIC wire value (a plain decimal string). */
export function decimalText(value: unknown): string {
  let text = String(value);
  if (text.includes('.')) text = text.replace(/\.?0*$/, '');
  return text === '-0' ? '0' : text;
}

const TIMESTAMP_PARTS =
  /^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,6}))?(?:[Zz]|([+-])(\d{2}):(\d{2}))$/;
const DATETIME_PARTS = /^(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(?:\.(\d{1,6}))?$/;
const TIME_PARTS = /^(\d{2}:\d{2}:\d{2})(?:\.(\d{1,6}))?$/;
const MICROS_PER_SECOND = 1_000_000n;

/** Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's days_from_civil). */
function daysFromCivil(year: number, month: number, day: number): number {
  const y = month <= 2 ? year - 1 : year;
  const era = Math.floor(y / 400);
  const yoe = y - era * 400;
  const doy = Math.floor((153 * (month + (month > 2 ? -3 : 9)) + 2) / 5) + day - 1;
  const doe = yoe * 365 + Math.floor(yoe / 4) - Math.floor(yoe / 100) + doy;
  return era * 146_097 + doe - 719_468;
}

/** A TIMESTAMP wire value (ISO text, with a zone or `Z`) as microseconds since the epoch (UNIX_MICROS). */
export function timestampMicros(value: unknown): string {
  const m = TIMESTAMP_PARTS.exec(String(value));
  if (!m) return String(value);
  const [, y, mo, d, h, mi, s, fraction = '', zoneSign, zh = '0', zm = '0'] = m;
  const days = daysFromCivil(Number(y), Number(mo), Number(d));
  const offset =
    zoneSign === undefined ? 0 : (zoneSign === '-' ? -1 : 1) * (Number(zh) * 3600 + Number(zm) * 60);
  const seconds = days * 86_400 + Number(h) * 3600 + Number(mi) * 60 + Number(s) - offset;
  const micros = Number(fraction.padEnd(6, '0'));
  // Exact in a double while |seconds| < 2^53 / 10^6 (years 1685 to 2255); BigInts only beyond.
  if (Math.abs(seconds) < SAFE_MICROS_SECONDS) return String(seconds * 1_000_000 + micros);
  return (BigInt(seconds) * MICROS_PER_SECOND + BigInt(micros)).toString();
}

/** Seconds from the epoch within which a count of microseconds is an exact double. */
const SAFE_MICROS_SECONDS = Math.floor(Number.MAX_SAFE_INTEGER / 1_000_000) - 1;

const DAYS_TO_YEAR_ONE = daysFromCivil(1, 1, 1);
const MICROS_PER_DAY = 86_400n * MICROS_PER_SECOND;

function timeMicros(time: string, fraction: string): bigint {
  const [h = 0, mi = 0, s = 0] = time.split(':').map(Number);
  return BigInt(h * 3600 + mi * 60 + s) * MICROS_PER_SECOND + BigInt(fraction.padEnd(6, '0'));
}

/** A DATETIME wire value as microseconds since 0001-01-01 00:00:00 (DATETIME_DIFF in SQL). */
export function datetimeText(value: unknown): string {
  const m = DATETIME_PARTS.exec(String(value));
  if (!m) return String(value);
  const [y = 0, mo = 0, d = 0] = (m[1] ?? '').split('-').map(Number);
  const days = BigInt(daysFromCivil(y, mo, d) - DAYS_TO_YEAR_ONE);
  return (days * MICROS_PER_DAY + timeMicros(m[2] ?? '', m[3] ?? '')).toString();
}

/** A TIME wire value as microseconds since midnight (TIME_DIFF in SQL). */
export function timeText(value: unknown): string {
  const m = TIME_PARTS.exec(String(value));
  return m ? timeMicros(m[1] ?? '', m[2] ?? '').toString() : String(value);
}

type ScalarType = Exclude<ColumnType, 'RECORD'>;

/** The canonical text of a non-null scalar wire value of a column of type `type`. */
export function scalarText(type: ScalarType, value: unknown): string {
  switch (type) {
    case 'STRING':
    case 'BYTES':
    case 'DATE':
      return String(value);
    case 'INTEGER':
      return String(value);
    case 'BOOLEAN':
      return value === true || value === 'true' ? 'true' : 'false';
    case 'FLOAT':
      return floatText(value);
    case 'NUMERIC':
    case 'BIGNUMERIC':
      return decimalText(value);
    case 'TIMESTAMP':
      return timestampMicros(value);
    case 'DATETIME':
      return datetimeText(value);
    case 'TIME':
      return timeText(value);
    case 'JSON':
      return '';
    default:
      return type satisfies never;
  }
}

const SURROGATE = /[\uD800-\uDFFF]/;
const SURROGATE_PAIR = /[\uD800-\uDBFF][\uDC00-\uDFFF]/g;

function part(text: string): string {
  // Code points, as CHAR_LENGTH counts them: UTF-16 units less one per surrogate pair (rare, so tested first).
  const characters = SURROGATE.test(text)
    ? text.length - (text.match(SURROGATE_PAIR)?.length ?? 0)
    : text.length;
  return `${String(characters)}:${text}`;
}

type Canonical = (value: unknown) => string;

function compileValue(column: ColumnSpec): Canonical {
  const element: Canonical =
    column.type === 'RECORD' ? compileRecord(column.fields ?? []) : compileScalar(column.type);
  if (column.mode !== 'REPEATED') return element;
  return (value) => {
    const items = Array.isArray(value) ? (value as unknown[]) : [];
    let out = `A${String(items.length)}:`;
    for (const item of items) out += element(item);
    return out;
  };
}

function compileScalar(type: ScalarType): Canonical {
  return (value) => (value === null || value === undefined ? NULL_PART : part(scalarText(type, value)));
}

/** `R` and every field's part in order (a field the sub-document lacks is NULL); NULL when absent. */
function compileRecord(fields: readonly ColumnSpec[]): Canonical {
  const readers = fields.map((field) => ({ name: field.name, value: compileValue(field) }));
  return (value) => {
    if (value === null || value === undefined || typeof value !== 'object') return NULL_PART;
    const record = value as Readonly<Record<string, unknown>>;
    let out = RECORD_PART;
    for (const reader of readers)
      out += reader.value(Object.hasOwn(record, reader.name) ? record[reader.name] : null);
    return out;
  };
}

/** The canonical string of a row: `_doc_id`, then the user columns in order, then `_unmapped` (presence). */
export type RowCanonical = (row: Readonly<Row>, docId: string) => string;

/** Compiles the canonical form of rows of `columns` once (the SQL twin: `canonicalRowSql`). */
export function compileRowCanonical(columns: readonly ColumnSpec[]): RowCanonical {
  const readers = columns.map((column) => ({ name: column.name, value: compileValue(column) }));
  const unmapped = compileScalar('JSON');
  return (row, docId) => {
    let out = part(docId);
    for (const reader of readers)
      out += reader.value(Object.hasOwn(row, reader.name) ? row[reader.name] : null);
    return out + unmapped(row._unmapped);
  };
}

/** The 60-bit hash of a canonical string: the first 15 hex digits of its SHA-256 (UTF-8). */
export function canonicalHash(canonical: string): bigint {
  return BigInt(`0x${hash('sha256', canonical, 'hex').slice(0, ROW_HASH_HEX_DIGITS)}`);
}

/** Hashes of rows of `columns`: `canonicalHash` of `compileRowCanonical`. */
export function compileRowHash(
  columns: readonly ColumnSpec[],
): (row: Readonly<Row>, docId: string) => bigint {
  const canonical = compileRowCanonical(columns);
  return (row, docId) => canonicalHash(canonical(row, docId));
}

/**
 * Where a JSON value of a row is whose content `verify` compares. `names` lead from the row, through RECORDs
 * that are not REPEATED, to a JSON column, or to the list holding JSON values: a REPEATED JSON column, or a
 * REPEATED RECORD with a JSON field. `element` is set for a list: the names within each element down to its
 * JSON value, through RECORDs that are not REPEATED (none for a REPEATED JSON column). A list inside a list
 * (a REPEATED field of a REPEATED RECORD's element) has no path: it is compared by presence only
 * (`app/digest-gaps.ts` warns of it).
 */
export interface JsonPath {
  readonly names: readonly string[];
  readonly element?: readonly string[];
}

/** The name of the column of unmapped fields, the last JSON path of every row. */
export const UNMAPPED_COLUMN = '_unmapped';

function collectJsonPaths(columns: readonly ColumnSpec[], prefix: readonly string[], out: JsonPath[]): void {
  for (const column of columns) {
    const names = [...prefix, column.name];
    if (column.mode === 'REPEATED') {
      if (column.type === 'JSON') out.push({ names, element: [] });
      else if (column.type === 'RECORD') collectElementPaths(column.fields ?? [], names, [], out);
    } else if (column.type === 'JSON') {
      out.push({ names });
    } else if (column.type === 'RECORD') {
      collectJsonPaths(column.fields ?? [], names, out);
    }
  }
}

/** The JSON fields of the elements of the REPEATED RECORD at `list`, `prefix` the names within an element. */
function collectElementPaths(
  fields: readonly ColumnSpec[],
  list: readonly string[],
  prefix: readonly string[],
  out: JsonPath[],
): void {
  for (const field of fields) {
    // A list within a list: one level of UNNEST reads it no more (presence only, see JsonPath).
    if (field.mode === 'REPEATED') continue;
    const element = [...prefix, field.name];
    if (field.type === 'JSON') out.push({ names: list, element });
    else if (field.type === 'RECORD') collectElementPaths(field.fields ?? [], list, element, out);
  }
}

/**
 * The JSON values whose content `verify` compares, in a fixed order: JSON columns and lists of JSON values
 * in column order, then `_unmapped`.
 */
export function jsonContentPaths(columns: readonly ColumnSpec[]): JsonPath[] {
  const out: JsonPath[] = [];
  collectJsonPaths(columns, [], out);
  out.push({ names: [UNMAPPED_COLUMN] });
  return out;
}

/** The dotted name of the JSON column a path reaches (its list's names, then the element's). */
export function jsonPathName(path: JsonPath): string {
  return [...path.names, ...(path.element ?? [])].join('.');
}

/**
 * One JSON value as `jsonContentHash` takes it: a JSON text (as written, or as BigQuery gives it back, a list
 * as the text of a JSON array), a list of element texts (an element NULL where a REPEATED RECORD's element
 * lacks the field), or NULL. An empty list is NULL: BigQuery stores a NULL array as an empty one.
 */
export type JsonContent = string | readonly (string | null)[] | null | undefined;

/**
 * The canonical form of a list of JSON texts: `canonicalJson` of the JSON array of them, element by element,
 * so that it equals the form of the array text BigQuery gives back (`a<count>:` and each element's form). A
 * NULL element (a REPEATED RECORD's element without the field) is JSON `null`, as TO_JSON_STRING writes SQL
 * NULL inside an array; whether each element has the field is compared by the row hash already (`N` or
 * `0:`). Each element is put in canonical form alone, never spliced into one text: an element that is not
 * one valid JSON value (`1,2`, say) keeps its INVALID_JSON_PART form, which no array text BigQuery gives back
 * has, so it cannot pass for other elements.
 */
function canonicalJsonList(texts: readonly (string | null)[]): string {
  let out = `a${String(texts.length)}:`;
  for (const text of texts) out += text === null ? 'n' : canonicalJson(text);
  return out;
}

/**
 * The 60-bit hash of a document's JSON content: `J`, its `_doc_id`, then each JSON value's canonical form
 * (`canonicalJson`, or `canonicalJsonList` of a list) or NULL, in `jsonContentPaths` order; 0 when every one
 * is NULL (or an empty list), so that a document without JSON content keeps the SQL hash alone. The same
 * content gives the same hash whatever text spelt it, and a list the same hash as its JSON array's text.
 */
export function jsonContentHash(docId: string, values: readonly JsonContent[]): bigint {
  let any = false;
  let out = `J${part(docId)}`;
  for (const value of values) {
    if (value === null || value === undefined || (typeof value !== 'string' && value.length === 0)) {
      out += NULL_PART;
    } else {
      any = true;
      out += part(typeof value === 'string' ? canonicalJson(value) : canonicalJsonList(value));
    }
  }
  return any ? canonicalHash(out) : 0n;
}

function valueAt(value: unknown, names: readonly string[]): unknown {
  let at = value;
  for (const name of names) {
    if (at === null || typeof at !== 'object') return null;
    const record = at as Readonly<Record<string, unknown>>;
    at = Object.hasOwn(record, name) ? record[name] : null;
  }
  return at;
}

function textAt(value: unknown, names: readonly string[]): string | null {
  const text = valueAt(value, names);
  return typeof text === 'string' ? text : null;
}

/** The JSON value of a mapped row at `path`: its text, the texts of a list's elements, or NULL (`JsonContent`). */
function contentAt(row: Readonly<Row>, path: JsonPath): string | (string | null)[] | null {
  const { element } = path;
  if (element === undefined) return textAt(row, path.names);
  const list = valueAt(row, path.names);
  if (!Array.isArray(list) || list.length === 0) return null;
  return (list as unknown[]).map((item) => textAt(item, element));
}

/** Whether a row has no JSON content at `path` (NULL, or an empty list), without building it. */
function isAbsent(row: Readonly<Row>, path: JsonPath): boolean {
  const value = valueAt(row, path.names);
  if (path.element === undefined) return typeof value !== 'string';
  return !Array.isArray(value) || value.length === 0;
}

/** The JSON content hash of mapped rows of `columns` (`jsonContentHash` of their JSON values). */
export function compileJsonHash(
  columns: readonly ColumnSpec[],
): (row: Readonly<Row>, docId: string) => bigint {
  const paths = jsonContentPaths(columns);
  return (row, docId) => {
    // Most documents have no JSON value: nothing is allocated for them.
    if (paths.every((path) => isAbsent(row, path))) return 0n;
    return jsonContentHash(
      docId,
      paths.map((path) => contentAt(row, path)),
    );
  };
}

/**
 * The hash `verify` compares per document: the row's hash (`compileRowHash`, which BigQuery computes in SQL)
 * XOR its JSON content hash (`compileJsonHash`, which the view reader computes from the JSON text it reads
 * back). XOR keeps a range's digest the XOR of both sides' parts, so the SQL digest stays as it is.
 */
export function compileDocumentHash(
  columns: readonly ColumnSpec[],
): (row: Readonly<Row>, docId: string) => bigint {
  const row = compileRowHash(columns);
  const json = compileJsonHash(columns);
  return (r, docId) => row(r, docId) ^ json(r, docId);
}
