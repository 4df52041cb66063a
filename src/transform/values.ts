import {
  type Binary,
  type BSONSymbol,
  type Code,
  type Decimal128,
  type Double,
  type Int32,
  type Long,
  type ObjectId,
  type Timestamp,
} from 'bson';
import { type ColumnType } from '../schema/types.js';
import { bsonKind } from '../base/bson-kind.js';
import {
  BIGNUMERIC_LIMITS,
  exactDouble,
  fitsDecimal,
  formatDecimal,
  NUMERIC_LIMITS,
  parseDecimal,
  type DecimalParts,
} from './decimal.js';
import { relaxedEjsonText } from './ejson.js';

/** Returned by a converter when the value cannot be stored in the column without loss. */
export const NO_FIT: unique symbol = Symbol('no-fit');
export type NoFit = typeof NO_FIT;

/** Converts one non-null BSON value into the column's wire value (insertAll JSON), or NO_FIT. */
export type ScalarConverter = (value: unknown) => unknown;

// BigQuery TIMESTAMP / DATETIME / DATE range: 0001-01-01 .. 9999-12-31.
const MIN_TIME_MS = -62_135_596_800_000;
const MAX_TIME_MS = 253_402_300_799_999;
const MS_PER_DAY = 86_400_000;
const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;
const TWO_POW_63 = 2 ** 63;
const UUID_SUBTYPE = 4;
const GENERIC_BINARY_SUBTYPES = new Set([0, 2]);

function inRange(date: Date): boolean {
  const ms = date.getTime();
  return ms >= MIN_TIME_MS && ms <= MAX_TIME_MS;
}

function int64Text(big: bigint): string | NoFit {
  return big >= INT64_MIN && big <= INT64_MAX ? big.toString() : NO_FIT;
}

function integerFromDecimal(d: DecimalParts | undefined): unknown {
  if (d === undefined || d.exponent < 0) return NO_FIT;
  const text = formatDecimal(d);
  if (text.length > 20) return NO_FIT;
  const n = Number(text);
  return Number.isSafeInteger(n) ? n : int64Text(BigInt(text));
}

function integerFromNumber(n: number): unknown {
  if (Number.isSafeInteger(n)) return n === 0 ? 0 : n;
  // An integral double beyond 2^53 still denotes one exact integer.
  if (Number.isInteger(n) && Math.abs(n) < TWO_POW_63) return BigInt(n).toString();
  return NO_FIT;
}

function toInteger(value: unknown): unknown {
  switch (bsonKind(value)) {
    case 'number':
      return integerFromNumber(value as number);
    case 'Int32':
      return (value as Int32).value;
    case 'Double':
      return integerFromNumber((value as Double).value);
    case 'Long': {
      const long = value as Long;
      const n = long.toNumber();
      return Number.isSafeInteger(n) ? n : long.toString();
    }
    case 'bigint':
      return int64Text(value as bigint);
    case 'Decimal128':
      return integerFromDecimal(parseDecimal((value as Decimal128).toString()));
    case 'Timestamp': {
      const ts = value as Timestamp;
      return int64Text((BigInt(ts.t) << 32n) | BigInt(ts.i));
    }
    default:
      return NO_FIT;
  }
}

/** The text of -0 that keeps its sign: String(-0) and JSON.stringify(-0) both give `0`. */
const NEGATIVE_ZERO_TEXT = '-0';

/**
 * JSON has no NaN or Infinity, and its text of -0 is `0`: these go as strings, which insertAll reads as
 * those doubles for FLOAT columns (and the Storage Write encoder reads back).
 */
function floatFromNumber(n: number): unknown {
  if (Number.isFinite(n)) return Object.is(n, -0) ? NEGATIVE_ZERO_TEXT : n;
  return Number.isNaN(n) ? 'NaN' : n > 0 ? 'Infinity' : '-Infinity';
}

function numberText(n: number): string {
  return Object.is(n, -0) ? NEGATIVE_ZERO_TEXT : String(n);
}

function toFloat(value: unknown): unknown {
  switch (bsonKind(value)) {
    case 'number':
      return floatFromNumber(value as number);
    case 'Int32':
      return (value as Int32).value;
    case 'Double':
      return floatFromNumber((value as Double).value);
    case 'Long':
    case 'bigint': {
      const big = BigInt(String(value));
      const n = Number(big);
      return BigInt(n) === big ? n : NO_FIT;
    }
    case 'Decimal128': {
      const n = exactDouble((value as Decimal128).toString());
      return n === undefined ? NO_FIT : floatFromNumber(n);
    }
    default:
      return NO_FIT;
  }
}

function decimalOf(value: unknown): DecimalParts | undefined {
  switch (bsonKind(value)) {
    case 'number':
      return Number.isFinite(value) ? parseDecimal(String(value)) : undefined;
    case 'Int32':
    case 'Double':
      return decimalOf((value as Int32 | Double).value);
    case 'Long':
    case 'bigint':
    case 'Decimal128':
      return parseDecimal(String(value));
    default:
      return undefined;
  }
}

const PLAIN_DECIMAL = /^-?(\d+)(?:\.(\d+))?$/;

function toDecimal(limits: typeof NUMERIC_LIMITS | typeof BIGNUMERIC_LIMITS): ScalarConverter {
  return (value) => {
    if (bsonKind(value) === 'Decimal128') {
      // Fast path: Decimal128 usually prints in plain notation that already fits.
      const text = String(value);
      const m = PLAIN_DECIMAL.exec(text);
      if (m && (m[1] ?? '').length <= limits.integerDigits && (m[2] ?? '').length <= limits.fractionDigits) {
        return text;
      }
    }
    const d = decimalOf(value);
    return d !== undefined && fitsDecimal(d, limits) ? formatDecimal(d) : NO_FIT;
  };
}

function uuidText(binary: Binary): string | undefined {
  if (binary.sub_type !== UUID_SUBTYPE || binary.position !== 16) return undefined;
  const hex = binary.toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

function toStringValue(value: unknown): unknown {
  switch (bsonKind(value)) {
    case 'string':
      return value;
    case 'invalidUtf8':
      // BigQuery would store U+FFFD in place of the bytes: `_unmapped` keeps them instead.
      return NO_FIT;
    case 'ObjectId':
      return (value as ObjectId).toHexString();
    case 'number':
      return numberText(value as number);
    case 'boolean':
    case 'bigint':
      return String(value);
    case 'Int32':
    case 'Double':
      return numberText((value as Int32 | Double).value);
    case 'Long':
    case 'Decimal128':
      return String(value);
    case 'date': {
      const date = value as Date;
      return Number.isNaN(date.getTime()) ? NO_FIT : date.toISOString();
    }
    case 'BSONSymbol':
      return (value as BSONSymbol).value;
    case 'Code': {
      const code = value as Code;
      return code.scope ? relaxedEjsonText(value) : code.code;
    }
    case 'Binary':
      return uuidText(value as Binary) ?? relaxedEjsonText(value);
    default:
      // Sub-documents, arrays and the rarer BSON types keep every detail as Extended JSON text.
      return relaxedEjsonText(value);
  }
}

function toBytes(value: unknown): unknown {
  switch (bsonKind(value)) {
    case 'Binary': {
      const binary = value as Binary;
      return GENERIC_BINARY_SUBTYPES.has(binary.sub_type) ? binary.toString('base64') : NO_FIT;
    }
    case 'bytes':
      return Buffer.from(value as Uint8Array).toString('base64');
    default:
      return NO_FIT;
  }
}

const TIMESTAMP_TEXT =
  /^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d{1,6})?(?:[Zz]|[+-](\d{2}):(\d{2}))$/;
const DATETIME_TEXT = /^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})(\.\d{1,6})?$/;
const DATE_TEXT = /^(\d{4})-(\d{2})-(\d{2})$/;
const TIME_TEXT = /^(\d{2}):(\d{2}):(\d{2})(\.\d{1,6})?$/;

function validCalendarDate(y: number, m: number, d: number): boolean {
  if (y < 1 || m < 1 || m > 12 || d < 1) return false;
  const probe = new Date(0);
  probe.setUTCFullYear(y, m - 1, d);
  return probe.getUTCDate() === d;
}

function validClock(h: number, min: number, s: number): boolean {
  return h <= 23 && min <= 59 && s <= 59;
}

/** Strings already in BigQuery's canonical text form pass unchanged: BigQuery reads them as the same value. */
function canonicalText(pattern: RegExp, hasDate: boolean, hasTime: boolean): (text: string) => boolean {
  return (text) => {
    const m = pattern.exec(text);
    if (!m) return false;
    const groups: (string | undefined)[] = m.slice(1);
    const n = groups.map((g) => (g === undefined ? 0 : Number.parseInt(g.replace('.', ''), 10)));
    const [a = 0, b = 0, c = 0, d = 0, e = 0, f = 0, , oh = 0, om = 0] = n;
    if (hasDate && !validCalendarDate(a, b, c)) return false;
    if (hasTime && hasDate && !validClock(d, e, f)) return false;
    if (hasTime && !hasDate && !validClock(a, b, c)) return false;
    return oh <= 23 && om <= 59;
  };
}

const isTimestampText = canonicalText(TIMESTAMP_TEXT, true, true);
const isDatetimeText = canonicalText(DATETIME_TEXT, true, true);
const isDateText = canonicalText(DATE_TEXT, true, false);
const isTimeText = canonicalText(TIME_TEXT, false, true);

function toTimestamp(value: unknown): unknown {
  switch (bsonKind(value)) {
    case 'date':
      return inRange(value as Date) ? (value as Date).toISOString() : NO_FIT;
    case 'string':
      return isTimestampText(value as string) ? value : NO_FIT;
    case 'Timestamp': {
      // Only exact when the increment is 0: the ordinal within the second has no place in a TIMESTAMP.
      const ts = value as Timestamp;
      return ts.i === 0 ? toTimestamp(new Date(ts.t * 1000)) : NO_FIT;
    }
    default:
      return NO_FIT;
  }
}

function toDatetime(value: unknown): unknown {
  switch (bsonKind(value)) {
    case 'date':
      return inRange(value as Date) ? (value as Date).toISOString().slice(0, 23) : NO_FIT;
    case 'string':
      return isDatetimeText(value as string) ? value : NO_FIT;
    default:
      return NO_FIT;
  }
}

function toDate(value: unknown): unknown {
  switch (bsonKind(value)) {
    case 'date': {
      const date = value as Date;
      return inRange(date) && date.getTime() % MS_PER_DAY === 0 ? date.toISOString().slice(0, 10) : NO_FIT;
    }
    case 'string':
      return isDateText(value as string) ? value : NO_FIT;
    default:
      return NO_FIT;
  }
}

function toTime(value: unknown): unknown {
  return typeof value === 'string' && isTimeText(value) ? value : NO_FIT;
}

function toBoolean(value: unknown): unknown {
  return typeof value === 'boolean' ? value : NO_FIT;
}

function toJson(value: unknown): unknown {
  // Like a STRING column, a JSON column never holds an invalid string as its value (inside a sub-document
  // the `$invalidUtf8` marker stands for it, as in every Extended JSON text).
  return bsonKind(value) === 'invalidUtf8' ? NO_FIT : relaxedEjsonText(value);
}

/** The lossless converter for a scalar column type (RECORD is handled by the row mapper). */
export function scalarConverter(type: Exclude<ColumnType, 'RECORD'>): ScalarConverter {
  switch (type) {
    case 'STRING':
      return toStringValue;
    case 'BYTES':
      return toBytes;
    case 'INTEGER':
      return toInteger;
    case 'FLOAT':
      return toFloat;
    case 'BOOLEAN':
      return toBoolean;
    case 'TIMESTAMP':
      return toTimestamp;
    case 'DATE':
      return toDate;
    case 'TIME':
      return toTime;
    case 'DATETIME':
      return toDatetime;
    case 'NUMERIC':
      return toDecimal(NUMERIC_LIMITS);
    case 'BIGNUMERIC':
      return toDecimal(BIGNUMERIC_LIMITS);
    case 'JSON':
      return toJson;
    default:
      return type satisfies never;
  }
}

/**
 * The canonical string of a document id (`_doc_id`): ObjectId as 24 hex digits, anything else as canonical
 * Extended JSON. Integral numbers are one key in MongoDB whatever their BSON type (1, 1.0 and 1L), so they
 * get one string here too.
 */
export function docIdString(id: unknown): string {
  switch (bsonKind(id)) {
    case 'ObjectId':
      return (id as ObjectId).toHexString();
    case 'string':
      return JSON.stringify(id);
    case 'number':
    case 'Int32':
    case 'Double':
    case 'Long':
    case 'bigint': {
      const n = toInteger(id);
      if (n !== NO_FIT) {
        const text = String(n);
        const big = BigInt(text);
        return big >= -(2n ** 31n) && big < 2n ** 31n
          ? `{"$numberInt":"${text}"}`
          : `{"$numberLong":"${text}"}`;
      }
      const x = typeof id === 'number' ? id : (id as Double).value;
      return `{"$numberDouble":"${Number.isNaN(x) ? 'NaN' : Number.isFinite(x) ? String(x) : x > 0 ? 'Infinity' : '-Infinity'}"}`;
    }
    default:
      return canonicalEjson(id);
  }
}

function canonicalEjson(value: unknown): string {
  // Key order is kept as stored: MongoDB compares sub-document ids field by field in order.
  return JSON.stringify(canonical(value));
}

function canonical(value: unknown): unknown {
  switch (bsonKind(value)) {
    case 'number':
    case 'Int32':
    case 'Double':
    case 'Long':
    case 'bigint':
      return JSON.parse(docIdString(value)) as unknown;
    case 'array':
      return (value as unknown[]).map(canonical);
    case 'document': {
      const out: Record<string, unknown> = {};
      for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
        Object.defineProperty(out, k, {
          value: canonical(v),
          enumerable: true,
          writable: true,
          configurable: true,
        });
      }
      return out;
    }
    case 'date': {
      const ms = (value as Date).getTime();
      return { $date: { $numberLong: String(ms) } };
    }
    default:
      return JSON.parse(relaxedEjsonText(value)) as unknown;
  }
}
