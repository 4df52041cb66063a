import { EJSON, type Long, type ObjectId } from 'bson';
import { bsonKind } from '../base/bson-kind.js';

/**
 * Where a document's `_doc_id` falls among `_id` ranges whose bounds are canonical Extended JSON (the
 * backfill's split), in MongoDB's BSON order: types first (numbers < strings < objects < ... < ObjectId <
 * ...), then the value. `verify` puts the view's rows into ranges in SQL (`bigquery/digest-sql.ts`); this
 * is the same rule in JavaScript, which the unit tests hold against MongoDB's order.
 *
 * Only ids whose order SQL can reproduce from `_doc_id` are placed: ObjectIds (24 hex digits, whose order
 * is their bytes'), strings (JSON-quoted; unquoted they compare by UTF-8 bytes in MongoDB and in BigQuery
 * alike) and integers (`{"$numberInt":..}`, `{"$numberLong":..}`). Other ids (doubles with a fraction,
 * dates, sub-documents, binary, ...) are not verified, and the report counts them.
 */

/** MongoDB's canonical type order of the types an `_id` can have (MinKey lowest, MaxKey highest). */
const TYPE_RANK: Readonly<Record<string, number>> = {
  MinKey: 0,
  null: 1,
  undefined: 1,
  number: 2,
  bigint: 2,
  Int32: 2,
  Double: 2,
  Long: 2,
  Decimal128: 2,
  string: 3,
  BSONSymbol: 3,
  invalidUtf8: 3,
  document: 4,
  DBRef: 4,
  array: 5,
  Binary: 6,
  bytes: 6,
  ObjectId: 7,
  boolean: 8,
  date: 9,
  Timestamp: 10,
  regexp: 11,
  BSONRegExp: 11,
  MaxKey: 12,
};

export const NUMBER_RANK = 2;
export const STRING_RANK = 3;
export const OBJECT_ID_RANK = 7;

/** A placed id: its type rank and its value (an integer, a string compared by UTF-8 bytes, or hex). */
export type IdKey =
  | { readonly rank: typeof NUMBER_RANK; readonly value: bigint | number }
  | { readonly rank: typeof STRING_RANK | typeof OBJECT_ID_RANK; readonly value: string };

/** A range bound: an id of any type; its value only matters against an id of the same rank. */
export interface BoundKey {
  readonly rank: number;
  /** Undefined for a bound whose value SQL does not compare (its type holds no placed id). */
  readonly value: bigint | number | string | undefined;
}

export const OBJECT_ID_DOC_ID = /^[0-9a-f]{24}$/;
export const INTEGER_DOC_ID = /^\{"\$number(?:Int|Long)":"(-?[0-9]+)"\}$/;

/** The key of a `_doc_id` (docIdString), or undefined when verify does not place ids of its type. */
export function docIdKey(docId: string): IdKey | undefined {
  if (OBJECT_ID_DOC_ID.test(docId)) return { rank: OBJECT_ID_RANK, value: docId };
  if (docId.startsWith('"')) return { rank: STRING_RANK, value: JSON.parse(docId) as string };
  const integer = INTEGER_DOC_ID.exec(docId)?.[1];
  return integer === undefined ? undefined : { rank: NUMBER_RANK, value: BigInt(integer) };
}

/** The key of a bound (canonical Extended JSON `{"id": ...}`, as `encodeId` writes it). */
export function boundKey(bound: string): BoundKey {
  const id = (EJSON.parse(bound, { relaxed: false }) as { id: unknown }).id;
  const kind = bsonKind(id);
  const rank = TYPE_RANK[kind] ?? Number.MAX_SAFE_INTEGER;
  switch (kind) {
    case 'ObjectId':
      return { rank, value: (id as ObjectId).toHexString() };
    case 'string':
      return { rank, value: id as string };
    case 'Int32':
    case 'number':
      return { rank, value: Number(id) };
    case 'Double': {
      const x = (id as { value: number }).value;
      return { rank, value: Number.isInteger(x) && Math.abs(x) < 2 ** 63 ? BigInt(x) : x };
    }
    case 'Long':
      return { rank, value: BigInt((id as Long).toString()) };
    case 'Decimal128':
      // MongoDB compares Decimal128 by its exact value; the nearest double is close enough to split at.
      return { rank, value: Number(String(id)) };
    default:
      return { rank, value: undefined };
  }
}

function utf8Compare(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

function numberCompare(a: bigint | number, b: bigint | number): number {
  if (typeof a === 'bigint' && typeof b === 'bigint') return a < b ? -1 : a > b ? 1 : 0;
  // As BigQuery does with INT64 against FLOAT64: both as doubles.
  const x = Number(a);
  const y = Number(b);
  return x < y ? -1 : x > y ? 1 : 0;
}

/** Orders a placed id against a bound in BSON order. */
export function compareToBound(key: IdKey, bound: BoundKey): number {
  if (key.rank !== bound.rank || bound.value === undefined) return key.rank - bound.rank;
  if (key.rank === NUMBER_RANK) return numberCompare(key.value, bound.value as bigint | number);
  if (key.rank === STRING_RANK) return utf8Compare(key.value, String(bound.value));
  // ObjectId: lowercase hex, whose order is the bytes' order.
  return key.value < String(bound.value) ? -1 : key.value > String(bound.value) ? 1 : 0;
}

/** Whether a placed id is in a range: after `after` (exclusive), up to `upTo` (inclusive). */
export function inRange(key: IdKey, range: IdRangeBounds): boolean {
  return (
    (range.after === undefined || compareToBound(key, range.after) > 0) &&
    (range.upTo === undefined || compareToBound(key, range.upTo) <= 0)
  );
}

/** A range's bounds as keys (see `rangeBounds`). */
export interface IdRangeBounds {
  readonly after: BoundKey | undefined;
  readonly upTo: BoundKey | undefined;
}

/** The keys of a range's bounds (canonical Extended JSON, undefined: open). */
export function rangeBounds(range: {
  readonly after: string | undefined;
  readonly upTo: string | undefined;
}): IdRangeBounds {
  return {
    after: range.after === undefined ? undefined : boundKey(range.after),
    upTo: range.upTo === undefined ? undefined : boundKey(range.upTo),
  };
}
