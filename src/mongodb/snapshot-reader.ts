import { type Collection, type Document } from 'mongodb';

export const DEFAULT_BACKFILL_CHUNK = 1_000;

/**
 * Reads a collection in `_id` order, one bounded chunk at a time, resuming after the last `_id` copied.
 * Paging uses `{_id: {$gt: last}}` on the `_id` index. MongoDB brackets such comparisons by BSON type, so a
 * collection whose ids mix types (numbers and ObjectIds, say) is copied one type at a time: once a type is
 * exhausted the next chunk starts at the first id of the next type in BSON sort order.
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
      return this.collection.find({}).sort({ _id: 1 }).limit(this.chunkSize).toArray();
    }
    const after: Document = { _id: { $gt: lastId } };
    const sameType = await this.collection.find(after).sort({ _id: 1 }).limit(this.chunkSize).toArray();
    if (sameType.length > 0) return sameType;
    // The type bracket of `lastId` is exhausted: continue with ids that sort after it in BSON order. Inside
    // `$expr` the id is an expression: `$literal` keeps a string like "$x" from being read as a field path
    // and a sub-document id from being evaluated as an expression object.
    const [next] = await this.collection
      .aggregate([
        { $match: { $expr: { $gt: ['$_id', { $literal: lastId }] } } },
        { $sort: { _id: 1 } },
        { $limit: 1 },
      ])
      .toArray();
    if (!next) return [];
    const nextId: unknown = next._id;
    const afterNext: Document = { _id: { $gt: nextId } };
    const rest = await this.collection
      .find(afterNext)
      .sort({ _id: 1 })
      .limit(this.chunkSize - 1)
      .toArray();
    return [next, ...rest];
  }
}
