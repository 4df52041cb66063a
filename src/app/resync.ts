import { findMappingEntry, settingsStoreOf } from './settings-lookup.js';
import { type MongoClient } from 'mongodb';
import { type BootstrapConfig } from '../config/bootstrap.js';
import { recordResyncRequest } from '../mongodb/checkpoint-store.js';

/**
 * Asks the running archiver to copy a mapping's collection again. The request is recorded in the mapping's
 * checkpoint document, where no edit of the settings document can take it back, and `resync_requested_at` is
 * set in the settings document: a configuration change, so the supervisor restarts exactly that mapping,
 * which clears its checkpoint and backfills from a fresh start point; the views converge (the backfill rows
 * sort before every later change). Returns the time of the request.
 */
export async function requestResync(
  mongo: MongoClient,
  config: BootstrapConfig,
  mapping: string,
): Promise<Date> {
  const store = settingsStoreOf(mongo, config);
  const entry = await findMappingEntry(store, config, mapping);
  const at = new Date();
  await recordResyncRequest(store.checkpoints, entry.document._id, at);
  await store.collection.updateOne({ _id: entry.document._id } as Record<string, unknown>, {
    $set: { resync_requested_at: at },
  });
  return at;
}
