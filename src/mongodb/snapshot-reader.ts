import { isUtf8 } from 'node:buffer';
import { type Collection, type Document } from 'mongodb';
import { invalidUtf8Bytes } from '../base/invalid-utf8.js';
import { decodeAll, RAW_READ } from './raw-documents.js';
import { mongoBoundary } from './error-mapping.js';

export const DEFAULT_BACKFILL_CHUNK = 1_000;

/**
 * Reads a collection in `_id` order, one bounded chunk at a time, resuming after the last `_id` copied.
 * Paging uses `{_id: {$gt: last}}` on the `_id` index. MongoDB brackets such comparisons by BSON type, so a
 * collection whose ids mix types (numbers and ObjectIds, say) is copied one type at a time: once a type is
 * exhausted the next chunk starts at the first id of the next type in BSON sort order. Documents are read
 * as BSON bytes and decoded here, so a string that is not valid UTF-8 is kept as its bytes rather than
 * failing the chunk on every retry.
 */
export class SnapshotReader {
  constructor(
    private readonly collection: Collection,
    private readonly chunkSize = DEFAULT_BACKFILL_CHUNK,
  ) {}

  estimatedCount(): Promise<number> {
    return mongoBoundary(() => this.#estimatedCount());
  }

  async #estimatedCount(): Promise<number> {
    return this.collection.estimatedDocumentCount();
  }

  /** The next chunk after `lastId` (undefined: from the start); empty when the copy is complete. */
  nextChunk(lastId: unknown, signal: AbortSignal): Promise<Document[]> {
    return mongoBoundary(() => this.#nextChunk(lastId, signal));
  }

  async #nextChunk(lastId: unknown, signal: AbortSignal): Promise<Document[]> {
    return endOnQueryableId(await this.#read(lastId, signal));
  }

  async #read(lastId: unknown, signal: AbortSignal): Promise<Document[]> {
    signal.throwIfAborted();
    if (lastId === undefined) {
      return decodeAll(
        await this.collection.find({}, RAW_READ).sort({ _id: 1 }).limit(this.chunkSize).toArray(),
      );
    }
    const invalid = invalidUtf8Bytes(lastId);
    if (invalid !== undefined) return this.#afterInvalidString(invalid, signal);
    const after: Document = { _id: { $gt: lastId } };
    const sameType = decodeAll(
      await this.collection.find(after, RAW_READ).sort({ _id: 1 }).limit(this.chunkSize).toArray(),
    );
    if (sameType.length > 0) return sameType;
    return this.#nextType({ $expr: { $gt: ['$_id', { $literal: lastId }] } });
  }

  /**
   * The first ids after `match` in BSON order, across types. The type bracket of the last id is exhausted:
   * continue with ids that sort after it. Inside `$expr` the id is an expression: `$literal` keeps a string
   * like "$x" from being read as a field path and a sub-document id from being evaluated as an expression
   * object.
   */
  async #nextType(match: Document): Promise<Document[]> {
    const [next] = decodeAll(
      await this.collection
        .aggregate([{ $match: match }, { $sort: { _id: 1 } }, { $limit: 1 }], RAW_READ)
        .toArray(),
    );
    if (!next) return [];
    const nextId: unknown = next._id;
    // A string that is not valid UTF-8 cannot be named in a query (it would be sent as the marker's
    // sub-document and page through the documents' bracket, past the strings): the chunk ends on it, and
    // the next one continues from its bytes.
    if (invalidUtf8Bytes(nextId) !== undefined) return [next];
    const afterNext: Document = { _id: { $gt: nextId } };
    const rest = decodeAll(
      await this.collection
        .find(afterNext, RAW_READ)
        .sort({ _id: 1 })
        .limit(this.chunkSize - 1)
        .toArray(),
    );
    return [next, ...rest];
  }

  /**
   * The chunk after a string id whose bytes are not valid UTF-8. No query can name those bytes (a
   * JavaScript string cannot hold them), so the strings are read from the greatest string a query can name
   * that sorts before the id, and those up to the id, compared by bytes as MongoDB compares strings, are
   * passed over. Once the strings after it are exhausted, the copy goes on with the next type.
   */
  async #afterInvalidString(last: Uint8Array, signal: AbortSignal): Promise<Document[]> {
    const from = queryableStringBefore(last);
    const fromPrefix: Document = { _id: { $gte: from } };
    const cursor = this.collection.find(fromPrefix, RAW_READ).sort({ _id: 1 }).batchSize(this.chunkSize);
    const chunk: Document[] = [];
    try {
      for await (const item of cursor) {
        signal.throwIfAborted();
        const [document] = decodeAll([item]);
        if (document === undefined) continue;
        const bytes = stringBytes(document._id);
        if (bytes !== undefined && Buffer.compare(bytes, last) <= 0) continue;
        chunk.push(document);
        if (chunk.length >= this.chunkSize) break;
      }
    } finally {
      await cursor.close();
    }
    if (chunk.length > 0) return chunk;
    return this.#nextType({
      _id: { $not: { $type: 'string' } },
      $expr: { $gt: ['$_id', { $literal: from }] },
    });
  }
}

/**
 * The chunk up to its last id that a query can name. The next chunk is read after the last id of this one;
 * after a string that is not valid UTF-8 that means reading the strings again from its longest valid
 * prefix (which is "" when its first byte is invalid, so all strings) and passing over those up to it. A
 * chunk that has another id ends there instead, and the ordinary `$gt` read of the next chunk takes up the
 * invalid ids after it again: only a chunk made entirely of such ids is continued by rescanning.
 */
function endOnQueryableId(chunk: Document[]): Document[] {
  const last = chunk.findLastIndex((document) => invalidUtf8Bytes(document._id) === undefined);
  return last < 0 ? chunk : chunk.slice(0, last + 1);
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
