import { Code, EJSON, serialize } from 'bson';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { invalidUtf8Bytes, InvalidUtf8String } from '../../../src/base/invalid-utf8.js';
import { type IdRange } from '../../../src/core/ports.js';
import { decodeId, encodeId } from '../../../src/mongodb/checkpoint-store.js';
import { decodeDocument } from '../../../src/mongodb/raw-documents.js';
import {
  documentId,
  MongoSnapshotSource,
  rangesBetween,
  splitPoints,
} from '../../../src/mongodb/snapshot-reader.js';
import { arbDocument, arbLeaf } from '../../support/bson-arbitraries.js';
import { bsonWithBytes } from '../../support/fakes/raw-bson.js';
import { RawCollection, type FakeId } from '../../support/fakes/raw-collection.js';

describe('split points of a sorted _id sample (issue 11)', () => {
  it('issue 11: points fall at even quantiles, each the last id of its share (bounds are inclusive above)', () => {
    const ids = Array.from({ length: 12 }, (_, i) => i);
    expect(splitPoints(ids, 4).map(decodeId)).toEqual([2, 5, 8]);
  });

  it('issue 11: duplicates in a sample (one document drawn twice) neither repeat a point nor leave an empty range', () => {
    const ids = [1, 1, 1, 1, 1, 1, 2, 3, 3, 3];
    const points = splitPoints(ids, 3);
    expect(points.map(decodeId)).toEqual([1, 2]);
    expect(new Set(points).size).toBe(points.length);
  });

  it('issue 11: fewer distinct ids than parts give fewer points, never an undefined or repeated one', () => {
    expect(splitPoints(['a', 'a', 'b'], 8).map(decodeId)).toEqual(['a']);
    expect(splitPoints([], 8)).toEqual([]);
    expect(splitPoints([7], 8)).toEqual([]);
  });

  it('issue 11: a string id that is not valid UTF-8 is never a split point (no query could name it)', () => {
    const invalid = new InvalidUtf8String(Uint8Array.from([0x61, 0xff]));
    const points = splitPoints(['a', invalid, invalid, 'b', 'c', 'd'], 2);
    expect(points.map(decodeId)).toEqual(['b']);
  });
});

describe('ranges between split points (issue 11)', () => {
  it('issue 11: cover everything from the first id to the last, each lower bound the previous upper bound', () => {
    const points = [encodeId(5), encodeId('m')];
    expect(rangesBetween(points)).toEqual([
      { after: undefined, upTo: points[0] },
      { after: points[0], upTo: points[1] },
      { after: points[1], upTo: undefined },
    ]);
    expect(rangesBetween([])).toEqual([{ after: undefined, upTo: undefined }]);
  });
});

describe('reading a range whose strings are not all valid UTF-8 (issue 11)', () => {
  it('issue 11: ranges split at valid ids cover ids after an invalid UTF-8 string once each, up to each bound', async () => {
    // BSON order: numbers, then strings by their bytes, then documents.
    const ids: FakeId[] = [
      1,
      bytesOf('a'),
      bytesOf('a', [0xff]),
      bytesOf('a', [0xff], 'b'),
      bytesOf('a', [0xff, 0xff]),
      bytesOf('b'),
      bytesOf('c', [0xc3]),
      bytesOf('d'),
      { k: 1 },
      { k: 2 },
    ];
    const collection = new RawCollection(documentsWithIds(ids));
    const candidates = [encodeId(1), encodeId('a'), encodeId('b'), encodeId('d'), encodeId({ k: 1 })];
    const pointSets = [
      [],
      ...candidates.map((point) => [point]),
      ...candidates.flatMap((low, i) => candidates.slice(i + 1).map((high) => [low, high])),
    ];
    for (const points of pointSets) {
      for (const chunkSize of [1, 2, 3]) {
        const source = new MongoSnapshotSource(collection.asCollection(), { chunkSize });
        const seen: number[] = [];
        for (const range of rangesBetween(points)) seen.push(...(await readRange(source, range)));
        expect(seen, `points ${points.join(' ')}, chunk size ${String(chunkSize)}`).toEqual(
          ids.map((_, v) => v),
        );
      }
    }
  });
});

function bytesOf(...parts: (string | number[])[]): Uint8Array {
  return Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p) : Buffer.from(p))));
}

/** One document per id, `v` its index; a string id is stored as exactly its bytes. */
function documentsWithIds(ids: readonly FakeId[]): { id: FakeId; bytes: Uint8Array }[] {
  const placeholder = (n: number) => '#'.repeat(n);
  return ids.map((id, v) => ({
    id,
    bytes:
      id instanceof Uint8Array
        ? bsonWithBytes({ _id: placeholder(id.length), v }, placeholder(id.length), id)
        : serialize({ _id: id, v }),
  }));
}

/** The `v` of every document of the range, chunk by chunk, the last id kept as a checkpoint keeps it. */
async function readRange(source: MongoSnapshotSource, range: IdRange): Promise<number[]> {
  const seen: number[] = [];
  let lastId: string | undefined;
  for (let guard = 0; guard < 1_000; guard++) {
    const chunk = await source.nextChunk(range, lastId, new AbortController().signal);
    if (chunk.length === 0) return seen;
    seen.push(...chunk.map((document) => document.v as number));
    lastId = encodeId(chunk.at(-1)?._id);
  }
  throw new Error('the range did not end');
}

describe('split points when the estimated count is stale (issue 11)', () => {
  it('issue 11: a collection far larger than its estimate is sampled, not split over its first ids only', async () => {
    const ids = Array.from({ length: 400 }, (_, i) => i);
    const collection = new RawCollection(documentsWithIds(ids));
    // The estimate says 10: small enough to read the split points from the `_id` index (at most 20 samples'
    // worth, 160 ids here). The walk finds more than that and samples instead.
    collection.estimate = 10;
    const source = new MongoSnapshotSource(collection.asCollection(), {
      chunkSize: 50,
      sampleSize: 8,
      minRangeDocuments: 1,
    });
    const ranges = await source.split(4, new AbortController().signal);
    const sizes: number[] = [];
    for (const range of ranges) sizes.push((await readRange(source, range)).length);
    expect(sizes.reduce((a, b) => a + b)).toBe(400);
    // The walk alone would split 400 ids among its first 160: ranges of 40, 40, 40 and 280.
    expect(Math.max(...sizes)).toBeLessThanOrEqual(200);
  });
});

describe('a collection that grows at the top while it is copied (issue 11)', () => {
  it.each([1, 4])(
    "issue 11: split into %i range(s), the copy ends at the greatest _id the split saw; later ids are the stream's",
    async (parts) => {
      const collection = new RawCollection(documentsWithIds(Array.from({ length: 100 }, (_, i) => i)));
      const source = new MongoSnapshotSource(collection.asCollection(), {
        chunkSize: 10,
        sampleSize: 8,
        minRangeDocuments: 1,
      });
      const ranges = await source.split(parts, new AbortController().signal);
      // Inserted after the snapshot started (ObjectIds grow the same way): the change stream carries them.
      collection.insert(documentsWithIds(Array.from({ length: 300 }, (_, i) => 100 + i)));
      const copied: number[] = [];
      for (const range of ranges) copied.push(...(await readRange(source, range)));
      expect(ranges.at(-1)?.upTo).toBe(encodeId(99));
      expect(copied).toEqual(Array.from({ length: 100 }, (_, i) => i));
    },
  );

  it('issue 11: an empty collection is one range without bounds', async () => {
    const source = new MongoSnapshotSource(new RawCollection([]).asCollection());
    expect(await source.split(4, new AbortController().signal)).toEqual([
      { after: undefined, upTo: undefined },
    ]);
  });
});

describe('chunks of large documents (issue 11)', () => {
  it('issue 11: a chunk ends once it holds chunkBytes of BSON, so chunks of large documents stay small; every document is read once', async () => {
    const big = (v: number) => ({ id: v, bytes: serialize({ _id: v, v, pad: 'x'.repeat(10_000) }) });
    const collection = new RawCollection(Array.from({ length: 50 }, (_, v) => big(v)));
    const source = new MongoSnapshotSource(collection.asCollection(), {
      chunkSize: 1_000,
      chunkBytes: 35_000,
    });
    const [range] = await source.split(1, new AbortController().signal);
    const sizes: number[] = [];
    const seen: number[] = [];
    let lastId: string | undefined;
    for (;;) {
      const chunk = await source.nextChunk(
        range ?? { after: undefined, upTo: undefined },
        lastId,
        new AbortController().signal,
      );
      if (chunk.length === 0) break;
      sizes.push(chunk.length);
      seen.push(...chunk.map((document) => document.v as number));
      lastId = encodeId(chunk.at(-1)?._id);
    }
    // About 10 KB each: the fourth document read takes a chunk past 35,000 bytes (a chunk that starts a
    // range has one more, read on its own to find the range's first id).
    expect(Math.max(...sizes)).toBeLessThanOrEqual(5);
    expect(sizes.length).toBeGreaterThanOrEqual(10);
    expect(seen).toEqual(Array.from({ length: 50 }, (_, v) => v));
  });
});

describe('chunks handed over as BSON bytes (issue 11, build 6)', () => {
  /** Every chunk of `range` read both ways in lockstep: as decoded documents and as bytes. */
  async function readBothWays(
    source: MongoSnapshotSource,
    range: IdRange,
  ): Promise<{ decoded: string[][]; raw: string[][]; decodedLastIds: string[]; rawLastIds: string[] }> {
    const out = {
      decoded: [] as string[][],
      raw: [] as string[][],
      decodedLastIds: [] as string[],
      rawLastIds: [] as string[],
    };
    const signal = new AbortController().signal;
    let lastId: string | undefined;
    for (let guard = 0; guard < 1_000; guard++) {
      const chunk = await source.nextChunk(range, lastId, signal);
      const raw = await source.nextRawChunk(range, lastId, signal);
      out.decoded.push(chunk.map((document) => EJSON.stringify(document, { relaxed: false })));
      out.raw.push(raw.documents.map((bytes) => EJSON.stringify(decodeDocument(bytes), { relaxed: false })));
      if (chunk.length === 0) {
        expect(raw).toEqual({ documents: [], lastId: undefined });
        return out;
      }
      out.decodedLastIds.push(encodeId(chunk.at(-1)?._id));
      out.rawLastIds.push(raw.lastId ?? 'undefined');
      // The raw chunk's lastId drives the next read, as the backfill's progress does.
      lastId = raw.lastId;
    }
    throw new Error('the range did not end');
  }

  it('issue 11: nextRawChunk reads the same documents and lastIds as nextChunk over ranges of mixed _id types, invalid UTF-8 ids included', async () => {
    const ids: FakeId[] = [
      -3,
      1,
      2.5,
      bytesOf('a'),
      bytesOf('a', [0xff]),
      bytesOf('a', [0xff], 'b'),
      bytesOf('a', [0xff, 0xff]),
      bytesOf('b'),
      bytesOf('c', [0xc3]),
      bytesOf('d'),
      { k: 1 },
      { k: 2 },
    ];
    const collection = new RawCollection(documentsWithIds(ids));
    const candidates = [encodeId(1), encodeId('a'), encodeId('b'), encodeId('d'), encodeId({ k: 1 })];
    const pointSets = [[], ...candidates.map((point) => [point]), [candidates[0] ?? '', candidates[3] ?? '']];
    for (const points of pointSets) {
      for (const chunkSize of [1, 2, 5]) {
        const source = new MongoSnapshotSource(collection.asCollection(), { chunkSize });
        let documents = 0;
        for (const range of rangesBetween(points)) {
          const both = await readBothWays(source, range);
          const where = `points ${points.join(' ')}, chunk size ${String(chunkSize)}`;
          expect(both.raw, where).toEqual(both.decoded);
          expect(both.rawLastIds, where).toEqual(both.decodedLastIds);
          documents += both.raw.flat().length;
        }
        expect(documents).toBe(ids.length);
      }
    }
  });

  it('issue 11: a document with a string that is not valid UTF-8 comes back as its stored bytes, unchanged', async () => {
    const invalid = Uint8Array.from([0x61, 0xff, 0x62, 0xc3, 0x28]);
    const stored = [
      serialize({ _id: 1, s: 'fine' }),
      bsonWithBytes({ _id: 2, s: '#####', t: ['#####'] }, '#####', invalid),
      serialize({ _id: 3, s: 'fine' }),
    ];
    const collection = new RawCollection(stored.map((bytes, i) => ({ id: i + 1, bytes })));
    const source = new MongoSnapshotSource(collection.asCollection(), { chunkSize: 10 });
    const chunk = await source.nextRawChunk(
      { after: undefined, upTo: undefined },
      undefined,
      new AbortController().signal,
    );
    expect(chunk.documents.map((bytes) => Buffer.from(bytes))).toEqual(
      stored.map((bytes) => Buffer.from(bytes)),
    );
    expect(chunk.lastId).toBe(encodeId(3));
  });

  it('issue 11: a raw chunk keeps the chunk byte cap and holds only its own bytes, not the buffers the driver read them into', async () => {
    const big = (v: number) => ({ id: v, bytes: serialize({ _id: v, v, pad: 'x'.repeat(10_000) }) });
    const collection = new RawCollection(Array.from({ length: 50 }, (_, v) => big(v)));
    const source = new MongoSnapshotSource(collection.asCollection(), {
      chunkSize: 1_000,
      chunkBytes: 35_000,
    });
    const range = { after: undefined, upTo: undefined };
    const sizes: number[] = [];
    const seen: number[] = [];
    let lastId: string | undefined;
    for (;;) {
      const chunk = await source.nextRawChunk(range, lastId, new AbortController().signal);
      if (chunk.documents.length === 0) break;
      sizes.push(chunk.documents.length);
      seen.push(...chunk.documents.map((bytes) => decodeDocument(bytes).v as number));
      const own = chunk.documents.reduce((sum, bytes) => sum + bytes.byteLength, 0);
      for (const bytes of chunk.documents) expect(bytes.buffer.byteLength).toBe(own);
      lastId = chunk.lastId;
    }
    expect(Math.max(...sizes)).toBeLessThanOrEqual(5);
    expect(seen).toEqual(Array.from({ length: 50 }, (_, v) => v));
  });
});

describe("a document's _id decoded from its element alone (issue 11, build 6)", () => {
  it('issue 11: documentId gives the _id decodeDocument gives, wherever _id stands among elements of the types the driver decodes', () => {
    fc.assert(
      fc.property(arbDocument, fc.nat(), arbLeaf, (document, position, id) => {
        const entries = Object.entries(document).filter(([key]) => key !== '_id');
        const at = position % (entries.length + 1);
        const bytes = serialize(
          Object.fromEntries([...entries.slice(0, at), ['_id', id], ...entries.slice(at)]),
        );
        expect(encodeId(documentId(bytes))).toBe(encodeId(decodeDocument(bytes)._id));
      }),
      { numRuns: 500 },
    );
  });

  it('issue 11: documentId steps over the types no JavaScript value serialises to (undefined, DBPointer) and code with scope', () => {
    const cstring = (text: string) => Buffer.from(`${text}\0`, 'utf8');
    const int32 = (n: number) => {
      const bytes = Buffer.alloc(4);
      bytes.writeInt32LE(n);
      return bytes;
    };
    const namespace = cstring('db.items');
    const elements = Buffer.concat([
      Buffer.from([0x06]),
      cstring('u'),
      Buffer.from([0x0c]),
      cstring('p'),
      int32(namespace.length),
      namespace,
      Buffer.alloc(12, 7),
      // Code with scope, serialised by bson: its element without the document around it.
      Buffer.from(serialize({ c: new Code('x', { a: 1 }) })).subarray(4, -1),
      Buffer.from([0x10]),
      cstring('_id'),
      int32(42),
    ]);
    const document = Buffer.concat([int32(4 + elements.length + 1), elements, Buffer.from([0])]);
    expect(documentId(document)).toBe(42);
  });

  it('issue 11: an _id that is not valid UTF-8 comes back as its bytes; a document without _id has none', () => {
    const invalid = Uint8Array.from([0x61, 0xff]);
    const id = documentId(bsonWithBytes({ before: 1.5, _id: '##' }, '##', invalid));
    expect(Buffer.from(invalidUtf8Bytes(id) ?? [])).toEqual(Buffer.from(invalid));
    expect(documentId(serialize({ a: 1 }))).toBeUndefined();
  });
});
