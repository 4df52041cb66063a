import { type Collection, type Document } from 'mongodb';
import { decodeAll, RAW_READ } from './raw-documents.js';

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

  async estimatedCount(): Promise<number> {
    return this.collection.estimatedDocumentCount();
  }

  /** The next chunk after `lastId` (undefined: from the start); empty when the copy is complete. */
  async nextChunk(lastId: unknown, signal: AbortSignal): Promise<Document[]> {
    signal.throwIfAborted();
    if (lastId === undefined) {
      return decodeAll(
        await this.collection.find({}, RAW_READ).sort({ _id: 1 }).limit(this.chunkSize).toArray(),
      );
    }
    const after: Document = { _id: { $gt: lastId } };
    const sameType = decodeAll(
      await this.collection.find(after, RAW_READ).sort({ _id: 1 }).limit(this.chunkSize).toArray(),
    );
    if (sameType.length > 0) return sameType;
    // The type bracket of `lastId` is exhausted: continue with ids that sort after it in BSON order. Inside
    // `$expr` the id is an expression: `$literal` keeps a string like "$x" from being read as a field path
    // and a sub-document id from being evaluated as an expression object.
    const [next] = decodeAll(
      await this.collection
        .aggregate(
          [
            { $match: { $expr: { $gt: ['$_id', { $literal: lastId }] } } },
            { $sort: { _id: 1 } },
            { $limit: 1 },
          ],
          RAW_READ,
        )
        .toArray(),
    );
    if (!next) return [];
    const nextId: unknown = next._id;
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
}
