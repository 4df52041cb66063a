import { type Collection, type Document } from 'mongodb';
import { mongoBoundary } from './error-mapping.js';

/** Where the byte figure of a collection came from, so that a plan can say how much to trust it. */
export type CollectionBytesSource = 'storageStats.size' | 'avgObjSize × count';

export interface CollectionSize {
  /** `estimatedDocumentCount` (collection metadata: no scan). */
  readonly documents: number;
  /** Uncompressed BSON bytes of the documents, when the server says; undefined otherwise. */
  readonly bytes: number | undefined;
  readonly bytesSource: CollectionBytesSource | undefined;
}

/**
 * How large a collection is, from metadata only (never a scan): the count from `estimatedDocumentCount`,
 * the bytes from `$collStats` `storageStats.size` (the uncompressed size of the documents, summed over the
 * shards of a sharded collection), else `avgObjSize` × count. A server that refuses `$collStats` (no
 * `collStats` privilege, or a stand-in that lacks the stage) leaves the bytes undefined: the caller
 * estimates them another way and says so.
 */
export function collectionSize(collection: Collection): Promise<CollectionSize> {
  return mongoBoundary(async () => {
    const documents = await collection.estimatedDocumentCount();
    let stats: Document[];
    try {
      stats = await collection.aggregate([{ $collStats: { storageStats: {} } }]).toArray();
    } catch {
      return { documents, bytes: undefined, bytesSource: undefined };
    }
    const storage = stats.map((s) => (s.storageStats ?? {}) as Document);
    const sizes = storage.map((s) => Number(s.size));
    if (sizes.length > 0 && sizes.every(Number.isFinite)) {
      return { documents, bytes: sizes.reduce((a, b) => a + b, 0), bytesSource: 'storageStats.size' };
    }
    const average = Number(storage[0]?.avgObjSize);
    return Number.isFinite(average)
      ? { documents, bytes: Math.round(average * documents), bytesSource: 'avgObjSize × count' }
      : { documents, bytes: undefined, bytesSource: undefined };
  });
}
