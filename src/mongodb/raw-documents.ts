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
      default: {
        const next = valueEnd(buffer, type, i);
        if (next === undefined) {
          throw new BSONError(
            `unexpected BSON element type 0x${type.toString(16)} at ${[...path, key].join('.')}`,
          );
        }
        i = next;
      }
    }
  }
}

/**
 * Where the value of an element of BSON type `type` starting at `i` ends (the offset after it); undefined
 * for a type BSON does not define. Lengths are read as written, not checked against the buffer.
 */
function valueEnd(buffer: Buffer, type: number, i: number): number | undefined {
  switch (type) {
    case TYPE.double:
    case TYPE.date:
    case TYPE.timestamp:
    case TYPE.int64:
      return i + 8;
    case TYPE.decimal128:
      return i + 16;
    case TYPE.objectId:
      return i + 12;
    case TYPE.int32:
      return i + 4;
    case TYPE.boolean:
      return i + 1;
    case TYPE.string:
    case TYPE.code:
    case TYPE.symbol:
      return i + 4 + buffer.readInt32LE(i);
    case TYPE.document:
    case TYPE.array:
    case TYPE.codeWithScope:
      return i + buffer.readInt32LE(i);
    case TYPE.binary:
      return i + 4 + 1 + buffer.readInt32LE(i);
    case TYPE.dbPointer:
      return i + 4 + buffer.readInt32LE(i) + 12;
    case TYPE.regex:
      return buffer.indexOf(0, buffer.indexOf(0, i) + 1) + 1;
    case TYPE.undefined:
    case TYPE.null:
    case TYPE.minKey:
    case TYPE.maxKey:
      return i;
    default:
      return undefined;
  }
}

/**
 * One BSON document decoded as decodeDocument decodes it, with only its top-level fields named in `keep`:
 * the others are skipped unread (their bytes are never decoded), so a reader that needs a few fields of a
 * large document pays for those alone. A document whose top level cannot be walked (an unknown type, a
 * length beyond its end) is decoded whole, so that bson's own error, or its own reading, stands.
 */
export function decodeDocumentFields(bytes: Uint8Array, keep: ReadonlySet<string>): Document {
  const buffer = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const kept = keptElementsOrWhole(buffer, keep);
  if (kept === undefined) return decodeDocument(bytes);
  let length = 4 + 1;
  for (let k = 0; k < kept.length; k += 2) length += (kept[k + 1] ?? 0) - (kept[k] ?? 0);
  const lean = Buffer.allocUnsafe(length);
  lean.writeInt32LE(length, 0);
  let at = 4;
  for (let k = 0; k < kept.length; k += 2) at += buffer.copy(lean, at, kept[k], kept[k + 1]);
  lean[at] = 0;
  return decodeDocument(lean);
}

function keptElementsOrWhole(buffer: Buffer, keep: ReadonlySet<string>): number[] | undefined {
  try {
    return keptElements(buffer, keep);
  } catch (error) {
    // A length read past the end of the buffer: decoded whole, where bson says what is wrong with it.
    if (error instanceof RangeError) return undefined;
    throw error;
  }
}

/** The names of a `keep` set as bytes (ASCII), made once per set. */
const keptNames = new WeakMap<ReadonlySet<string>, readonly Uint8Array[]>();

function namesOf(keep: ReadonlySet<string>): readonly Uint8Array[] {
  let names = keptNames.get(keep);
  if (names === undefined) {
    names = [...keep].map((name) => Buffer.from(name, 'latin1'));
    keptNames.set(keep, names);
  }
  return names;
}

/** Whether the key at [from, to) of `buffer` is one of `names`, compared byte by byte (no string made). */
function isKept(buffer: Buffer, from: number, to: number, names: readonly Uint8Array[]): boolean {
  const length = to - from;
  for (const name of names) {
    if (name.length !== length) continue;
    let k = 0;
    while (k < length && buffer[from + k] === name[k]) k++;
    if (k === length) return true;
  }
  return false;
}

/**
 * The [start, end) byte ranges of the top-level elements of `buffer` whose key is in `keep`, in order;
 * undefined when every element is kept (nothing to gain) or the top level cannot be walked.
 */
function keptElements(buffer: Buffer, keep: ReadonlySet<string>): number[] | undefined {
  if (buffer.length < 5) return undefined;
  const end = buffer.readInt32LE(0) - 1;
  if (end < 4 || end >= buffer.length || buffer[end] !== 0) return undefined;
  const names = namesOf(keep);
  const kept: number[] = [];
  let skipped = false;
  let i = 4;
  while (i < end) {
    const start = i;
    const type = buffer[i] ?? 0;
    let keyEnd = i + 1;
    while (keyEnd < end && buffer[keyEnd] !== 0) keyEnd++;
    if (keyEnd >= end) return undefined;
    const next = valueEnd(buffer, type, keyEnd + 1);
    if (next === undefined || next <= keyEnd || next > end) return undefined;
    if (isKept(buffer, i + 1, keyEnd, names)) kept.push(start, next);
    else skipped = true;
    i = next;
  }
  return skipped ? kept : undefined;
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
