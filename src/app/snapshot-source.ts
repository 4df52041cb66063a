import { type IdRange, type SnapshotSource, type SourceDocument } from '../core/ports.js';
import { decodeId } from '../mongodb/checkpoint-store.js';
import { type SnapshotReader } from '../mongodb/snapshot-reader.js';

/**
 * The SnapshotSource port over the one-range SnapshotReader: the collection is one range covering every
 * `_id`, so the backfill copies it with read-ahead but without concurrent ranges.
 */
export class WholeCollectionSnapshot implements SnapshotSource {
  constructor(private readonly reader: SnapshotReader) {}

  estimatedCount(): Promise<number> {
    return this.reader.estimatedCount();
  }

  split(): Promise<readonly IdRange[]> {
    return Promise.resolve([{ after: undefined, upTo: undefined }]);
  }

  nextChunk(
    range: IdRange,
    lastId: string | undefined,
    signal: AbortSignal,
  ): Promise<readonly SourceDocument[]> {
    if (range.after !== undefined || range.upTo !== undefined) {
      // A split saved by a reader that can read ranges: this one cannot honour its bounds.
      return Promise.reject(
        new Error('this snapshot reader reads the whole collection only, not an _id range'),
      );
    }
    return this.reader.nextChunk(lastId === undefined ? undefined : decodeId(lastId), signal);
  }
}
