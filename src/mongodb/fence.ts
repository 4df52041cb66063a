import { type Collection, type Document, type UpdateOptions } from 'mongodb';
import { FencedOutError } from '../errors.js';
import { isDocument } from '../base/bson-kind.js';
import { withSignal } from './bounded.js';

/**
 * Where a settings document keeps the newest fencing token its mapping's writes carried. It is under
 * `status`, a field only the service writes, so keeping it up to date never restarts the mapping.
 */
export const FENCE_FIELD = 'status.fence';

/**
 * The filter of a write by the owner of fencing token `fence`: it matches only while no newer owner has
 * written. Undefined `fence` (no leases in use) matches the document alone.
 */
export function fencedFilter(id: unknown, fence: number | undefined): Document {
  if (fence === undefined) return { _id: id };
  return { _id: id, $or: [{ [FENCE_FIELD]: { $exists: false } }, { [FENCE_FIELD]: { $lte: fence } }] };
}

/** The `$set` of a fenced write: its fields, plus the token, so later writes of older owners fail. */
export function fencedSet(set: Document, fence: number | undefined): Document {
  return fence === undefined ? set : { ...set, [FENCE_FIELD]: fence };
}

/** A fencing token as stored (a number, or an int64 the driver hands over as a bigint); else undefined. */
export function tokenValue(value: unknown): number | undefined {
  return typeof value === 'number' || typeof value === 'bigint' ? Number(value) : undefined;
}

/** The token stored in a settings document, if any. */
export function storedFence(doc: Document | null): number | undefined {
  const status: unknown = doc?.status;
  return tokenValue(isDocument(status) ? status.fence : undefined);
}

/**
 * Runs a fenced `updateOne` and turns "nothing matched although the document exists" into FencedOutError:
 * a newer owner wrote since. A document that is gone (settings removed) is not an error: nothing to write.
 */
export async function fencedUpdate(
  collection: Collection,
  id: unknown,
  fence: number | undefined,
  update: Document,
  signal?: AbortSignal,
): Promise<void> {
  const result = await collection.updateOne(
    fencedFilter(id, fence),
    update,
    withSignal<UpdateOptions>({}, signal),
  );
  if (result.matchedCount > 0 || fence === undefined) return;
  const current = await collection.findOne({ _id: id } as Document, {
    projection: { status: 1 },
    ...(signal && { signal }),
  });
  if (current === null) return;
  throw new FencedOutError(
    `another instance owns this mapping now (fencing token ${String(storedFence(current))} is newer than ours, ${fence}); this instance stops it`,
  );
}
