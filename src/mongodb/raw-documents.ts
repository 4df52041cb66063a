import { isUtf8 } from 'node:buffer';
import { BSONError, deserialize, type DBRef, type Document } from 'bson';
import { BSON_DECODE_OPTIONS } from '../base/bson-kind.js';
import { defineDataProperty } from '../transform/ejson.js';
import { InvalidUtf8String } from '../base/invalid-utf8.js';

/**
 * Reads of documents where one that is not valid UTF-8 must not fail the read: the driver's decoding
 * validates strings and throws (every retry fails the same way), and with validation off it turns the
 * bytes into U+FFFD. These options hand the documents over as BSON bytes instead; decodeDocument reads
 * them without loss.
 */
export const RAW_READ = { raw: true } as const;

const TYPE = {
  double: 0x01,
  string: 0x02,
  document: 0x03,
  array: 0x04,
  binary: 0x05,
  undefined: 0x06,
  objectId: 0x07,
  boolean: 0x08,
  date: 0x09,
  null: 0x0a,
  regex: 0x0b,
  dbPointer: 0x0c,
  code: 0x0d,
  symbol: 0x0e,
  codeWithScope: 0x0f,
  int32: 0x10,
  timestamp: 0x11,
  int64: 0x12,
  decimal128: 0x13,
  minKey: 0xff,
  maxKey: 0x7f,
} as const;

interface InvalidString {
  readonly path: readonly string[];
  readonly bytes: Uint8Array;
}

/** True for bson's refusal of a string that is not valid UTF-8 (the driver passes it on unwrapped). */
export function isInvalidUtf8Error(error: unknown): boolean {
  return BSONError.isBSONError(error) && /utf-?8/i.test(error.message);
}

/**
 * One BSON document, decoded as the driver decodes it (BSON_DECODE_OPTIONS), except that a string whose
 * bytes are not valid UTF-8 becomes an InvalidUtf8String holding those bytes. Documents without such
 * strings take bson's validated path and nothing else.
 */
export function decodeDocument(bytes: Uint8Array): Document {
  try {
    return deserialize(bytes, BSON_DECODE_OPTIONS);
  } catch (error) {
    if (!isInvalidUtf8Error(error)) throw error;
  }
  // bson without validation decodes the document's structure and every valid string; the invalid strings,
  // which it turned into U+FFFD, are then replaced by their bytes, found by walking the BSON itself.
  const document = deserialize(bytes, { ...BSON_DECODE_OPTIONS, validation: { utf8: false } });
  const found: InvalidString[] = [];
  collectInvalidStrings(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength), 0, [], found);
  for (const { path, bytes: raw } of found) place(document, path, new InvalidUtf8String(raw));
  return document;
}

/**
 * Walks one BSON document (already checked by bson's own decoding) and records every string element
 * (type 0x02) that is not valid UTF-8. Keys are decoded as bson decodes them, so the paths match the
 * decoded document. Strings inside the deprecated types (symbol, JavaScript code, DBPointer) and in field
 * names are left as bson decodes them.
 */
function collectInvalidStrings(
  buffer: Buffer,
  start: number,
  path: readonly string[],
  out: InvalidString[],
): void {
  const end = start + buffer.readInt32LE(start) - 1;
  let i = start + 4;
  while (i < end) {
    const type = buffer[i] ?? 0;
    const keyEnd = buffer.indexOf(0, i + 1);
    const key = buffer.toString('utf8', i + 1, keyEnd);
    i = keyEnd + 1;
    switch (type) {
      case TYPE.string: {
        const length = buffer.readInt32LE(i);
        const content = buffer.subarray(i + 4, i + 4 + length - 1);
        if (!isUtf8(content)) out.push({ path: [...path, key], bytes: Uint8Array.from(content) });
        i += 4 + length;
        break;
      }
      case TYPE.document:
      case TYPE.array:
        collectInvalidStrings(buffer, i, [...path, key], out);
        i += buffer.readInt32LE(i);
        break;
      case TYPE.double:
      case TYPE.date:
      case TYPE.timestamp:
      case TYPE.int64:
        i += 8;
        break;
      case TYPE.decimal128:
        i += 16;
        break;
      case TYPE.objectId:
        i += 12;
        break;
      case TYPE.int32:
        i += 4;
        break;
      case TYPE.boolean:
        i += 1;
        break;
      case TYPE.binary:
        i += 4 + 1 + buffer.readInt32LE(i);
        break;
      case TYPE.code:
      case TYPE.symbol:
        i += 4 + buffer.readInt32LE(i);
        break;
      case TYPE.dbPointer:
        i += 4 + buffer.readInt32LE(i) + 12;
        break;
      case TYPE.codeWithScope:
        i += buffer.readInt32LE(i);
        break;
      case TYPE.regex:
        i = buffer.indexOf(0, buffer.indexOf(0, i) + 1) + 1;
        break;
      case TYPE.undefined:
      case TYPE.null:
      case TYPE.minKey:
      case TYPE.maxKey:
        break;
      default:
        throw new BSONError(
          `unexpected BSON element type 0x${type.toString(16)} at ${[...path, key].join('.')}`,
        );
    }
  }
}

function isDbRef(node: unknown): node is DBRef {
  return (node as { _bsontype?: unknown } | null)?._bsontype === 'DBRef';
}

/** The decoded value of `key` in `node`, looking through bson's DBRef (a sub-document with `$ref`/`$id`). */
function child(node: unknown, key: string): unknown {
  if (isDbRef(node)) return key === '$id' ? node.oid : key.startsWith('$') ? undefined : node.fields[key];
  if (typeof node !== 'object' || node === null) return undefined;
  return Object.hasOwn(node, key) ? (node as Record<string, unknown>)[key] : undefined;
}

/** Puts `value` at `path` in the decoded document (arrays by index; DBRef fields included). */
function place(document: Document, path: readonly string[], value: unknown): void {
  let node: unknown = document;
  for (const key of path.slice(0, -1)) node = child(node, key);
  const last = path.at(-1) ?? '';
  if (isDbRef(node)) {
    // `$ref` and `$db` are namespace names: bson keeps them as decoded text.
    if (!last.startsWith('$')) defineDataProperty(node.fields, last, value);
  } else if (Array.isArray(node)) {
    node[Number(last)] = value;
  } else if (typeof node === 'object' && node !== null) {
    defineDataProperty(node, last, value);
  }
}

/** The documents of a read made with RAW_READ, decoded without loss. */
export function decodeAll(items: readonly unknown[]): Document[] {
  return items.map((item) => (item instanceof Uint8Array ? decodeDocument(item) : (item as Document)));
}
