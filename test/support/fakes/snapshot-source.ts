import { serialize } from 'bson';
import { decodeId, encodeId } from '../../../src/mongodb/checkpoint-store.js';
import {
  type IdRange,
  type RawChunk,
  type SnapshotSource,
  type SourceDocument,
} from '../../../src/core/ports.js';

/** A read of one chunk, as the fake saw it. */
export interface ChunkRead {
  readonly range: IdRange;
  readonly lastId: string | undefined;
  /** Writes in flight (see `inFlight`) when the read began. */
  readonly writesInFlight: number;
  /** Read with nextRawChunk (RawFakeSnapshotSource). */
  readonly raw: boolean;
}

/**
 * A collection of documents with whole-number `_id`s, read the way the SnapshotSource port says: split at
 * evenly spaced ids, each range read in `_id` order in chunks of `chunkSize`. `gate`, when set, holds every
 * read until it resolves; `failRead` makes a read of a range fail.
 */
export class FakeSnapshotSource implements SnapshotSource {
  readonly reads: ChunkRead[] = [];
  readonly splits: number[] = [];
  /** Reads under way, and the most at once. */
  reading = 0;
  maxReading = 0;
  /** Set by the test to how many writes are out (the sink's count), recorded with each read. */
  inFlight: () => number = () => 0;
  gate: (() => Promise<void>) | undefined;
  failRead: ((range: IdRange, lastId: string | undefined) => Error | undefined) | undefined;
  readonly #ids: number[];

  constructor(
    readonly documents: readonly SourceDocument[],
    private readonly chunkSize: number,
  ) {
    this.#ids = documents.map((d) => d._id as number).sort((a, b) => a - b);
  }

  estimatedCount(): Promise<number> {
    return Promise.resolve(this.documents.length);
  }

  split(parts: number): Promise<readonly IdRange[]> {
    this.splits.push(parts);
    const ids = this.#ids;
    const count = Math.max(1, Math.min(parts, ids.length));
    const ranges: IdRange[] = [];
    let after: string | undefined;
    for (let i = 1; i <= count; i++) {
      const end = i === count ? undefined : ids[Math.floor((ids.length * i) / count) - 1];
      const upTo = end === undefined ? undefined : encodeId(end);
      ranges.push({ after, upTo });
      after = upTo;
    }
    return Promise.resolve(ranges);
  }

  nextChunk(
    range: IdRange,
    lastId: string | undefined,
    signal: AbortSignal,
  ): Promise<readonly SourceDocument[]> {
    return this.read(range, lastId, signal, false);
  }

  /** The chunk of `range` after `lastId`, recorded in `reads`. */
  protected async read(
    range: IdRange,
    lastId: string | undefined,
    signal: AbortSignal,
    raw: boolean,
  ): Promise<readonly SourceDocument[]> {
    this.reads.push({ range, lastId, writesInFlight: this.inFlight(), raw });
    this.reading++;
    this.maxReading = Math.max(this.maxReading, this.reading);
    try {
      signal.throwIfAborted();
      await this.gate?.();
      signal.throwIfAborted();
      const failure = this.failRead?.(range, lastId);
      if (failure) throw failure;
      const low = [range.after, lastId].flatMap((id) => (id === undefined ? [] : [decodeId(id) as number]));
      const from = low.length === 0 ? -Infinity : Math.max(...low);
      const to = range.upTo === undefined ? Infinity : (decodeId(range.upTo) as number);
      return this.documents
        .filter((d) => (d._id as number) > from && (d._id as number) <= to)
        .sort((a, b) => (a._id as number) - (b._id as number))
        .slice(0, this.chunkSize);
    } finally {
      this.reading--;
    }
  }
}

/**
 * The same collection, also read raw (SnapshotSource.nextRawChunk): each chunk's documents serialised with
 * bson, and the last one's `_id` as canonical Extended JSON.
 */
export class RawFakeSnapshotSource extends FakeSnapshotSource {
  async nextRawChunk(range: IdRange, lastId: string | undefined, signal: AbortSignal): Promise<RawChunk> {
    const chunk = await this.read(range, lastId, signal, true);
    const last = chunk.at(-1);
    return {
      documents: chunk.map((document) => serialize(document)),
      lastId: last === undefined ? undefined : encodeId(last._id),
    };
  }
}

/** `count` documents with ids 0 to count - 1. */
export function numberedDocuments(count: number): SourceDocument[] {
  return Array.from({ length: count }, (_, i) => ({ _id: i, n: i }));
}
