import { Binary } from 'bson';

/** The key of the marker that stands for a string that is not valid UTF-8, in Extended JSON and checkpoints. */
export const INVALID_UTF8_KEY = '$invalidUtf8';

const GENERIC_SUBTYPE = 0;

/**
 * A BSON string whose bytes are not valid UTF-8. MongoDB stores such strings as they were written; a
 * JavaScript string cannot hold them (decoding would turn the bytes into U+FFFD), so the decoder hands this
 * over instead and the archiver keeps the bytes. Its one own field makes bson see the document
 * `{ $invalidUtf8: BinData(0, ...) }`, so a document id of this kind survives a checkpoint round trip.
 */
export class InvalidUtf8String {
  readonly [INVALID_UTF8_KEY]: Binary;

  constructor(bytes: Uint8Array) {
    this[INVALID_UTF8_KEY] = new Binary(Uint8Array.from(bytes), GENERIC_SUBTYPE);
  }

  /** The string's bytes as MongoDB stores them. */
  bytes(): Uint8Array {
    return this[INVALID_UTF8_KEY].value();
  }

  base64(): string {
    return this[INVALID_UTF8_KEY].toString('base64');
  }
}

/**
 * The stored bytes of an invalid UTF-8 string: from the marker, or from the document
 * `{ $invalidUtf8: BinData }` that a checkpoint round trip turns it into (a real `_id` cannot have a
 * `$`-prefixed field, so no stored id looks like that). Undefined for any other value.
 */
export function invalidUtf8Bytes(value: unknown): Uint8Array | undefined {
  if (value instanceof InvalidUtf8String) return value.bytes();
  if (typeof value !== 'object' || value === null || Object.getPrototypeOf(value) !== Object.prototype) {
    return undefined;
  }
  const binary = (value as Record<string, unknown>)[INVALID_UTF8_KEY];
  // By tag, not instanceof: the driver's (CommonJS) bson and ours (ES module) are separate copies.
  const isBinary = (binary as { _bsontype?: unknown } | undefined)?._bsontype === 'Binary';
  return Object.keys(value).length === 1 && isBinary ? (binary as Binary).value() : undefined;
}
