import { readFileSync } from 'node:fs';
import { EJSON, serialize, type Document } from 'bson';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  CHANGE_EVENT_FIELDS,
  normalizeChangeEvent,
  reassembleSplitEvent,
  SplitEventAssembler,
} from '../../../src/mongodb/change-event.js';
import { decodeDocument, decodeDocumentFields } from '../../../src/mongodb/raw-documents.js';
import { InvalidUtf8String } from '../../../src/base/invalid-utf8.js';
import { bsonWithBytes } from '../../support/fakes/raw-bson.js';

/** Recorded MongoDB 7.0 change events (every operation type, split fragments, a whole database's stream). */
function recorded(name: string): Document[] {
  const text = readFileSync(new URL(`../../fixtures/change-events/${name}`, import.meta.url), 'utf8');
  const parsed = EJSON.parse(text, { relaxed: false }) as Record<string, unknown>;
  const out: Document[] = [];
  const collect = (value: unknown): void => {
    if (Array.isArray(value)) value.forEach(collect);
    else if (
      typeof value === 'object' &&
      value !== null &&
      ('operationType' in value || 'splitEvent' in value)
    ) {
      out.push(value);
    } else if (typeof value === 'object' && value !== null) Object.values(value).forEach(collect);
  };
  collect(parsed);
  return out;
}

const EVENTS = [
  ...recorded('real-mongodb-7.json'),
  ...recorded('real-mongodb-7-split.json'),
  ...recorded('real-mongodb-7-database.json'),
];

/** The top-level keys a function reads of the object it is given (through a Proxy). */
function keysRead(document: Document, read: (raw: Document) => unknown): Set<string> {
  const seen = new Set<string>();
  const watched = new Proxy(document, {
    get(target, key, receiver) {
      if (typeof key === 'string') seen.add(key);
      return Reflect.get(target, key, receiver) as unknown;
    },
    has(target, key) {
      if (typeof key === 'string') seen.add(key);
      return Reflect.has(target, key);
    },
    getOwnPropertyDescriptor(target, key) {
      if (typeof key === 'string') seen.add(key);
      return Reflect.getOwnPropertyDescriptor(target, key);
    },
  });
  try {
    read(watched);
  } catch {
    // Whatever it read before refusing the event counts too.
  }
  return seen;
}

describe('decoding only the fields of a change event that are read (issue 11, workers)', () => {
  it('covers the recorded events of every kind', () => {
    expect(EVENTS.length).toBeGreaterThan(15);
    expect(new Set(EVENTS.map((event) => event.operationType as string)).size).toBeGreaterThan(6);
  });

  it('CHANGE_EVENT_FIELDS holds every top-level field normalising and split reassembly read', () => {
    for (const event of EVENTS) {
      const read = new Set([
        ...keysRead(event, normalizeChangeEvent),
        ...keysRead(event, (raw) => new SplitEventAssembler().add(raw)),
      ]);
      const missing = [...read].filter((key) => key in event && !CHANGE_EVENT_FIELDS.has(key));
      expect(missing, `read from a ${String(event.operationType)} event`).toEqual([]);
    }
  });

  it('normalises every recorded event exactly as the whole decoded event does', () => {
    for (const event of EVENTS) {
      const bytes = serialize(event);
      const lean = decodeDocumentFields(bytes, CHANGE_EVENT_FIELDS);
      expect(Object.keys(lean).every((key) => CHANGE_EVENT_FIELDS.has(key))).toBe(true);
      const whole = () => normalizeChangeEvent(decodeDocument(bytes));
      const fromLean = () => normalizeChangeEvent(lean);
      if (event.splitEvent === undefined) expect(fromLean()).toEqual(whole());
    }
  });

  it('puts split fragments together as the whole fragments do', () => {
    const fragments = recorded('real-mongodb-7-split.json').filter((event) => event.splitEvent !== undefined);
    expect(fragments.length).toBeGreaterThan(1);
    const whole = normalizeChangeEvent(
      reassembleSplitEvent(fragments.map((f) => decodeDocument(serialize(f)))),
    );
    const lean = normalizeChangeEvent(
      reassembleSplitEvent(fragments.map((f) => decodeDocumentFields(serialize(f), CHANGE_EVENT_FIELDS))),
    );
    expect(lean).toEqual(whole);
  });

  it('keeps exactly the named top-level fields, decoded as decodeDocument decodes them', () => {
    const value = fc.oneof(
      fc.integer(),
      fc.double({ noNaN: true }),
      fc.string(),
      fc.boolean(),
      fc.constant(null),
      fc.date({ noInvalidDate: true }),
      fc.array(fc.string(), { maxLength: 3 }),
      fc.dictionary(fc.string({ minLength: 1 }), fc.string(), { maxKeys: 3 }),
    );
    fc.assert(
      fc.property(
        fc.dictionary(
          fc.string({ minLength: 1, maxLength: 12 }).filter((k) => !k.includes('\0')),
          value,
        ),
        fc.array(fc.string({ maxLength: 12 }), { maxLength: 6 }),
        (document, names) => {
          const keep = new Set(names.filter((name) => /^[\x20-\x7e]*$/.test(name)));
          const bytes = serialize(document);
          const expected = Object.fromEntries(
            Object.entries(decodeDocument(bytes)).filter(([key]) => keep.has(key)),
          );
          expect(decodeDocumentFields(bytes, keep)).toEqual(expected);
        },
      ),
    );
  });

  it('keeps an invalid UTF-8 string of a kept field as its bytes, and skips one in a skipped field unread', () => {
    const invalid = Uint8Array.of(0x61, 0xff, 0x62);
    const bytes = bsonWithBytes(
      { _id: { _data: '82AA' }, fullDocument: { _id: 1, name: 'QQQ' }, ns: { db: 'QQQ' } },
      'QQQ',
      invalid,
    );
    const lean = decodeDocumentFields(bytes, new Set(['_id', 'fullDocument']));
    expect(Object.keys(lean)).toEqual(['_id', 'fullDocument']);
    const name = (lean.fullDocument as Document).name as unknown;
    expect(name).toBeInstanceOf(InvalidUtf8String);
    expect(Buffer.from((name as InvalidUtf8String).bytes())).toEqual(Buffer.from(invalid));
  });

  it('decodes a document whose top level cannot be walked whole, so that bson says what is wrong', () => {
    const bytes = Buffer.from(serialize({ a: 'x', b: 1 }));
    // The string's length now runs past the document's end.
    bytes.writeInt32LE(1000, 4 + 1 + 2);
    expect(() => decodeDocumentFields(bytes, new Set(['b']))).toThrow(/string|length|bson/i);
    expect(() => decodeDocumentFields(bytes, new Set(['b']))).toThrow(
      (() => {
        try {
          decodeDocument(bytes);
        } catch (error) {
          return (error as Error).message;
        }
        return 'no error';
      })(),
    );
  });
});
