import { InvalidUtf8String } from './invalid-utf8.js';

/**
 * Classifies decoded BSON values, whether the driver promoted them to JS primitives (`number`, `RegExp`) or
 * kept the bson wrappers (`Int32`, `Double`, `Long`, `BSONRegExp`).
 */
/**
 * How the archiver decodes BSON everywhere (change events, backfill, samples). Regexes stay `BSONRegExp`:
 * bson's native `RegExp` decoding drops MongoDB's `x` option and turns its `s` option into JS `g`.
 */
export const BSON_DECODE_OPTIONS = { bsonRegExp: true } as const;

export type BsonKind =
  | 'null'
  | 'string'
  | 'number'
  | 'bigint'
  | 'boolean'
  | 'document'
  | 'array'
  | 'date'
  | 'regexp'
  | 'bytes'
  | 'ObjectId'
  | 'Binary'
  | 'Long'
  | 'Int32'
  | 'Double'
  | 'Decimal128'
  | 'Timestamp'
  | 'BSONRegExp'
  | 'Code'
  | 'BSONSymbol'
  | 'MinKey'
  | 'MaxKey'
  | 'DBRef'
  /** A string whose bytes are not valid UTF-8 (see InvalidUtf8String). */
  | 'invalidUtf8'
  | 'unknown';

const WRAPPERS = new Set<string>([
  'ObjectId',
  'Binary',
  'Long',
  'Int32',
  'Double',
  'Decimal128',
  'Timestamp',
  'BSONRegExp',
  'Code',
  'BSONSymbol',
  'MinKey',
  'MaxKey',
  'DBRef',
]);

export function bsonKind(value: unknown): BsonKind {
  switch (typeof value) {
    case 'string':
      return 'string';
    case 'number':
      return 'number';
    case 'boolean':
      return 'boolean';
    case 'bigint':
      return 'bigint';
    case 'undefined':
      return 'null';
    case 'object': {
      if (value === null) return 'null';
      if (Array.isArray(value)) return 'array';
      const tag = (value as { _bsontype?: unknown })._bsontype;
      if (typeof tag === 'string') return WRAPPERS.has(tag) ? (tag as BsonKind) : 'unknown';
      if (value instanceof Date) return 'date';
      if (value instanceof RegExp) return 'regexp';
      if (value instanceof Uint8Array) return 'bytes';
      if (value instanceof InvalidUtf8String) return 'invalidUtf8';
      return 'document';
    }
    default:
      return 'unknown';
  }
}

/** A plain sub-document (not an array, not a BSON wrapper, not a Date). */
export function isDocument(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && bsonKind(value) === 'document';
}
