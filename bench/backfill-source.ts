import { setTimeout as sleep } from 'node:timers/promises';
import { deserialize, ObjectId } from 'bson';
import {
  type BackfillCheckpointStore,
  type BackfillProgress,
  type Checkpoint,
  type IdRange,
  type SnapshotSource,
  type SourceDocument,
} from '../src/core/ports.js';
import { decodeId, encodeId } from '../src/mongodb/checkpoint-store.js';
import { shapeDocuments } from './shapes.js';

/** Template documents reused round-robin (with a fresh `_id`), so generating a million stays cheap. */
const TEMPLATES = 2_000;
/** Where a document's ObjectId `_id` starts when it is the first element: size (4), type (1), "_id" and NUL (4). */
const ID_OFFSET = 9;

/**
 * A collection of `total` generated documents (nested-1KB shapes, ObjectId `_id`s from a counter) as the
 * daemon's backfill reads it through its SnapshotSource port: split into ranges at even points, each read in
 * chunks of `chunk` documents after a simulated round trip of `roundTripMs` (a timer: waiting for MongoDB
 * costs the reader no CPU), decoded from BSON as the driver decodes them (`nextChunk`) or handed over as BSON
 * bytes (`nextRawChunk`). Nothing is kept between chunks.
 */
export function generatedSource(
  total: number,
  chunk: number,
  decodeOptions: Parameters<typeof deserialize>[1],
  roundTripMs: number,
): Required<SnapshotSource> & { readonly documentsRead: () => number } {
  const bodies = shapeDocuments('nested-1KB', TEMPLATES);
  const base = new ObjectId().id.subarray(0, 8);
  const idOf = (n: number): ObjectId => {
    const bytes = new Uint8Array(12);
    bytes.set(base, 0);
    new DataView(bytes.buffer).setUint32(8, n);
    return new ObjectId(bytes);
  };
  const indexOf = (encoded: string): number => {
    const id = decodeId(encoded) as ObjectId;
    return Number.parseInt(id.toHexString().slice(16), 16);
  };
  let read = 0;
  /** The counters of the chunk of `range` after `lastId`, [start, end), once the round trip is over. */
  const bounds = async (
    range: IdRange,
    lastId: string | undefined,
    signal: AbortSignal,
  ): Promise<readonly [number, number]> => {
    if (roundTripMs > 0) await sleep(roundTripMs, undefined, { signal });
    else await new Promise((resolve) => setImmediate(resolve));
    const from = lastId ?? range.after;
    const start = from === undefined ? 0 : indexOf(from) + 1;
    return [start, Math.min(start + chunk, range.upTo === undefined ? total : indexOf(range.upTo) + 1)];
  };
  return {
    documentsRead: () => read,
    estimatedCount: () => Promise.resolve(total),
    split: (parts) => {
      const ranges: IdRange[] = [];
      let after: string | undefined;
      for (let i = 1; i <= parts; i++) {
        const upTo = encodeId(idOf(Math.floor((i * total) / parts) - 1));
        ranges.push({ after, upTo });
        after = upTo;
      }
      return Promise.resolve(ranges);
    },
    nextChunk: async (range, lastId, signal) => {
      const [start, end] = await bounds(range, lastId, signal);
      const docs: SourceDocument[] = [];
      for (let n = start; n < end; n++) {
        const body = bodies[n % bodies.length] ?? new Uint8Array();
        body.set(base, ID_OFFSET);
        new DataView(body.buffer, body.byteOffset).setUint32(ID_OFFSET + 8, n);
        docs.push(deserialize(body, decodeOptions));
      }
      read += docs.length;
      return docs;
    },
    // The bytes as MongoSnapshotSource.nextRawChunk hands them over: the chunk's documents in one buffer of
    // its own (there a copy out of the driver's reply buffers, here out of the templates), each with its `_id`
    // written in. It costs one allocation of the chunk's size (about 1 MB for 1,000 documents) and a copy of
    // each document's bytes, as the real source's copy does; what the driver spends parsing a reply is not
    // simulated on either path.
    nextRawChunk: async (range, lastId, signal) => {
      const [start, end] = await bounds(range, lastId, signal);
      if (end <= start) return { documents: [], lastId: undefined };
      let size = 0;
      for (let n = start; n < end; n++) size += bodies[n % bodies.length]?.length ?? 0;
      // A Buffer, as the driver's and MongoSnapshotSource's are (views of a plain Uint8Array decoded about a
      // tenth slower per document here).
      const buffer = Buffer.allocUnsafeSlow(size);
      const view = new DataView(buffer.buffer, buffer.byteOffset, buffer.byteLength);
      const documents: Uint8Array[] = [];
      let at = 0;
      for (let n = start; n < end; n++) {
        const body = bodies[n % bodies.length] ?? new Uint8Array();
        buffer.set(body, at);
        buffer.set(base, at + ID_OFFSET);
        view.setUint32(at + ID_OFFSET + 8, n);
        documents.push(buffer.subarray(at, at + body.length));
        at += body.length;
      }
      read += documents.length;
      return { documents, lastId: encodeId(idOf(end - 1)) };
    },
  };
}

/** Backfill checkpoints kept in memory, saved as the daemon's store is asked to save them. */
export function memoryBackfillCheckpoints(): BackfillCheckpointStore & {
  readonly saves: () => number;
  readonly last: () => BackfillProgress | undefined;
} {
  let checkpoint: Checkpoint = { position: undefined };
  let saves = 0;
  return {
    saves: () => saves,
    last: () => checkpoint.backfill,
    load: () => Promise.resolve(checkpoint),
    save: (next) => {
      saves++;
      checkpoint = next.backfill ? next : { ...checkpoint, position: next.position };
      return Promise.resolve();
    },
    saveBackfill: (backfill) => {
      saves++;
      checkpoint = { ...checkpoint, backfill };
      return Promise.resolve();
    },
  };
}
