import { BSONError, deserialize, type DeserializeOptions } from 'bson';
import { BSON_DECODE_OPTIONS } from '../base/bson-kind.js';
import { defineDataProperty } from '../transform/ejson.js';

/**
 * One top-level element of a BSON document: its name, its type byte, and where it lies in the document
 * (`start` at its type byte, `end` after its value), so that it can be decoded alone.
 */
export interface BsonElement {
  readonly name: string;
  readonly type: number;
  readonly start: number;
  /** Where its value starts (after the type byte and the name's NUL). */
  readonly value: number;
  readonly end: number;
}

/** Bytes of the value of each fixed-size BSON type (the ones not listed carry their own length). */
const FIXED_SIZES: ReadonlyMap<number, number> = new Map([
  [0x01, 8], // double
  [0x06, 0], // undefined
  [0x07, 12], // ObjectId
  [0x08, 1], // boolean
  [0x09, 8], // UTC datetime
  [0x0a, 0], // null
  [0x10, 4], // int32
  [0x11, 8], // Timestamp
  [0x12, 8], // int64
  [0x13, 16], // Decimal128
  [0xff, 0], // MinKey
  [0x7f, 0], // MaxKey
]);

/** Types whose value is an int32 length (counting its terminating NUL) and that many bytes: string, code, symbol. */
const LENGTH_PREFIXED = new Set([0x02, 0x0d, 0x0e]);
/** Types whose value starts with its own total size: embedded document, array, code with scope. */
const SELF_SIZED = new Set([0x03, 0x04, 0x0f]);
const STRING = 0x02;
const EMBEDDED_DOCUMENT = 0x03;
const BINARY = 0x05;
const REGEX = 0x0b;
const DB_POINTER = 0x0c;
/** The smallest BSON document: its int32 size and the terminating NUL. */
const MIN_DOCUMENT_SIZE = 5;

function malformed(reason: string, at: number): BSONError {
  return new BSONError(`malformed BSON document: ${reason} at byte ${String(at)}`);
}

/**
 * The top-level elements of one BSON document, in order, found by walking the element list by type and
 * size: nothing is decoded but the names (the point is reading a few fields of a large change event
 * without decoding all of it). Sizes are checked against the document's bounds, so malformed bytes throw
 * bson's BSONError instead of yielding elements outside the document; values themselves are not validated
 * (bson does that when an element is decoded).
 */
export function topLevelElements(document: Uint8Array): BsonElement[] {
  const elements: BsonElement[] = [];
  walkTopLevel(document, (element) => {
    elements.push(element);
    return false;
  });
  return elements;
}

/** The first top-level element named `name`, the walk stopping there; undefined when there is none. */
export function topLevelElement(document: Uint8Array, name: string): BsonElement | undefined {
  let found: BsonElement | undefined;
  walkTopLevel(document, (element) => {
    if (element.name !== name) return false;
    found = element;
    return true;
  });
  return found;
}

/** Where a document's terminating NUL is, after checking its declared size against its bytes. */
function documentEnd(bytes: Buffer): number {
  if (bytes.length < MIN_DOCUMENT_SIZE) throw malformed('shorter than a document', 0);
  const size = bytes.readInt32LE(0);
  if (size < MIN_DOCUMENT_SIZE || size > bytes.length) throw malformed(`declared size ${String(size)}`, 0);
  const last = size - 1;
  if (bytes[last] !== 0) throw malformed('no terminating NUL', last);
  return last;
}

/** Walks the top-level elements in order until `visit` returns true. */
function walkTopLevel(document: Uint8Array, visit: (element: BsonElement) => boolean): void {
  const bytes = Buffer.from(document.buffer, document.byteOffset, document.byteLength);
  const last = documentEnd(bytes);
  let at = 4;
  while (at < last) {
    const start = at;
    const type = bytes[at] ?? 0;
    const nameEnd = bytes.indexOf(0, at + 1);
    if (nameEnd < 0 || nameEnd >= last) throw malformed('unterminated element name', at);
    const name = bytes.toString('utf8', at + 1, nameEnd);
    const value = nameEnd + 1;
    const end = valueEnd(bytes, type, value, last);
    if (visit({ name, type, start, value, end })) return;
    at = end;
  }
}

/** Where the value of an element of `type` starting at `at` ends; throws when it would pass `limit`. */
function valueEnd(bytes: Buffer, type: number, at: number, limit: number): number {
  const end = unboundedValueEnd(bytes, type, at, limit);
  if (end > limit) throw malformed(`element of type 0x${type.toString(16)} runs past the document`, at);
  return end;
}

function unboundedValueEnd(bytes: Buffer, type: number, at: number, limit: number): number {
  const fixed = FIXED_SIZES.get(type);
  if (fixed !== undefined) return at + fixed;
  if (type === REGEX) {
    const pattern = bytes.indexOf(0, at);
    const options = pattern < 0 || pattern >= limit ? -1 : bytes.indexOf(0, pattern + 1);
    if (options < 0 || options >= limit) throw malformed('unterminated regular expression', at);
    return options + 1;
  }
  const known = LENGTH_PREFIXED.has(type) || SELF_SIZED.has(type) || type === BINARY || type === DB_POINTER;
  if (!known) throw malformed(`unknown element type 0x${type.toString(16)}`, at);
  if (at + 4 > limit) throw malformed(`truncated element of type 0x${type.toString(16)}`, at);
  const length = bytes.readInt32LE(at);
  if (LENGTH_PREFIXED.has(type) && length >= 1) return at + 4 + length;
  if (SELF_SIZED.has(type) && length >= MIN_DOCUMENT_SIZE) return at + length;
  if (type === BINARY && length >= 0) return at + 4 + 1 + length;
  if (type === DB_POINTER && length >= 1) return at + 4 + length + 12;
  throw malformed(`length ${String(length)} of an element of type 0x${type.toString(16)}`, at);
}

/**
 * The document an element holds (an embedded document), as a view of its bytes (no copy), to be walked in
 * turn; undefined when the element holds anything else. The walk checked that it lies inside `document`.
 */
export function embeddedDocument(document: Uint8Array, element: BsonElement): Uint8Array | undefined {
  return element.type === EMBEDDED_DOCUMENT ? document.subarray(element.value, element.end) : undefined;
}

/**
 * The string an element holds, read from its bytes (a few small fields of a large event are read this way,
 * with nothing else decoded); undefined when the element holds anything else. Bytes that are not valid
 * UTF-8 become U+FFFD: the names read this way (operation types, namespaces) are compared, never stored.
 */
export function stringValue(document: Uint8Array, element: BsonElement): string | undefined {
  if (element.type !== STRING) return undefined;
  const bytes = Buffer.from(document.buffer, document.byteOffset, document.byteLength);
  // The walk checked the length prefix against the element's end; the value ends with a NUL.
  return bytes.toString('utf8', element.value + 4, element.end - 1);
}

/**
 * A finder of the first top-level element of each of `names` (constant field names of ours), for reading a
 * few fields of many documents on a hot path: names are compared as bytes (no string is made of the
 * others), and the walk stops once each name was met. Sizes are checked against the document's bounds as
 * topLevelElements checks them.
 */
export function elementFinder<N extends string>(
  names: readonly N[],
): (document: Uint8Array) => Partial<Record<N, BsonElement>> {
  const wanted = names.map((name) => ({ name, bytes: Buffer.from(name, 'utf8') }));
  return (document) => {
    const bytes = Buffer.from(document.buffer, document.byteOffset, document.byteLength);
    const last = documentEnd(bytes);
    // No prototype: a field named `__proto__` is a field like any other.
    const found = Object.create(null) as Partial<Record<N, BsonElement>>;
    let missing = wanted.length;
    let at = 4;
    while (at < last && missing > 0) {
      const start = at;
      const type = bytes[at] ?? 0;
      // Names are short: a loop finds the NUL sooner than a native call would.
      let nameEnd = at + 1;
      while (nameEnd < last && bytes[nameEnd] !== 0) nameEnd++;
      if (nameEnd >= last) throw malformed('unterminated element name', at);
      const value = nameEnd + 1;
      const end = valueEnd(bytes, type, value, last);
      const match = wanted.find(
        (candidate) =>
          !Object.hasOwn(found, candidate.name) && sameBytes(candidate.bytes, bytes, at + 1, nameEnd),
      );
      if (match !== undefined) {
        found[match.name] = { name: match.name, type, start, value, end };
        missing--;
      }
      at = end;
    }
    return found;
  };
}

function sameBytes(expected: Buffer, bytes: Buffer, from: number, to: number): boolean {
  if (to - from !== expected.length) return false;
  for (let k = 0; k < expected.length; k++) if (bytes[from + k] !== expected[k]) return false;
  return true;
}

/**
 * The value of one element, decoded alone by bson (as a one-element document copied from its bytes), with
 * the archiver's decode options unless others are given.
 */
export function decodeElement(
  document: Uint8Array,
  element: BsonElement,
  options: DeserializeOptions = BSON_DECODE_OPTIONS,
): unknown {
  const decoded = deserialize(elementAlone(document, element), options);
  return Object.hasOwn(decoded, element.name) ? decoded[element.name] : undefined;
}

/** A BSON document of that one element, copied from its bytes: to be decoded alone, as a whole one would be. */
export function elementAlone(document: Uint8Array, element: BsonElement): Buffer {
  const length = element.end - element.start;
  const single = Buffer.alloc(4 + length + 1);
  single.writeInt32LE(single.length, 0);
  single.set(document.subarray(element.start, element.end), 4);
  return single;
}

/**
 * The decoded values of the named top-level fields of a document (absent ones left out), the rest of it
 * skipped undecoded. A name that occurs twice gives its last value, as bson's own decoding does.
 */
export function readTopLevelFields(
  document: Uint8Array,
  names: readonly string[],
): Partial<Record<string, unknown>> {
  const wanted = new Map<string, BsonElement>();
  for (const element of topLevelElements(document)) {
    if (names.includes(element.name)) wanted.set(element.name, element);
  }
  const fields: Partial<Record<string, unknown>> = {};
  for (const [name, element] of wanted) {
    // A field named `__proto__` stays a field.
    defineDataProperty(fields, name, decodeElement(document, element));
  }
  return fields;
}
