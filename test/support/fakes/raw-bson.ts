import { deserialize, serialize, type Document } from 'bson';

/**
 * BSON bytes as MongoDB stores and sends them when a string is not valid UTF-8 (no JavaScript string
 * encodes to such bytes, so the document is serialised with a placeholder of the same byte length, which
 * is then overwritten). Real MongoDB keeps these bytes; the test peer replaces them with U+FFFD.
 */
export function bsonWithBytes(document: Document, placeholder: string, bytes: Uint8Array): Uint8Array {
  const encoded = Buffer.from(serialize(document));
  const marker = Buffer.from(placeholder, 'utf8');
  if (marker.length !== bytes.length) throw new Error('placeholder and bytes differ in length');
  let at = encoded.indexOf(marker);
  if (at < 0) throw new Error('placeholder not found');
  while (at >= 0) {
    Buffer.from(bytes).copy(encoded, at);
    at = encoded.indexOf(marker, at + marker.length);
  }
  return new Uint8Array(encoded);
}

/** Decodes as the Node driver does: utf8 validation on unless the read said `enableUtf8Validation: false`. */
export function driverDecode(bytes: Uint8Array, options: { enableUtf8Validation?: boolean } = {}): Document {
  return deserialize(bytes, {
    bsonRegExp: true,
    validation: { utf8: options.enableUtf8Validation !== false },
  });
}
