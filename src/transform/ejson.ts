import { bsonKind } from '../base/bson-kind.js';
import { INVALID_UTF8_KEY, type InvalidUtf8String } from '../base/invalid-utf8.js';
import {
  type Binary,
  type BSONRegExp,
  type BSONSymbol,
  type Code,
  type DBRef,
  type Decimal128,
  type Double,
  type Int32,
  type Long,
  type ObjectId,
  type Timestamp,
} from 'bson';

const MIN_RELAXED_DATE_MS = 0; // 1970-01-01: relaxed EJSON writes ISO strings for 1970..9999 only
const MAX_RELAXED_DATE_MS = 253_402_300_799_999;

/**
 * Relaxed Extended JSON (v2) as a JSON-ready value. Unlike bson's relaxed mode it keeps every int64 exact:
 * a Long beyond 2^53 stays `{"$numberLong": "..."}` instead of becoming an imprecise number, and -0 keeps
 * its sign. A string that is not valid UTF-8 becomes `{"$invalidUtf8": "<base64 of its bytes>"}`.
 */
export function toRelaxedEjson(value: unknown): unknown {
  switch (bsonKind(value)) {
    case 'null':
      return null;
    case 'string':
    case 'boolean':
      return value;
    case 'number':
      return relaxedDouble(value as number);
    case 'bigint': {
      const big = value as bigint;
      return big >= BigInt(Number.MIN_SAFE_INTEGER) && big <= BigInt(Number.MAX_SAFE_INTEGER)
        ? Number(big)
        : { $numberLong: big.toString() };
    }
    case 'Int32':
      return (value as Int32).value;
    case 'Double':
      return relaxedDouble((value as Double).value);
    case 'Long': {
      const long = value as Long;
      const n = long.toNumber();
      return Number.isSafeInteger(n) ? n : { $numberLong: long.toString() };
    }
    case 'Decimal128':
      return { $numberDecimal: (value as Decimal128).toString() };
    case 'ObjectId':
      return { $oid: (value as ObjectId).toHexString() };
    case 'date': {
      const ms = (value as Date).getTime();
      if (Number.isNaN(ms)) return { $date: { $numberLong: 'NaN' } };
      return ms >= MIN_RELAXED_DATE_MS && ms <= MAX_RELAXED_DATE_MS
        ? { $date: (value as Date).toISOString() }
        : { $date: { $numberLong: String(ms) } };
    }
    case 'Binary': {
      const binary = value as Binary;
      return {
        $binary: {
          base64: binary.toString('base64'),
          subType: binary.sub_type.toString(16).padStart(2, '0'),
        },
      };
    }
    case 'bytes':
      return { $binary: { base64: Buffer.from(value as Uint8Array).toString('base64'), subType: '00' } };
    case 'BSONRegExp': {
      const re = value as BSONRegExp;
      return { $regularExpression: { pattern: re.pattern, options: re.options } };
    }
    case 'regexp': {
      const re = value as RegExp;
      return { $regularExpression: { pattern: re.source, options: mongoRegexOptions(re.flags) } };
    }
    case 'Code': {
      const code = value as Code;
      return code.scope ? { $code: code.code, $scope: toRelaxedEjson(code.scope) } : { $code: code.code };
    }
    case 'BSONSymbol':
      return { $symbol: (value as BSONSymbol).value };
    case 'Timestamp': {
      const ts = value as Timestamp;
      return { $timestamp: { t: ts.t, i: ts.i } };
    }
    case 'MinKey':
      return { $minKey: 1 };
    case 'MaxKey':
      return { $maxKey: 1 };
    case 'DBRef': {
      const ref = value as DBRef;
      const out: Record<string, unknown> = { $ref: ref.collection, $id: toRelaxedEjson(ref.oid) };
      if (ref.db) out.$db = ref.db;
      for (const [k, v] of Object.entries(ref.fields)) out[k] = toRelaxedEjson(v);
      return out;
    }
    case 'array':
      return (value as unknown[]).map(toRelaxedEjson);
    case 'document': {
      const out: Record<string, unknown> = {};
      for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
        if (k === '__proto__') defineDataProperty(out, k, toRelaxedEjson(v));
        else out[k] = toRelaxedEjson(v);
      }
      return out;
    }
    case 'invalidUtf8':
      // The string's bytes, exactly as stored: decoding them would have turned them into U+FFFD.
      return { [INVALID_UTF8_KEY]: (value as InvalidUtf8String).base64() };
    case 'unknown':
      return { $unsupported: String(value) };
  }
}

/** Sets a key that could otherwise be taken as the prototype (`__proto__`) as a plain data property. */
export function defineDataProperty(target: object, key: string, value: unknown): void {
  Object.defineProperty(target, key, { value, enumerable: true, writable: true, configurable: true });
}

function relaxedDouble(n: number): unknown {
  if (Number.isFinite(n)) return Object.is(n, -0) ? { $numberDouble: '-0.0' } : n;
  return { $numberDouble: Number.isNaN(n) ? 'NaN' : n > 0 ? 'Infinity' : '-Infinity' };
}

/** MongoDB options for a native RegExp that bson decoded (it writes MongoDB's `s` as JS `g`). */
function mongoRegexOptions(flags: string): string {
  const options = new Set<string>();
  for (const flag of flags) {
    if (flag === 'g' || flag === 's') options.add('s');
    else if (flag === 'i' || flag === 'm' || flag === 'u') options.add(flag);
  }
  return [...options].sort().join('');
}

/** JSON text of a value in relaxed Extended JSON. */
export function relaxedEjsonText(value: unknown): string {
  return JSON.stringify(toRelaxedEjson(value));
}
