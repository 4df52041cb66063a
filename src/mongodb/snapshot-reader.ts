import { isUtf8 } from 'node:buffer';
import { type Collection, type Document, type FindCursor, ReadPreference } from 'mongodb';
import { bsonKind, type BsonKind } from '../base/bson-kind.js';
import { invalidUtf8Bytes } from '../base/invalid-utf8.js';
import { type IdRange, type RawChunk, type SnapshotSource, type SourceDocument } from '../core/ports.js';
import { decodeId, encodeId } from './checkpoint-store.js';
import { decodeAll, decodeDocument, RAW_READ } from './raw-documents.js';
import { elementAlone, topLevelElement } from './bson-fields.js';
import { mongoBoundary } from './error-mapping.js';

export const DEFAULT_BACKFILL_CHUNK = 1_000;

/**
 * How every read of a copy (backfill, verify, repair) is made: as BSON bytes (RAW_READ), from the primary
 * at readConcern majority, whatever the connection string prefers. A copy's rows are written at a snapshot
 * start taken from the primary's majority-committed time: a lagging secondary would hand over versions
 * older than that start (which then beat the stream's newer rows), and readConcern local could hand over
 * writes that are later rolled back.
 */
export const PRIMARY_MAJORITY_READ = {
  readPreference: ReadPreference.primary,
  readConcern: { level: 'majority' },
} as const;
/** PRIMARY_MAJORITY_READ, documents handed over as their BSON bytes. */
export const COPY_READ = { ...RAW_READ, ...PRIMARY_MAJORITY_READ } as const;
/**
 * A chunk ends early once its documents hold this much BSON: 1,000 documents of 1 KB are one chunk, but
 * documents of 1 MB come 8 at a time, so the chunks in flight of every range stay a few tens of megabytes.
 */
export const DEFAULT_BACKFILL_CHUNK_BYTES = 8_000_000;

/**
 * `_id`s sampled to choose split points: a few thousand keep the ranges within a few percent of each
 * other in size whatever the number of parts asked for.
 */
export const DEFAULT_SPLIT_SAMPLE = 2_000;

/**
 * MongoDB's `$sample` reads at random through the collection only when the sample is under 5% of it;
 * otherwise it scans the whole collection and sorts it at random. Below that size (20 samples' worth) the
 * split points are read from the `_id` index instead, which costs less than such a scan and is exact.
 */
const SAMPLE_SHARE_DIVISOR = 20;

/** An inclusive upper bound on `_id`s (a read without one runs to the end of the collection). */
interface UpperBound {
  readonly id: unknown;
}

/** A chunk as read: each document's BSON bytes, and the `_id` of the last one (decoded from that alone). */
interface ReadChunk {
  readonly documents: readonly Uint8Array[];
  /** Meaningless when `documents` is empty. */
  readonly lastId: unknown;
}

const NO_DOCUMENTS: ReadChunk = { documents: [], lastId: undefined };

/**
 * Reads a collection in `_id` order, one bounded chunk at a time, resuming after the last `_id` copied,
 * optionally stopping at an inclusive upper bound. Paging uses `{_id: {$gt: last}}` on the `_id` index.
 * MongoDB brackets such comparisons by BSON type, so a collection whose ids mix types (numbers and
 * ObjectIds, say) is copied one type at a time: once a type is exhausted the next chunk starts at the first
 * id of the next type in BSON sort order. Documents are read as BSON bytes and handed over as such (only
 * the `_id`s paging needs are decoded), so a string that is not valid UTF-8 is kept as its bytes rather than
 * failing the chunk on every retry, and decoding is left to whoever maps the documents.
 *
 * An upper bound goes into the `_id` index bounds (`$lte`) while the chunk is in the bound's own type, and
 * into a `$expr` comparison, which MongoDB evaluates across types in BSON order, always: the index bound
 * keeps the read from walking past the range, the `$expr` keeps a read in a lower type from running into
 * the types after the bound on a server that compares across types.
 */
class IdOrderReader {
  constructor(
    private readonly collection: Collection,
    private readonly chunkSize: number,
    private readonly chunkBytes = DEFAULT_BACKFILL_CHUNK_BYTES,
  ) {}

  async nextChunk(lastId: unknown, upper: UpperBound | undefined, signal: AbortSignal): Promise<ReadChunk> {
    return endOnQueryableId(await this.#read(lastId, upper, signal));
  }

  async #read(lastId: unknown, upper: UpperBound | undefined, signal: AbortSignal): Promise<Uint8Array[]> {
    signal.throwIfAborted();
    if (lastId === undefined) {
      if (upper) return this.#nextType(crossing(undefined, upper), upper);
      return this.#take(this.collection.find({}, COPY_READ).sort({ _id: 1 }), this.chunkSize);
    }
    const invalid = invalidUtf8Bytes(lastId);
    if (invalid !== undefined) return this.#afterInvalidString(invalid, upper, signal);
    const sameType = await this.#take(
      this.collection.find(idsAfter(lastId, upper), COPY_READ).sort({ _id: 1 }),
      this.chunkSize,
    );
    if (sameType.length > 0) return sameType;
    return this.#nextType(crossing(lastId, upper), upper);
  }

  /**
   * The first ids matching `match` in BSON order, across types. The type bracket of the last id is
   * exhausted: continue with ids that sort after it. Inside `$expr` the id is an expression: `$literal`
   * keeps a string like "$x" from being read as a field path and a sub-document id from being evaluated as
   * an expression object.
   */
  async #nextType(match: Document, upper: UpperBound | undefined): Promise<Uint8Array[]> {
    const [next] = (
      await this.collection
        .aggregate([{ $match: match }, { $sort: { _id: 1 } }, { $limit: 1 }], COPY_READ)
        .toArray()
    ).map(rawDocument);
    if (!next) return [];
    const nextId = documentId(next);
    // A string that is not valid UTF-8 cannot be named in a query (it would be sent as the marker's
    // sub-document and page through the documents' bracket, past the strings): the chunk ends on it, and
    // the next one continues from its bytes.
    if (invalidUtf8Bytes(nextId) !== undefined) return [next];
    const rest = await this.#take(
      this.collection.find(idsAfter(nextId, upper), COPY_READ).sort({ _id: 1 }),
      this.chunkSize - 1,
    );
    return [next, ...rest];
  }

  /**
   * At most `count` documents of `cursor`, fewer once they hold `chunkBytes` of BSON (the first always
   * comes): a chunk of large documents stays small in memory, and with several chunks of several ranges in
   * flight that is what bounds the backfill's memory. The rest of the cursor is left unread (closed).
   */
  async #take(cursor: FindCursor<unknown>, count: number): Promise<Uint8Array[]> {
    const raw: Uint8Array[] = [];
    let bytes = 0;
    if (count <= 0) {
      await cursor.close();
      return [];
    }
    try {
      for await (const item of cursor.limit(count)) {
        const document = rawDocument(item);
        raw.push(document);
        bytes += document.length;
        if (bytes >= this.chunkBytes) break;
      }
    } finally {
      await cursor.close();
    }
    return raw;
  }

  /**
   * The chunk after a string id whose bytes are not valid UTF-8. No query can name those bytes (a
   * JavaScript string cannot hold them), so the strings are read from the greatest string a query can name
   * that sorts before the id, and those up to the id, compared by bytes as MongoDB compares strings, are
   * passed over. Once the strings after it are exhausted, the copy goes on with the next type.
   */
  async #afterInvalidString(
    last: Uint8Array,
    upper: UpperBound | undefined,
    signal: AbortSignal,
  ): Promise<Uint8Array[]> {
    const from = queryableStringBefore(last);
    const fromPrefix: Document = { _id: { $gte: from } };
    if (upper) {
      if (bracketOf(upper.id) === 'string') fromPrefix._id = { $gte: from, $lte: upper.id };
      Object.assign(fromPrefix, atMost(upper));
    }
    const cursor = this.collection.find(fromPrefix, COPY_READ).sort({ _id: 1 }).batchSize(this.chunkSize);
    const chunk: Uint8Array[] = [];
    try {
      for await (const item of cursor) {
        signal.throwIfAborted();
        const document = rawDocument(item);
        const bytes = stringBytes(documentId(document));
        if (bytes !== undefined && Buffer.compare(bytes, last) <= 0) continue;
        chunk.push(document);
        if (chunk.length >= this.chunkSize) break;
      }
    } finally {
      await cursor.close();
    }
    if (chunk.length > 0) return chunk;
    return this.#nextType({ _id: { $not: { $type: 'string' } }, ...crossing(from, upper) }, upper);
  }
}

/**
 * Reads a whole collection in `_id` order, one bounded chunk at a time, resuming after the last `_id`
 * copied (the backfill copied as one range). See MongoSnapshotSource for ranges read concurrently.
 */
export class SnapshotReader {
  readonly #reader: IdOrderReader;

  constructor(
    private readonly collection: Collection,
    chunkSize = DEFAULT_BACKFILL_CHUNK,
  ) {
    this.#reader = new IdOrderReader(collection, chunkSize);
  }

  estimatedCount(): Promise<number> {
    return mongoBoundary(() => this.collection.estimatedDocumentCount());
  }

  /** The next chunk after `lastId` (undefined: from the start); empty when the copy is complete. */
  nextChunk(lastId: unknown, signal: AbortSignal): Promise<Document[]> {
    return mongoBoundary(async () =>
      decodeAll((await this.#reader.nextChunk(lastId, undefined, signal)).documents),
    );
  }
}

export interface SnapshotSourceOptions {
  /** Documents per chunk read; default DEFAULT_BACKFILL_CHUNK. */
  readonly chunkSize?: number;
  /** A chunk ends early once it holds this many bytes of BSON; default DEFAULT_BACKFILL_CHUNK_BYTES. */
  readonly chunkBytes?: number;
  /** `_id`s sampled to choose split points (at most this many); default DEFAULT_SPLIT_SAMPLE. */
  readonly sampleSize?: number;
  /**
   * A range is given at least about this many documents: a collection of fewer than `parts` times this
   * many is split into fewer ranges (one when it is smaller still). Default: the chunk size, as a range
   * under one chunk gains nothing from being read on its own.
   */
  readonly minRangeDocuments?: number;
}

/**
 * The collection as the backfill reads it (the SnapshotSource port): split into `_id` ranges at points
 * from a bounded sample, each range read in `_id` order in bounded chunks, concurrently with the others.
 *
 * Split points: a collection estimated at more than 20 times `sampleSize` documents is sampled with
 * `$sample` (MongoDB then reads at random, never the whole collection) and the sample sorted by the server
 * in BSON order; a smaller one has its `_id`s read from the `_id` index in order (at most 20 times
 * `sampleSize` index keys, cheaper than the scan `$sample` itself would make at that size) and split at
 * exact quantiles. Ids that are strings not valid UTF-8 are never chosen (no query can name them), and
 * duplicates in a sample collapse: the ranges then are fewer, never empty by construction or overlapping.
 */
export class MongoSnapshotSource implements SnapshotSource {
  readonly #reader: IdOrderReader;
  readonly #sampleSize: number;
  readonly #minRangeDocuments: number;

  constructor(
    private readonly collection: Collection,
    options: SnapshotSourceOptions = {},
  ) {
    const chunkSize = options.chunkSize ?? DEFAULT_BACKFILL_CHUNK;
    this.#reader = new IdOrderReader(collection, chunkSize, options.chunkBytes);
    this.#sampleSize = Math.max(1, Math.floor(options.sampleSize ?? DEFAULT_SPLIT_SAMPLE));
    this.#minRangeDocuments = Math.max(1, options.minRangeDocuments ?? chunkSize);
  }

  estimatedCount(signal: AbortSignal): Promise<number> {
    return mongoBoundary(() => {
      signal.throwIfAborted();
      return this.collection.estimatedDocumentCount();
    });
  }

  split(parts: number, signal: AbortSignal): Promise<readonly IdRange[]> {
    return mongoBoundary(() => this.#split(parts, signal));
  }

  nextChunk(
    range: IdRange,
    lastId: string | undefined,
    signal: AbortSignal,
  ): Promise<readonly SourceDocument[]> {
    return mongoBoundary(async () => decodeAll((await this.#read(range, lastId, signal)).documents));
  }

  /**
   * The chunk `nextChunk` reads, with the same bounds (chunk size, chunk bytes, the range), undecoded: only
   * `_id`s are decoded (the last document's, for `lastId`, and any paging needs).
   */
  nextRawChunk(range: IdRange, lastId: string | undefined, signal: AbortSignal): Promise<RawChunk> {
    return mongoBoundary(async () => {
      const chunk = await this.#read(range, lastId, signal);
      if (chunk.documents.length === 0) return { documents: [], lastId: undefined };
      return { documents: packed(chunk.documents), lastId: encodeId(chunk.lastId) };
    });
  }

  #read(range: IdRange, lastId: string | undefined, signal: AbortSignal): Promise<ReadChunk> {
    const from = lastId ?? range.after;
    const upper = range.upTo === undefined ? undefined : { id: decodeId(range.upTo) };
    return this.#reader.nextChunk(from === undefined ? undefined : decodeId(from), upper, signal);
  }

  async #split(parts: number, signal: AbortSignal): Promise<readonly IdRange[]> {
    signal.throwIfAborted();
    const count = await this.collection.estimatedDocumentCount();
    const wanted = Math.min(Math.floor(parts), Math.floor(count / this.#minRangeDocuments));
    const ranges =
      wanted <= 1
        ? [WHOLE]
        : rangesBetween(
            splitPoints(
              count > SAMPLE_SHARE_DIVISOR * this.#sampleSize ? await this.#sample() : await this.#walk(),
              wanted,
            ),
          );
    signal.throwIfAborted();
    return endAtLastId(ranges, await this.lastId());
  }

  /**
   * The greatest `_id` now (BSON order), as canonical Extended JSON; undefined when the collection is empty or
   * the id cannot be named in a query (a string that is not valid UTF-8). Public for a repair's last range.
   */
  async lastId(): Promise<string | undefined> {
    const [last] = decodeAll(
      await this.collection
        .find({}, { ...COPY_READ, projection: { _id: 1 } })
        .sort({ _id: -1 })
        .limit(1)
        .toArray(),
    );
    if (last === undefined || invalidUtf8Bytes(last._id) !== undefined) return undefined;
    return encodeId(last._id);
  }

  /** `_id`s at random, sorted by the server in BSON order (duplicates possible). */
  async #sample(): Promise<unknown[]> {
    const sampled = await this.collection
      .aggregate(
        [{ $sample: { size: this.#sampleSize } }, { $project: { _id: 1 } }, { $sort: { _id: 1 } }],
        COPY_READ,
      )
      .toArray();
    return decodeAll(sampled).map((document) => document._id as unknown);
  }

  /**
   * Every `_id` in order, from the `_id` index alone, at most 20 samples' worth. A collection that holds
   * more than that although its estimate said otherwise (a stale count) is sampled instead: split points
   * from its first ids only would leave nearly all of it to the last range.
   */
  async #walk(): Promise<unknown[]> {
    const limit = SAMPLE_SHARE_DIVISOR * this.#sampleSize;
    const walked = await this.collection
      .find({}, { ...COPY_READ, projection: { _id: 1 } })
      .sort({ _id: 1 })
      .limit(limit + 1)
      .toArray();
    if (walked.length > limit) return this.#sample();
    return decodeAll(walked).map((document) => document._id as unknown);
  }
}

const WHOLE: IdRange = { after: undefined, upTo: undefined };

/**
 * At most `parts - 1` distinct split points at even quantiles of `ids` (sorted in BSON order), leaving out
 * strings that are not valid UTF-8, as canonical Extended JSON.
 */
export function splitPoints(ids: readonly unknown[], parts: number): string[] {
  const distinct: string[] = [];
  for (const id of ids) {
    if (invalidUtf8Bytes(id) !== undefined) continue;
    const encoded = encodeId(id);
    // Sorted, so a duplicate (a sample may hold one document twice) follows its first occurrence.
    if (distinct.at(-1) !== encoded) distinct.push(encoded);
  }
  const points: string[] = [];
  for (let i = 1; i < parts; i++) {
    // The last id of the i-th share: bounds are inclusive above.
    const point = distinct[Math.floor((i * distinct.length) / parts) - 1];
    if (point !== undefined && point !== points.at(-1)) points.push(point);
  }
  return points;
}

/**
 * The last range ends at the greatest `_id` the collection held once the snapshot had started: a document
 * inserted later is the change stream's (it starts at the snapshot), and a copy whose last range took in new
 * ids would never end on a collection that grows at the top (ObjectIds) faster than it is copied. When the
 * last split point is that id or past it (a sample of documents deleted since), the last range is empty.
 */
export function endAtLastId(ranges: readonly IdRange[], lastId: string | undefined): IdRange[] {
  const last = ranges.at(-1);
  if (lastId === undefined || last === undefined || last.upTo !== undefined) return [...ranges];
  return [...ranges.slice(0, -1), { after: last.after, upTo: lastId }];
}

/** Ranges that cover every `_id` once: up to the first point, between consecutive points, after the last. */
export function rangesBetween(points: readonly string[]): IdRange[] {
  const bounds = [undefined, ...points, undefined];
  return bounds.slice(1).map((upTo, i) => ({ after: bounds[i], upTo }));
}

/** The canonical BSON types MongoDB brackets comparisons by (all numbers in one, strings with symbols). */
const BRACKETS: Partial<Record<BsonKind, string>> = {
  null: 'null',
  number: 'number',
  bigint: 'number',
  Int32: 'number',
  Double: 'number',
  Long: 'number',
  Decimal128: 'number',
  string: 'string',
  BSONSymbol: 'string',
  invalidUtf8: 'string',
  document: 'object',
  DBRef: 'object',
  array: 'array',
  Binary: 'binData',
  bytes: 'binData',
  ObjectId: 'objectId',
  boolean: 'boolean',
  date: 'date',
  Timestamp: 'timestamp',
  regexp: 'regex',
  BSONRegExp: 'regex',
  MinKey: 'minKey',
  MaxKey: 'maxKey',
};

/** The id's comparison bracket; undefined for a value this reader cannot place (never the same as another). */
function bracketOf(id: unknown): string | undefined {
  return invalidUtf8Bytes(id) === undefined ? BRACKETS[bsonKind(id)] : 'string';
}

/** Ids after `after` in its own type, up to `upper`. */
function idsAfter(after: unknown, upper: UpperBound | undefined): Document {
  if (!upper) return { _id: { $gt: after } };
  const bracket = bracketOf(after);
  const sameType = bracket !== undefined && bracket === bracketOf(upper.id);
  return { _id: sameType ? { $gt: after, $lte: upper.id } : { $gt: after }, ...atMost(upper) };
}

/** Ids up to `upper` whatever their type (an aggregation comparison orders across types). */
function atMost(upper: UpperBound): Document {
  return { $expr: { $lte: ['$_id', { $literal: upper.id }] } };
}

/** Ids after `after` (undefined: from the first) up to `upper`, compared across types. */
function crossing(after: unknown, upper: UpperBound | undefined): Document {
  const conditions: Document[] = [];
  if (after !== undefined) conditions.push({ $gt: ['$_id', { $literal: after }] });
  if (upper) conditions.push({ $lte: ['$_id', { $literal: upper.id }] });
  return { $expr: conditions.length === 1 ? conditions[0] : { $and: conditions } };
}

/**
 * The chunk up to its last id that a query can name. The next chunk is read after the last id of this one;
 * after a string that is not valid UTF-8 that means reading the strings again from its longest valid
 * prefix (which is "" when its first byte is invalid, so all strings) and passing over those up to it. A
 * chunk that has another id ends there instead, and the ordinary `$gt` read of the next chunk takes up the
 * invalid ids after it again: only a chunk made entirely of such ids is continued by rescanning.
 */
function endOnQueryableId(chunk: Uint8Array[]): ReadChunk {
  const last = chunk.at(-1);
  if (last === undefined) return NO_DOCUMENTS;
  const lastId = documentId(last);
  if (invalidUtf8Bytes(lastId) === undefined) return { documents: chunk, lastId };
  for (let i = chunk.length - 2; i >= 0; i--) {
    const id = documentId(chunk[i] ?? last);
    if (invalidUtf8Bytes(id) === undefined) return { documents: chunk.slice(0, i + 1), lastId: id };
  }
  return { documents: chunk, lastId };
}

/** A document of a read made with COPY_READ, which the driver always hands over as its BSON bytes. */
function rawDocument(item: unknown): Uint8Array {
  if (item instanceof Uint8Array) return item;
  throw new TypeError('a raw read handed over a decoded document');
}

/**
 * The documents copied into one buffer of their own. The driver hands raw documents over as views into
 * its reply buffers (up to 16 MB each, holding documents past the chunk too): held while the chunk is in
 * flight, they would keep every such buffer alive, beyond the chunk byte cap. One copy of the chunk's bytes
 * (a memcpy, next to nothing beside decoding them) holds exactly those, and a structured clone of the chunk
 * for a worker thread (which copies a view's whole buffer) copies only them. A Buffer (never one of Node's
 * pooled ones, which are shared), as the driver's are: bson decoded views of a plain Uint8Array about a tenth
 * slower per document (measured in bench/pipeline.ts's backfill; the cause is not pinned down).
 */
function packed(documents: readonly Uint8Array[]): Buffer[] {
  const buffer = Buffer.allocUnsafeSlow(documents.reduce((sum, document) => sum + document.byteLength, 0));
  let at = 0;
  return documents.map((document) => {
    buffer.set(document, at);
    at += document.byteLength;
    return buffer.subarray(at - document.byteLength, at);
  });
}

/**
 * The `_id` of one BSON document, decoding that element alone: the element is copied into a document of
 * its own and decoded as decodeDocument decodes a whole one, so the id comes out as it would from the
 * whole document (an id that is not valid UTF-8 as an InvalidUtf8String). MongoDB stores `_id` first, so
 * the scan of top-level elements normally stops at the first. Undefined when the document has none.
 */
export function documentId(bytes: Uint8Array): unknown {
  const element = topLevelElement(bytes, '_id');
  return element === undefined ? undefined : decodeDocument(elementAlone(bytes, element))._id;
}

/** The stored bytes of a string id (valid or not); undefined for ids of other types. */
function stringBytes(id: unknown): Uint8Array | undefined {
  return typeof id === 'string' ? Buffer.from(id, 'utf8') : invalidUtf8Bytes(id);
}

const SURROGATES_START = 0xd8_00;
const SURROGATES_COUNT = 0x8_00;
/** Unicode scalar values (code points other than surrogates), numbered without a gap. */
const SCALAR_VALUES = 0x11_00_00 - SURROGATES_COUNT;

function scalarValue(index: number): number {
  return index < SURROGATES_START ? index : index + SURROGATES_COUNT;
}

/**
 * The greatest string a query can name (valid UTF-8, as every JavaScript string is sent) that sorts before
 * `bytes` by bytes, for a `bytes` that is not valid UTF-8: its longest valid prefix, then the greatest
 * character whose encoding sorts before the invalid bytes after it. UTF-8 keeps the order of scalar values
 * in the order of bytes, so that character is found by bisection. Without it a rescan after an id whose
 * first byte is invalid would start at the first string of the collection.
 */
export function queryableStringBefore(bytes: Uint8Array): string {
  let end = bytes.length;
  while (end > 0 && !isUtf8(bytes.subarray(0, end))) end--;
  const prefix = Buffer.from(bytes.subarray(0, end)).toString('utf8');
  const rest = bytes.subarray(end);
  const sortsBefore = (index: number): boolean =>
    Buffer.compare(Buffer.from(String.fromCodePoint(scalarValue(index)), 'utf8'), rest) < 0;
  // Invariant: the character numbered `below` sorts before `rest` (-1: none does), `above` does not.
  let below = -1;
  let above = SCALAR_VALUES;
  while (above - below > 1) {
    const middle = Math.floor((below + above) / 2);
    if (sortsBefore(middle)) below = middle;
    else above = middle;
  }
  return below < 0 ? prefix : prefix + String.fromCodePoint(scalarValue(below));
}
