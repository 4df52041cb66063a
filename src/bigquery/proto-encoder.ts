import { adapt, protos } from '@google-cloud/bigquery-storage';
import { BigQueryError } from '../errors.js';
import { type TableField } from '../schema/types.js';
import { type HistoryRow, type RowRejection } from './writer.js';

export type DescriptorProto = protos.google.protobuf.DescriptorProto;

const ProtoType = protos.google.protobuf.FieldDescriptorProto.Type;
const ProtoLabel = protos.google.protobuf.FieldDescriptorProto.Label;

const WIRE_VARINT = 0;
const WIRE_FIXED64 = 1;
const WIRE_LENGTH_DELIMITED = 2;

const TWO_POW_32 = 4_294_967_296;
const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;
/** Seconds within which `seconds * 1e6 + micros` stays below 2^53 (about the years 1685 to 2255). */
const SAFE_MICROS_SECONDS = 9_000_000_000;
const MICROS_PER_SECOND = 1_000_000;
const SECONDS_PER_DAY = 86_400;
// BigQuery's TIMESTAMP range: 0001-01-01 00:00:00 .. 9999-12-31 23:59:59.999999 UTC, in seconds.
const MIN_TIMESTAMP_SECONDS = -62_135_596_800;
const MAX_TIMESTAMP_SECONDS = 253_402_300_799;
/** Strings up to this many UTF-16 units take at most 126 UTF-8 bytes: their length prefix is one byte. */
const SHORT_STRING_UNITS = 42;
const DEFAULT_INITIAL_BUFFER_BYTES = 64 * 1024;
/** A buffer grown past this by a large batch is given back afterwards (one encoder per table stays small). */
const MAX_RETAINED_BUFFER_BYTES = 1024 * 1024;
/** Slabs of `RowEncoder.encode`: a new one starts when less than the free minimum is left. */
const SLAB_BYTES = 256 * 1024;
const SLAB_MIN_FREE_BYTES = 16 * 1024;
/** Object.prototype's own keys: a row missing such a column must not read the inherited member. */
const PROTOTYPE_KEYS = new Set(Object.getOwnPropertyNames(Object.prototype));

/**
 * Growable output buffer. Lengths of nested messages and long strings are not known up front: one byte is
 * reserved and the content shifted in the rare case the length needs more (varints must be minimal for the
 * bytes to equal the library's).
 */
class ByteSink {
  bytes: Uint8Array;
  buffer: Buffer;
  view: DataView;
  pos = 0;

  constructor(size: number) {
    this.bytes = new Uint8Array(size);
    this.buffer = Buffer.from(this.bytes.buffer, 0, size);
    this.view = new DataView(this.bytes.buffer);
  }

  ensure(extra: number): void {
    const needed = this.pos + extra;
    if (needed <= this.bytes.length) return;
    let size = this.bytes.length * 2;
    while (size < needed) size *= 2;
    const bytes = new Uint8Array(size);
    bytes.set(this.bytes.subarray(0, this.pos));
    this.bytes = bytes;
    this.buffer = Buffer.from(bytes.buffer, 0, size);
    this.view = new DataView(bytes.buffer);
  }

  /** A field tag (field number and wire type), already combined by `tagOf`. */
  tag(value: number): void {
    if (value < 128) {
      this.ensure(1);
      this.bytes[this.pos++] = value;
    } else {
      this.varint32(value);
    }
  }

  varint32(value: number): void {
    this.ensure(5);
    const bytes = this.bytes;
    let v = value >>> 0;
    while (v > 127) {
      bytes[this.pos++] = (v & 127) | 128;
      v >>>= 7;
    }
    bytes[this.pos++] = v;
  }

  /** A 64-bit two's complement value given as unsigned low and high halves. */
  varint64(low: number, high: number): void {
    this.ensure(10);
    const bytes = this.bytes;
    let lo = low >>> 0;
    let hi = high >>> 0;
    while (hi !== 0) {
      bytes[this.pos++] = (lo & 127) | 128;
      lo = ((lo >>> 7) | (hi << 25)) >>> 0;
      hi >>>= 7;
    }
    while (lo > 127) {
      bytes[this.pos++] = (lo & 127) | 128;
      lo >>>= 7;
    }
    bytes[this.pos++] = lo;
  }

  /** An integral number within int64 (protobuf int64 and int32 alike: negatives take ten bytes). */
  int64Number(value: number): void {
    if (value >= 0 && value < TWO_POW_32) {
      this.varint32(value);
      return;
    }
    const high = Math.floor(value / TWO_POW_32);
    this.varint64(value - high * TWO_POW_32, high);
  }

  int64Big(value: bigint): void {
    const unsigned = BigInt.asUintN(64, value);
    this.varint64(Number(unsigned & 0xff_ff_ff_ffn), Number(unsigned >> 32n));
  }

  double(value: number): void {
    this.ensure(8);
    this.view.setFloat64(this.pos, value, true);
    this.pos += 8;
  }

  /** A string as length-delimited UTF-8 (lone surrogates become U+FFFD, as in any UTF-8 encoder). */
  string(value: string): void {
    const units = value.length;
    this.ensure(units * 3 + 5);
    if (units <= SHORT_STRING_UNITS) {
      const bytes = this.bytes;
      const start = this.pos + 1;
      let p = start;
      for (let i = 0; i < units; i++) {
        const c = value.charCodeAt(i);
        if (c >= 0x80) {
          p = start + this.buffer.write(value, start, 'utf8');
          break;
        }
        bytes[p++] = c;
      }
      bytes[this.pos] = p - start;
      this.pos = p;
      return;
    }
    const length = Buffer.byteLength(value, 'utf8');
    this.varint32(length);
    this.buffer.write(value, this.pos, 'utf8');
    this.pos += length;
  }

  /** Starts a length-delimited value of unknown length; returns where its one reserved length byte is. */
  open(): number {
    this.ensure(1);
    return this.pos++;
  }

  close(lengthPos: number): void {
    const start = lengthPos + 1;
    const length = this.pos - start;
    if (length < 128) {
      this.bytes[lengthPos] = length;
      return;
    }
    const prefix = varintSize(length);
    this.ensure(prefix - 1);
    this.bytes.copyWithin(lengthPos + prefix, start, this.pos);
    this.pos = lengthPos;
    this.varint32(length);
    this.pos += length;
  }
}

function varintSize(value: number): number {
  let size = 1;
  let v = value >>> 7;
  while (v !== 0) {
    size++;
    v >>>= 7;
  }
  return size;
}

function tagOf(fieldNumber: number, wireType: number): number {
  return fieldNumber * 8 + wireType;
}

/** A value that cannot be encoded for its column: the row is refused on its own (dead-letter), never retried. */
function misfit(column: string, expected: string, value: unknown): BigQueryError {
  const shown =
    typeof value === 'string'
      ? JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}...` : value)
      : Array.isArray(value)
        ? 'an array'
        : value === null
          ? 'null'
          : typeof value;
  return new BigQueryError('poison', `column ${column}: expected ${expected}, got ${shown}`);
}

// --- value parsers (wire values of src/transform/values.ts -> Storage Write representations) -------------

const INTEGER_TEXT = /^-?\d{1,19}$/;
const DECIMAL_TEXT = /^-?\d+(?:\.\d+)?$/;
const DATE_TEXT = /^(\d{4})-(\d{2})-(\d{2})$/;
const DATETIME_TEXT = /^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?$/;
const TIME_TEXT = /^\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?$/;
const TIMESTAMP_TEXT =
  /^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,6}))?(?:[Zz]| UTC|([+-])(\d{2})(?::?(\d{2}))?)?$/;
const DAYS_IN_MONTH = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];

/** Days since 1970-01-01 of a proleptic Gregorian date (era arithmetic, valid for any year). */
function daysFromCivil(year: number, month: number, day: number): number {
  const y = month <= 2 ? year - 1 : year;
  const era = Math.floor(y / 400);
  const yearOfEra = y - era * 400;
  const dayOfYear = Math.floor((153 * (month + (month > 2 ? -3 : 9)) + 2) / 5) + day - 1;
  const dayOfEra = yearOfEra * 365 + Math.floor(yearOfEra / 4) - Math.floor(yearOfEra / 100) + dayOfYear;
  return era * 146_097 + dayOfEra - 719_468;
}

function validDate(year: number, month: number, day: number): boolean {
  if (year < 1 || month < 1 || month > 12 || day < 1) return false;
  const leap = year % 4 === 0 && (year % 100 !== 0 || year % 400 === 0);
  return day <= (month === 2 && !leap ? 28 : (DAYS_IN_MONTH[month - 1] ?? 0));
}

function digits(text: string | undefined): number {
  return text === undefined ? 0 : Number.parseInt(text, 10);
}

/** DATE `YYYY-MM-DD` -> days since the epoch, or undefined when it is no calendar date. */
export function parseDateDays(text: string): number | undefined {
  const m = DATE_TEXT.exec(text);
  if (!m) return undefined;
  const [year, month, day] = [digits(m[1]), digits(m[2]), digits(m[3])];
  return validDate(year, month, day) ? daysFromCivil(year, month, day) : undefined;
}

/** Seconds since the epoch and the microseconds within that second. */
export interface EpochMicros {
  readonly seconds: number;
  readonly micros: number;
}

/** The decimal number written at text[from, from + count), or -1 when one of those is not a digit. */
function digitsAt(text: string, from: number, count: number): number {
  let n = 0;
  for (let i = from; i < from + count; i++) {
    const d = text.charCodeAt(i) - 48;
    if (d < 0 || d > 9) return -1;
    n = n * 10 + d;
  }
  return n;
}

const CHAR_DASH = 45;
const CHAR_COLON = 58;
const CHAR_DOT = 46;
const CHAR_T = 84;
const CHAR_Z = 90;
const POWERS_OF_TEN = [1, 10, 100, 1_000, 10_000, 100_000, 1_000_000];

function epochOf(
  date: readonly [year: number, month: number, day: number],
  time: readonly [hour: number, minute: number, second: number],
  micros: number,
  offsetSeconds: number,
): EpochMicros | undefined {
  const [year, month, day] = date;
  const [hour, minute, second] = time;
  if (!validDate(year, month, day) || hour > 23 || minute > 59 || second > 59) return undefined;
  const seconds =
    daysFromCivil(year, month, day) * SECONDS_PER_DAY + hour * 3600 + minute * 60 + second - offsetSeconds;
  if (seconds < MIN_TIMESTAMP_SECONDS || seconds > MAX_TIMESTAMP_SECONDS) return undefined;
  return { seconds, micros };
}

/** `YYYY-MM-DDTHH:MM:SS[.f{1,6}]Z`, the form Date.toISOString writes, without a regular expression. */
function parseIsoUtc(text: string): EpochMicros | undefined {
  const n = text.length;
  if (
    n < 20 ||
    n > 27 ||
    n === 21 ||
    text.charCodeAt(n - 1) !== CHAR_Z ||
    text.charCodeAt(4) !== CHAR_DASH ||
    text.charCodeAt(7) !== CHAR_DASH ||
    text.charCodeAt(10) !== CHAR_T ||
    text.charCodeAt(13) !== CHAR_COLON ||
    text.charCodeAt(16) !== CHAR_COLON ||
    (n > 20 && text.charCodeAt(19) !== CHAR_DOT)
  ) {
    return undefined;
  }
  const fractionDigits = n > 20 ? n - 21 : 0;
  const fraction = fractionDigits > 0 ? digitsAt(text, 20, fractionDigits) : 0;
  const date = [digitsAt(text, 0, 4), digitsAt(text, 5, 2), digitsAt(text, 8, 2)] as const;
  const time = [digitsAt(text, 11, 2), digitsAt(text, 14, 2), digitsAt(text, 17, 2)] as const;
  if (fraction < 0 || date.includes(-1) || time.includes(-1)) return undefined;
  return epochOf(date, time, fraction * (POWERS_OF_TEN[6 - fractionDigits] ?? 1), 0);
}

/**
 * An RFC 3339 timestamp (`T`, `t` or space between date and time; up to 6 fractional digits; `Z`, ` UTC`,
 * `+HH:MM`, `+HHMM`, `+HH` or nothing for UTC) within BigQuery's range, or undefined.
 */
export function parseTimestamp(text: string): EpochMicros | undefined {
  // The rows of one batch share `time_archived` and mostly `_cluster_time`: the last answer is reused.
  if (text === lastTimestampText) return lastTimestamp;
  const parsed = parseTimestampText(text);
  lastTimestampText = text;
  lastTimestamp = parsed;
  return parsed;
}

let lastTimestampText: string | undefined;
let lastTimestamp: EpochMicros | undefined;

function parseTimestampText(text: string): EpochMicros | undefined {
  const fast = parseIsoUtc(text);
  if (fast !== undefined) return fast;
  const m = TIMESTAMP_TEXT.exec(text);
  if (!m) return undefined;
  const fraction = m[7] ?? '';
  const micros = fraction === '' ? 0 : digits(fraction.padEnd(6, '0'));
  let offset = 0;
  if (m[8] !== undefined) {
    const [offsetHours, offsetMinutes] = [digits(m[9]), digits(m[10])];
    if (offsetHours > 23 || offsetMinutes > 59) return undefined;
    offset = (m[8] === '-' ? -1 : 1) * (offsetHours * 3600 + offsetMinutes * 60);
  }
  return epochOf(
    [digits(m[1]), digits(m[2]), digits(m[3])],
    [digits(m[4]), digits(m[5]), digits(m[6])],
    micros,
    offset,
  );
}

function epochOfDate(date: Date): EpochMicros | undefined {
  const ms = date.getTime();
  const seconds = Math.floor(ms / 1000);
  if (Number.isNaN(ms) || seconds < MIN_TIMESTAMP_SECONDS || seconds > MAX_TIMESTAMP_SECONDS)
    return undefined;
  return { seconds, micros: (ms - seconds * 1000) * 1000 };
}

function writeEpochMicros(sink: ByteSink, { seconds, micros }: EpochMicros): void {
  // Beyond about 285 years from 1970 the microsecond count exceeds 2^53: only BigInt keeps it exact.
  if (Math.abs(seconds) < SAFE_MICROS_SECONDS) sink.int64Number(seconds * MICROS_PER_SECOND + micros);
  else sink.int64Big(BigInt(seconds) * BigInt(MICROS_PER_SECOND) + BigInt(micros));
}

// --- field encoders -----------------------------------------------------------------------------------

/** Writes one non-null value, tag included. */
type ValueEncoder = (sink: ByteSink, value: unknown) => void;

interface FieldPlan {
  readonly key: string;
  /** Read with Object.hasOwn: the key is also a member of Object.prototype. */
  readonly guarded: boolean;
  readonly path: string;
  readonly encode: ValueEncoder;
}

type MessageEncoder = (sink: ByteSink, row: Readonly<Record<string, unknown>>) => void;

function scalarEncoder(field: TableField, path: string, tag: number): ValueEncoder {
  const varintTag = tagOf(tag, WIRE_VARINT);
  const fixedTag = tagOf(tag, WIRE_FIXED64);
  const bytesTag = tagOf(tag, WIRE_LENGTH_DELIMITED);
  const text = (expected: string, valid?: RegExp): ValueEncoder => {
    return (sink, value) => {
      if (typeof value !== 'string' || (valid !== undefined && !valid.test(value))) {
        throw misfit(path, expected, value);
      }
      sink.tag(bytesTag);
      sink.string(value);
    };
  };
  switch (field.type) {
    case 'STRING':
      return text('a string');
    case 'JSON':
      return text('JSON text');
    case 'TIME':
      return text('a TIME string HH:MM:SS[.ffffff]', TIME_TEXT);
    case 'NUMERIC':
    case 'BIGNUMERIC':
      return (sink, value) => {
        // Precision and scale are BigQuery's to check; the text must at least be a plain decimal.
        const text = typeof value === 'number' ? String(value) : value;
        if (typeof text !== 'string' || !DECIMAL_TEXT.test(text))
          throw misfit(path, 'a decimal string', value);
        sink.tag(bytesTag);
        sink.string(text);
      };
    case 'DATETIME':
      return (sink, value) => {
        if (typeof value !== 'string' || !DATETIME_TEXT.test(value)) {
          throw misfit(path, 'a DATETIME string YYYY-MM-DD HH:MM:SS[.ffffff]', value);
        }
        sink.tag(bytesTag);
        // The Storage Write API's canonical DATETIME text has a space between date and time.
        const separator = value.charCodeAt(10);
        sink.string(separator === 0x20 ? value : `${value.slice(0, 10)} ${value.slice(11)}`);
      };
    case 'BYTES':
      return (sink, value) => {
        if (value instanceof Uint8Array) {
          sink.tag(bytesTag);
          sink.varint32(value.length);
          sink.ensure(value.length);
          sink.bytes.set(value, sink.pos);
          sink.pos += value.length;
          return;
        }
        if (typeof value !== 'string') throw misfit(path, 'base64 text', value);
        const length = Buffer.byteLength(value, 'base64');
        sink.tag(bytesTag);
        sink.varint32(length);
        sink.ensure(length);
        if (sink.buffer.write(value, sink.pos, length, 'base64') !== length) {
          throw misfit(path, 'base64 text', value);
        }
        sink.pos += length;
      };
    case 'INTEGER':
      return (sink, value) => {
        if (typeof value === 'number') {
          if (!Number.isInteger(value) || value < -(2 ** 63) || value >= 2 ** 63)
            throw misfit(path, 'an int64', value);
          sink.tag(varintTag);
          sink.int64Number(value);
          return;
        }
        if (typeof value === 'string' && INTEGER_TEXT.test(value)) {
          const big = BigInt(value);
          if (big >= INT64_MIN && big <= INT64_MAX) {
            sink.tag(varintTag);
            sink.int64Big(big);
            return;
          }
        }
        throw misfit(path, 'an int64 (number or decimal string)', value);
      };
    case 'FLOAT':
      return (sink, value) => {
        let n: number;
        if (typeof value === 'number') n = value;
        else if (value === 'NaN') n = Number.NaN;
        else if (value === 'Infinity') n = Number.POSITIVE_INFINITY;
        else if (value === '-Infinity') n = Number.NEGATIVE_INFINITY;
        else if (value === '-0') n = -0;
        else throw misfit(path, "a number, 'NaN', 'Infinity', '-Infinity' or '-0'", value);
        sink.tag(fixedTag);
        sink.double(n);
      };
    case 'BOOLEAN':
      return (sink, value) => {
        if (typeof value !== 'boolean') throw misfit(path, 'a boolean', value);
        sink.tag(varintTag);
        sink.varint32(value ? 1 : 0);
      };
    case 'TIMESTAMP': {
      // Consecutive rows often share a timestamp (time_archived is one per batch): parse it once.
      let lastText = '';
      let lastParsed: EpochMicros | undefined;
      return (sink, value) => {
        let parsed: EpochMicros | undefined;
        if (typeof value === 'string') {
          if (value !== lastText) {
            lastParsed = parseTimestamp(value);
            lastText = value;
          }
          parsed = lastParsed;
        } else if (value instanceof Date) {
          parsed = epochOfDate(value);
        }
        if (parsed === undefined) throw misfit(path, 'an RFC 3339 timestamp within 0001..9999', value);
        sink.tag(varintTag);
        writeEpochMicros(sink, parsed);
      };
    }
    case 'DATE':
      return (sink, value) => {
        const days = typeof value === 'string' ? parseDateDays(value) : undefined;
        if (days === undefined) throw misfit(path, 'a DATE string YYYY-MM-DD', value);
        sink.tag(varintTag);
        sink.int64Number(days);
      };
    case 'RECORD':
      throw new Error(`unreachable: RECORD column ${path} is not a scalar`);
    default:
      return field.type satisfies never;
  }
}

/** Proto wire type the library's adapter must have chosen for each BigQuery type (checked at compile time). */
const EXPECTED_PROTO_TYPE: Readonly<Record<TableField['type'], number>> = {
  STRING: ProtoType.TYPE_STRING,
  JSON: ProtoType.TYPE_STRING,
  TIME: ProtoType.TYPE_STRING,
  DATETIME: ProtoType.TYPE_STRING,
  NUMERIC: ProtoType.TYPE_STRING,
  BIGNUMERIC: ProtoType.TYPE_STRING,
  BYTES: ProtoType.TYPE_BYTES,
  INTEGER: ProtoType.TYPE_INT64,
  TIMESTAMP: ProtoType.TYPE_INT64,
  DATE: ProtoType.TYPE_INT32,
  FLOAT: ProtoType.TYPE_DOUBLE,
  BOOLEAN: ProtoType.TYPE_BOOL,
  RECORD: ProtoType.TYPE_MESSAGE,
};

function protoTypeNumber(type: unknown): number | undefined {
  if (typeof type === 'number') return type;
  if (typeof type === 'string' && type in ProtoType) return ProtoType[type as keyof typeof ProtoType];
  return undefined;
}

function compileMessage(
  fields: readonly TableField[],
  descriptor: protos.google.protobuf.IDescriptorProto,
  nestedTypes: ReadonlyMap<string, protos.google.protobuf.IDescriptorProto>,
  prefix: string,
): MessageEncoder {
  const protoFields = descriptor.field ?? [];
  const plans: FieldPlan[] = fields.map((field, i) => {
    const path = prefix + field.name;
    const protoField = protoFields[i];
    const number = protoField?.number;
    if (!protoField || typeof number !== 'number' || number < 1) {
      throw new Error(`proto descriptor has no field for column ${path}`);
    }
    const protoType = protoTypeNumber(protoField.type);
    if (protoType !== EXPECTED_PROTO_TYPE[field.type]) {
      throw new Error(
        `proto descriptor gives column ${path} (${field.type}) the proto type ${String(protoField.type)}`,
      );
    }
    let element: ValueEncoder;
    if (field.type === 'RECORD') {
      const nested = nestedTypes.get(protoField.typeName ?? '');
      if (!nested) throw new Error(`proto descriptor lacks the message type of column ${path}`);
      const encodeMessage = compileMessage(field.fields ?? [], nested, nestedTypes, `${path}.`);
      const tag = tagOf(number, WIRE_LENGTH_DELIMITED);
      element = (sink, value) => {
        if (typeof value !== 'object' || value === null || Array.isArray(value)) {
          throw misfit(path, 'an object', value);
        }
        sink.tag(tag);
        const lengthPos = sink.open();
        encodeMessage(sink, value as Readonly<Record<string, unknown>>);
        sink.close(lengthPos);
      };
    } else {
      element = scalarEncoder(field, path, number);
    }
    const repeated = protoField.label === ProtoLabel.LABEL_REPEATED || field.mode === 'REPEATED';
    // Repeated numbers go unpacked (one tag per element), as the library's protobufjs encoding does.
    const encode: ValueEncoder = repeated
      ? (sink, value) => {
          if (!Array.isArray(value)) throw misfit(path, 'an array', value);
          for (const item of value as readonly unknown[]) {
            if (item === null || item === undefined)
              throw misfit(path, 'array elements that are not NULL', item);
            element(sink, item);
          }
        }
      : element;
    return { key: field.name, guarded: PROTOTYPE_KEYS.has(field.name), path, encode };
  });
  const byName = new Set(plans.map((plan) => plan.key));
  const byLowerName = new Map(plans.map((plan) => [plan.key.toLowerCase(), plan]));
  /**
   * The row's values under keys that are not exactly a field name. A key differing only in case is its
   * field's (BigQuery's names are case-insensitive, and insertAll matches them so); any other key has no
   * field here, and leaving its value out would lose it without a trace: refused as `schema`, so that the
   * sink repairs the table and the writer before the row is sent again.
   */
  const encodeOthers = (sink: ByteSink, row: Readonly<Record<string, unknown>>): void => {
    for (const key of Object.keys(row)) {
      const value = row[key];
      if (value === null || value === undefined || byName.has(key)) continue;
      const plan = byLowerName.get(key.toLowerCase());
      if (plan === undefined) {
        throw new BigQueryError('schema', `no such field: ${prefix}${key} (the table has no column for it)`);
      }
      const exact = Object.hasOwn(row, plan.key) ? row[plan.key] : undefined;
      if (exact !== null && exact !== undefined) {
        throw new BigQueryError('poison', `column ${plan.path}: the row has a value under two spellings`);
      }
      plan.encode(sink, value);
    }
  };
  return (sink, row) => {
    let found = 0;
    for (const plan of plans) {
      const value = plan.guarded && !Object.hasOwn(row, plan.key) ? undefined : row[plan.key];
      if (value === undefined) continue;
      found++;
      if (value !== null) plan.encode(sink, value);
    }
    // Every key of the row is a field's when the fields found as many: the common case, counted cheaply.
    if (Object.keys(row).length !== found) encodeOthers(sink, row);
  };
}

function collectNestedTypes(
  descriptor: protos.google.protobuf.IDescriptorProto,
  into: Map<string, protos.google.protobuf.IDescriptorProto>,
): Map<string, protos.google.protobuf.IDescriptorProto> {
  for (const nested of descriptor.nestedType ?? []) {
    if (nested.name) into.set(nested.name, nested);
    collectNestedTypes(nested, into);
  }
  return into;
}

/** Serialized rows of one batch, views into one buffer, with the rows that could not be encoded. */
export interface EncodedRows {
  /** Protobuf bytes of each encodable row, in input order. */
  readonly serialized: readonly Uint8Array[];
  /** For each entry of `serialized`, its index among the input rows. */
  readonly indexes: readonly number[];
  readonly rejected: readonly RowRejection[];
  /** Total size of `serialized`. */
  readonly bytes: number;
}

/** Encodes history rows (insertAll wire values) straight into the Storage Write API's protobuf rows. */
export interface RowEncoder {
  /** The proto2 descriptor every append request carries as its writer schema. */
  readonly descriptor: DescriptorProto;
  /**
   * One row's protobuf bytes, never overwritten afterwards (a view into a shared slab that later rows do not
   * reuse); throws a `poison` BigQueryError when a value does not fit.
   */
  encode(row: HistoryRow): Uint8Array;
  /** Many rows into one buffer; rows that do not fit their columns are returned as rejections. */
  encodeRows(rows: readonly HistoryRow[]): EncodedRows;
}

/**
 * Why the client library cannot describe a schema correctly, if it cannot: it names the message type of a
 * RECORD `root_<path joined by _>`, so a RECORD `a_b` and a RECORD `a` with a RECORD sub-field `b` get one
 * name and one of them the wrong fields.
 */
export function descriptorProblem(schema: readonly TableField[]): string | undefined {
  const seen = new Map<string, string>();
  const visit = (fields: readonly TableField[], scope: string, prefix: string): string | undefined => {
    for (const field of fields) {
      if (field.type !== 'RECORD') continue;
      const typeName = `${scope}_${field.name}`;
      const path = prefix + field.name;
      const other = seen.get(typeName);
      if (other !== undefined) {
        return `RECORD columns ${other} and ${path} get the same protobuf message name (${typeName}) in the client library's descriptor`;
      }
      seen.set(typeName, path);
      const nested = visit(field.fields ?? [], typeName, `${path}.`);
      if (nested !== undefined) return nested;
    }
    return undefined;
  };
  return visit(schema, 'root', '');
}

/** The proto2 descriptor the Storage Write API needs for a table schema, built by the client library. */
export function storageWriteDescriptor(schema: readonly TableField[]): DescriptorProto {
  const storageSchema = adapt.convertBigQuerySchemaToStorageTableSchema({ fields: plainFields(schema) });
  return adapt.convertStorageSchemaToProto2Descriptor(storageSchema, 'root');
}

interface PlainField {
  name: string;
  type: string;
  mode: string;
  fields?: PlainField[];
}

function plainFields(fields: readonly TableField[]): PlainField[] {
  return fields.map((f) => ({
    name: f.name,
    type: f.type,
    mode: f.mode,
    ...(f.fields && { fields: plainFields(f.fields) }),
  }));
}

/**
 * Compiles a table schema once into a row encoder: one closure per column, no schema walk per row. Values
 * become what the client library's JSONWriter sends: TIMESTAMP as int64 microseconds, DATE as int32 days,
 * DATETIME/TIME/NUMERIC/BIGNUMERIC/JSON as strings, BYTES as raw bytes, FLOAT strings 'NaN'/'Infinity'/'-0' as
 * doubles and INTEGER decimal strings as exact int64. Absent and NULL values are left out (NULL).
 */
export function compileRowEncoder(schema: readonly TableField[]): RowEncoder {
  const problem = descriptorProblem(schema);
  if (problem !== undefined)
    throw new BigQueryError('fatal', `Storage Write cannot take this table: ${problem}`);
  const descriptor = storageWriteDescriptor(schema);
  const encodeMessage = compileMessage(schema, descriptor, collectNestedTypes(descriptor, new Map()), '');
  let sink = new ByteSink(DEFAULT_INITIAL_BUFFER_BYTES);
  /**
   * `encode` writes rows one after the other into a slab and hands out views of it: one allocation per
   * slab rather than one per row (the stream loop encodes every row to measure it). A slab is dropped, never
   * reused, when it runs low; it is freed once no row still refers to it.
   */
  let slab = new ByteSink(SLAB_BYTES);
  /** Copies out what was written, giving back a buffer a large batch grew. */
  const take = (): Uint8Array => {
    const written = sink.bytes.slice(0, sink.pos);
    if (sink.bytes.length > MAX_RETAINED_BUFFER_BYTES) sink = new ByteSink(DEFAULT_INITIAL_BUFFER_BYTES);
    return written;
  };
  return {
    descriptor,
    encode(row) {
      if (slab.bytes.length - slab.pos < SLAB_MIN_FREE_BYTES) slab = new ByteSink(SLAB_BYTES);
      const start = slab.pos;
      try {
        encodeMessage(slab, row);
      } catch (error) {
        slab.pos = start;
        throw error;
      }
      if (slab.bytes.length > SLAB_BYTES) {
        // A large row grew the slab: it gets a buffer of its own and the next row a fresh slab.
        const own = slab.bytes.slice(start, slab.pos);
        slab = new ByteSink(SLAB_BYTES);
        return own;
      }
      return slab.bytes.subarray(start, slab.pos);
    },
    encodeRows(rows) {
      sink.pos = 0;
      const ends: number[] = [];
      const indexes: number[] = [];
      const rejected: RowRejection[] = [];
      for (let i = 0; i < rows.length; i++) {
        const start = sink.pos;
        try {
          encodeMessage(sink, rows[i] ?? {});
        } catch (error) {
          if (!(error instanceof BigQueryError)) throw error;
          sink.pos = start;
          rejected.push({ index: i, reason: error.message });
          continue;
        }
        ends.push(sink.pos);
        indexes.push(i);
      }
      // One copy per batch; the rows are views into it.
      const all = take();
      const serialized: Uint8Array[] = [];
      let start = 0;
      for (const end of ends) {
        serialized.push(all.subarray(start, end));
        start = end;
      }
      return { serialized, indexes, rejected, bytes: all.length };
    },
  };
}

/**
 * Whether a row carries a non-NULL value `fields` have no field for, at any depth: it cannot be sent with a
 * writer schema of those fields.
 */
export function compileExceeds(
  fields: readonly TableField[],
): (value: Readonly<Record<string, unknown>>) => boolean {
  const nested = new Map<string, ((value: Readonly<Record<string, unknown>>) => boolean) | undefined>(
    fields.map((f) => [f.name, f.type === 'RECORD' ? compileExceeds(f.fields ?? []) : undefined]),
  );
  const exceeds = (value: Readonly<Record<string, unknown>>): boolean => {
    for (const [key, item] of Object.entries(value)) {
      if (item === null || item === undefined) continue;
      if (!nested.has(key)) return true;
      const inner = nested.get(key);
      if (inner === undefined || typeof item !== 'object') continue;
      for (const element of Array.isArray(item) ? (item as unknown[]) : [item]) {
        if (element !== null && typeof element === 'object' && inner(element as Record<string, unknown>))
          return true;
      }
    }
    return false;
  };
  return exceeds;
}
