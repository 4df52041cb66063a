import { BSONError, Code, deserialize, serialize, Timestamp } from 'bson';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { BSON_DECODE_OPTIONS } from '../../../src/base/bson-kind.js';
import {
  decodeElement,
  elementFinder,
  embeddedDocument,
  readTopLevelFields,
  stringValue,
  topLevelElements,
} from '../../../src/mongodb/bson-fields.js';
import { arbDocument, arbKey, arbLeaf } from '../../support/bson-arbitraries.js';

/** Many top-level elements of the leaf types the arbitraries make (every type bson 7 still writes). */
const arbWideDocument = fc
  .dictionary(arbKey, arbLeaf, { maxKeys: 12 })
  .map((doc) => deserialize(serialize(doc), BSON_DECODE_OPTIONS));

describe('reading top-level BSON fields without decoding the document', () => {
  it('finds every top-level element, in order, tiling the document, as bson decodes them', () => {
    fc.assert(
      fc.property(fc.oneof(arbDocument, arbWideDocument), (document) => {
        const bytes = serialize(document);
        const elements = topLevelElements(bytes);
        const decoded = deserialize(bytes, BSON_DECODE_OPTIONS);
        expect(elements.map((e) => e.name)).toEqual(Object.keys(decoded));
        const starts = [4, ...elements.map((e) => e.end)];
        expect(elements.map((e) => e.start)).toEqual(starts.slice(0, -1));
        expect(elements.at(-1)?.end ?? 4).toBe(bytes.length - 1);
        for (const element of elements) {
          expect(decodeElement(bytes, element)).toEqual(decoded[element.name]);
        }
      }),
      { numRuns: 300 },
    );
  });

  it('decodes only the fields asked for, with the values bson gives', () => {
    fc.assert(
      fc.property(arbDocument, fc.array(arbKey, { maxLength: 3 }), (document, extra) => {
        const bytes = serialize(document);
        const decoded = deserialize(bytes, BSON_DECODE_OPTIONS);
        const names = [...Object.keys(decoded).slice(0, 2), ...extra];
        const fields = readTopLevelFields(bytes, names);
        const expected = Object.fromEntries(Object.entries(decoded).filter(([name]) => names.includes(name)));
        expect(fields).toEqual(expected);
      }),
      { numRuns: 200 },
    );
  });

  it('reads a document inside a larger buffer (a slice of a server reply) at its own offset', () => {
    const event = serialize({
      _id: { _data: '8265A1B2C3000000012B' },
      clusterTime: new Timestamp({ t: 7, i: 2 }),
    });
    const reply = Buffer.concat([Buffer.from([1, 2, 3]), event, Buffer.from([9, 9])]);
    const slice = reply.subarray(3, 3 + event.length);
    expect(readTopLevelFields(slice, ['_id', 'clusterTime'])).toEqual({
      _id: { _data: '8265A1B2C3000000012B' },
      clusterTime: new Timestamp({ t: 7, i: 2 }),
    });
  });

  it('never hands out an element past the end of a document whose sizes lie: it throws BSONError', () => {
    fc.assert(
      fc.property(arbDocument, fc.nat(), fc.integer({ min: -8, max: 1 << 20 }), (document, at, lie) => {
        const bytes = Buffer.from(serialize(document));
        // Overwrite four bytes somewhere inside with an arbitrary int32 (a size field, often).
        const offset = 4 + (at % Math.max(1, bytes.length - 9));
        bytes.writeInt32LE(lie, offset);
        let elements: ReturnType<typeof topLevelElements>;
        try {
          elements = topLevelElements(bytes);
        } catch (error) {
          expect(error).toBeInstanceOf(BSONError);
          return;
        }
        for (const element of elements) expect(element.end).toBeLessThanOrEqual(bytes.length - 1);
      }),
      { numRuns: 500 },
    );
  });

  it('refuses bytes that are no document: too short, a size beyond the bytes, no terminating NUL', () => {
    expect(() => topLevelElements(new Uint8Array([5, 0, 0]))).toThrow(BSONError);
    expect(() => topLevelElements(new Uint8Array([6, 0, 0, 0, 0]))).toThrow(BSONError);
    expect(() => topLevelElements(new Uint8Array([5, 0, 0, 0, 1]))).toThrow(BSONError);
    // An element of type 0x42 (no such type).
    expect(() => topLevelElements(new Uint8Array([8, 0, 0, 0, 0x42, 0x61, 0, 0]))).toThrow(
      /unknown element type/,
    );
    expect(topLevelElements(new Uint8Array([5, 0, 0, 0, 0]))).toEqual([]);
  });

  it('skips code with scope (0x0F), which the arbitraries do not make, by its own size', () => {
    const bytes = serialize({ c: new Code('f()', { a: 1 }), after: 2 });
    expect(topLevelElements(bytes).map((e) => [e.name, e.type])).toEqual([
      ['c', 0x0f],
      ['after', 0x10],
    ]);
    expect(readTopLevelFields(bytes, ['after'])).toEqual({ after: 2 });
  });

  it('reads strings from the bytes, as bson decodes them, and walks into an embedded document (issue 12)', () => {
    fc.assert(
      fc.property(
        arbDocument,
        arbKey,
        fc.string(),
        arbKey,
        fc.string(),
        (inner, name, text, outerName, outerText) => {
          fc.pre(!Object.hasOwn(inner, name) && name !== outerName);
          const nested = { ...inner, [name]: text };
          const bytes = serialize({ [outerName]: outerText, ns: nested });
          const elements = topLevelElements(bytes);
          const [first, ns] = elements;
          if (first === undefined || ns === undefined) throw new Error('two elements were written');
          expect(stringValue(bytes, first)).toBe(deserialize(bytes, BSON_DECODE_OPTIONS)[outerName]);
          expect(stringValue(bytes, ns)).toBeUndefined();
          const embedded = embeddedDocument(bytes, ns);
          if (embedded === undefined) throw new Error('ns is an embedded document');
          expect(Buffer.from(embedded)).toEqual(Buffer.from(serialize(nested)));
          const found = elementFinder([name])(embedded)[name];
          expect(found && stringValue(embedded, found)).toBe(text);
          expect(embeddedDocument(bytes, first)).toBeUndefined();
        },
      ),
      { numRuns: 200 },
    );
  });

  it('elementFinder finds the first element of each name, as the full walk does, and refuses what the walk refuses', () => {
    fc.assert(
      fc.property(
        fc.oneof(arbDocument, arbWideDocument),
        fc.array(arbKey, { maxLength: 3 }),
        (document, extra) => {
          const bytes = serialize(document);
          const elements = topLevelElements(bytes);
          const names = [...elements.slice(0, 2).map((e) => e.name), ...extra];
          const found = elementFinder(names)(bytes);
          for (const name of names) expect(found[name]).toEqual(elements.find((e) => e.name === name));
        },
      ),
      { numRuns: 300 },
    );
    const finder = elementFinder(['a']);
    expect(() => finder(new Uint8Array([6, 0, 0, 0, 0]))).toThrow(BSONError);
    // An element of type 0x42 (no such type) before the one asked for.
    expect(() => finder(new Uint8Array([12, 0, 0, 0, 0x42, 0x62, 0, 0x10, 0x61, 0, 0, 0]))).toThrow(
      BSONError,
    );
  });

  it('elementFinder leaves out absent names; stringValue reads no string out of another type', () => {
    const bytes = serialize({ db: 'bidding', coll: 7 });
    const found = elementFinder(['coll', 'missing'])(bytes);
    expect(found.missing).toBeUndefined();
    expect(found.coll && stringValue(bytes, found.coll)).toBeUndefined();
  });
});
