import { ObjectId } from 'bson';
import { type Collection, type Document } from 'mongodb';
import { within } from '../core/deadline.js';
import { docIdString } from '../transform/values.js';
import { DEFAULT_MONGO_OPERATION_TIMEOUT_MS } from './bounded.js';
import { decodeId } from './checkpoint-store.js';
import { mongoBoundary } from './error-mapping.js';
import { PRIMARY_MAJORITY_READ } from './snapshot-reader.js';

/** Ids asked about in one query: an `$in` of this many stays far below the 16 MB command limit. */
export const DEFAULT_EXISTING_IDS_BATCH = 1_000;

const OBJECT_ID_HEX = /^[0-9a-f]{24}$/;

/**
 * The `_id` value of a `_doc_id` (the inverse of `docIdString`): 24 hex digits are an ObjectId (every other
 * id is canonical Extended JSON, which never looks like that: a string id is quoted), anything else is read
 * back from its Extended JSON, numbers promoted as the driver would hand them over.
 */
export function docIdValue(docId: string): unknown {
  if (OBJECT_ID_HEX.test(docId)) return ObjectId.createFromHexString(docId);
  return decodeId(`{"id":${docId}}`);
}

/**
 * Which of some documents exist in a collection now, by `_id` only (a covered query on the `_id` index):
 * the check of a repair's delete pass. It reads the primary, majority-committed (PRIMARY_MAJORITY_READ),
 * whatever the connection string says: the repair's snapshot start is the primary's majority time, so a lagging
 * secondary would miss a document inserted before it (a delete row for a live document).
 */
export class MongoExistingIds {
  readonly #collection: Collection;
  readonly #batch: number;

  constructor(collection: Collection, options: { readonly batch?: number } = {}) {
    this.#collection = collection;
    this.#batch = options.batch ?? DEFAULT_EXISTING_IDS_BATCH;
  }

  /** The `_doc_id`s of `docIds` whose document the collection holds when asked. */
  existing(docIds: readonly string[], stop: AbortSignal): Promise<ReadonlySet<string>> {
    return mongoBoundary(async () => {
      const found = new Set<string>();
      for (let i = 0; i < docIds.length; i += this.#batch) {
        stop.throwIfAborted();
        const signal = within(stop, DEFAULT_MONGO_OPERATION_TIMEOUT_MS);
        const ids = docIds.slice(i, i + this.#batch).map(docIdValue);
        const cursor = this.#collection.find({ _id: { $in: ids } } as Document, {
          ...PRIMARY_MAJORITY_READ,
          projection: { _id: 1 },
          signal,
        });
        // Integral numbers of any BSON type are one key (docIdString): 1.0 found for 1 is 1.
        for await (const doc of cursor) found.add(docIdString(doc._id));
      }
      return found;
    });
  }
}
