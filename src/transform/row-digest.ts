import { createHash } from 'node:crypto';
import { type ColumnSpec, type ColumnType } from '../schema/types.js';
import { type Row } from './row-mapper.js';

/**
 * The canonical form of a mapped row that `verify` hashes on both sides: here from the mapper's row (the
 * insertAll wire values), in BigQuery from the view's columns (`bigquery/digest-sql.ts`, its twin). Each
 * type has the one text form real BigQuery (per its documentation) and the emulator both produce and this
 * module can produce too:
 *
 * - STRING, DATE, BYTES (base64): as stored; BOOLEAN `true`/`false`; INTEGER as decimal digits;
 * - FLOAT: C's `%.17g` (FORMAT in SQL; CAST(FLOAT64 AS STRING) differs between BigQuery and the emulator),
 *   `NaN`, `Inf`, `-Inf`, and `0` for both zeros (the sign of zero is not compared);
 * - NUMERIC, BIGNUMERIC: the decimal without trailing fraction zeros or a trailing dot (the emulator pads);
 * - TIMESTAMP: microseconds since the epoch; DATETIME `YYYY-MM-DD HH:MM:SS.ffffff`; TIME `HH:MM:SS.ffffff`;
 * - JSON (`_unmapped` and JSON columns): presence only. BigQuery stores JSON parsed (its text comes back
 *   normalised) while the emulator keeps it as written, so no text form agrees: a JSON value that differs
 *   but is present on both sides is not seen by `verify` (docs/operations.md, "Verify");
 * - RECORD: presence only (`R`), and a REPEATED RECORD its number of elements: the test emulator cannot
 *   read a field of a RECORD through a view, so no field-by-field form could be proven there.
 *
 * Every value is length-prefixed (`<UTF-8 bytes>:<text>`), NULL is `N`, an array `A<count>:` and its
 * elements: no two rows concatenate to the same string.
 */

/** Hex digits of the SHA-256 kept: 60 bits, so that BigQuery's INT64 holds the hash and its XOR. */
export const ROW_HASH_HEX_DIGITS = 15;

/** The text of NULL in the canonical form: every other part starts with a digit, `A` or `R`. */
export const NULL_PART = 'N';

/** C's `printf("%.17g", x)` for a finite, non-zero double: 17 significant digits, trailing zeros dropped. */
export function formatG17(x: number): string {
  const [mantissa = '', exponentText = '0'] = x.toExponential(16).split('e');
  const exponent = Number(exponentText);
  const negative = mantissa.startsWith('-');
  const digits = mantissa.replace('-', '').replace('.', '');
  const sign = negative ? '-' : '';
  if (exponent < -4 || exponent >= 17) {
    const fraction = digits.slice(1).replace(/0+$/, '');
    const e = Math.abs(exponent);
    return `${sign}${digits[0] ?? ''}${fraction ? `.${fraction}` : ''}e${exponent < 0 ? '-' : '+'}${e < 10 ? '0' : ''}${String(e)}`;
  }
  const padded = exponent < 0 ? '0'.repeat(-exponent) + digits : digits;
  const point = exponent < 0 ? 1 : exponent + 1;
  const whole = padded.slice(0, point);
  const fraction = padded.slice(point).replace(/0+$/, '');
  return `${sign}${whole}${fraction ? `.${fraction}` : ''}`;
}

/** The canonical text of a FLOAT wire value (a number, or `NaN`, `Infinity`, `-Infinity`, `-0` as text). */
export function floatText(value: unknown): string {
  const x = typeof value === 'number' ? value : Number(value);
  if (Number.isNaN(x)) return 'NaN';
  if (!Number.isFinite(x)) return x > 0 ? 'Inf' : '-Inf';
  return x === 0 ? '0' : formatG17(x);
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
  return (BigInt(seconds) * MICROS_PER_SECOND + BigInt(fraction.padEnd(6, '0'))).toString();
}

/** A DATETIME wire value as `YYYY-MM-DD HH:MM:SS.ffffff`. */
export function datetimeText(value: unknown): string {
  const m = DATETIME_PARTS.exec(String(value));
  return m ? `${m[1] ?? ''} ${m[2] ?? ''}.${(m[3] ?? '').padEnd(6, '0')}` : String(value);
}

/** A TIME wire value as `HH:MM:SS.ffffff`. */
export function timeText(value: unknown): string {
  const m = TIME_PARTS.exec(String(value));
  return m ? `${m[1] ?? ''}.${(m[2] ?? '').padEnd(6, '0')}` : String(value);
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

function part(text: string): string {
  return `${String(Buffer.byteLength(text, 'utf8'))}:${text}`;
}

type Canonical = (value: unknown) => string;

function compileValue(column: ColumnSpec): Canonical {
  const element: Canonical = column.type === 'RECORD' ? recordPresence : compileScalar(column.type);
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

function recordPresence(value: unknown): string {
  return value === null || value === undefined ? NULL_PART : 'R';
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
  return BigInt(
    `0x${createHash('sha256').update(canonical, 'utf8').digest('hex').slice(0, ROW_HASH_HEX_DIGITS)}`,
  );
}

/** Hashes of rows of `columns`: `canonicalHash` of `compileRowCanonical`. */
export function compileRowHash(
  columns: readonly ColumnSpec[],
): (row: Readonly<Row>, docId: string) => bigint {
  const canonical = compileRowCanonical(columns);
  return (row, docId) => canonicalHash(canonical(row, docId));
}
