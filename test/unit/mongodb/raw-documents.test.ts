import { Binary, serialize } from 'bson';
import { describe, expect, it } from 'vitest';
import { decodeId, encodeId } from '../../../src/mongodb/checkpoint-store.js';
import { decodeDocument } from '../../../src/mongodb/raw-documents.js';
import { relaxedEjsonText } from '../../../src/transform/ejson.js';
import { InvalidUtf8String, invalidUtf8Bytes } from '../../../src/base/invalid-utf8.js';
import { docIdString } from '../../../src/transform/values.js';
import { bsonWithBytes } from '../../support/fakes/raw-bson.js';

const INVALID = new Uint8Array([0x61, 0xff, 0x62, 0xc3, 0x28]);
const B64 = Buffer.from(INVALID).toString('base64');

describe('decoding BSON that holds strings which are not valid UTF-8 (issue 10 item 12)', () => {
  it('keeps the exact bytes of each invalid string, wherever it sits, and decodes the rest as the driver does', () => {
    const bytes = bsonWithBytes(
      {
        _id: 7,
        top: '#####',
        nested: { deep: { s: '#####', ok: 'café' } },
        list: ['x', '#####', { in: '#####' }],
        ref: { $ref: 'other', $id: 1, label: '#####' },
        replacement: 'already \uFFFD here',
      },
      '#####',
      INVALID,
    );
    const doc = decodeDocument(bytes);
    const marker = (value: unknown) => invalidUtf8Bytes(value) && Buffer.from(invalidUtf8Bytes(value) ?? []);
    expect(doc.top).toBeInstanceOf(InvalidUtf8String);
    expect(marker(doc.top)).toEqual(Buffer.from(INVALID));
    expect(marker((doc.nested as { deep: { s: unknown } }).deep.s)).toEqual(Buffer.from(INVALID));
    expect((doc.nested as { deep: { ok: unknown } }).deep.ok).toBe('café');
    const list = doc.list as unknown[];
    expect(list[0]).toBe('x');
    expect(marker(list[1])).toEqual(Buffer.from(INVALID));
    expect(marker((list[2] as { in: unknown }).in)).toEqual(Buffer.from(INVALID));
    expect(marker((doc.ref as { fields: { label: unknown } }).fields.label)).toEqual(Buffer.from(INVALID));
    // A real U+FFFD is valid UTF-8 and stays a plain string.
    expect(doc.replacement).toBe('already \uFFFD here');
    expect(JSON.parse(relaxedEjsonText(doc.top))).toEqual({ $invalidUtf8: B64 });
  });

  it('decodes valid documents exactly as bson does', () => {
    const doc = decodeDocument(serialize({ _id: 1, s: 'ok', n: { a: [1, 'b'] } }));
    expect(doc).toEqual({ _id: 1, s: 'ok', n: { a: [1, 'b'] } });
  });

  it('keeps an invalid string id through a checkpoint round trip and in _doc_id', () => {
    const id: unknown = decodeDocument(bsonWithBytes({ _id: '#####' }, '#####', INVALID))._id;
    const back = decodeId(encodeId(id));
    expect(Buffer.from(invalidUtf8Bytes(back) ?? [])).toEqual(Buffer.from(INVALID));
    expect(docIdString(id)).toBe(JSON.stringify({ $invalidUtf8: B64 }));
    // A one-field document that merely looks like the marker with a non-Binary value is no marker.
    expect(invalidUtf8Bytes({ $invalidUtf8: 'x' })).toBeUndefined();
    expect(invalidUtf8Bytes({ $invalidUtf8: new Binary(INVALID), other: 1 })).toBeUndefined();
  });
});
