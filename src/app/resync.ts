import { type MongoClient } from 'mongodb';
import { type BootstrapConfig } from '../config/bootstrap.js';
import { ConfigError } from '../errors.js';
import { MongoSettingsStore } from '../mongodb/settings-store.js';

/**
 * Asks the running archiver to copy a mapping's collection again: sets `resync_requested_at` in its settings
 * document. That is a configuration change, so the supervisor restarts exactly that mapping, which ignores
 * checkpoints made before the request and backfills from a fresh start point; the views converge (the
 * backfill rows sort before every later change). Returns the time of the request.
 */
export async function requestResync(
  mongo: MongoClient,
  config: BootstrapConfig,
  mapping: string,
): Promise<Date> {
  const store = new MongoSettingsStore(mongo, {
    database: config.SETTINGS_DATABASE,
    collection: config.SETTINGS_COLLECTION,
  });
  const entries = await store.list(AbortSignal.timeout(30_000));
  const entry = entries.find((e) => e.id === mapping);
  if (!entry) {
    const known = entries.map((e) => e.id).join(', ') || 'none';
    throw new ConfigError(
      `no mapping "${mapping}" in ${config.SETTINGS_DATABASE}.${config.SETTINGS_COLLECTION} (mappings: ${known})`,
    );
  }
  const at = new Date();
  await store.collection.updateOne({ _id: entry.document._id } as Record<string, unknown>, {
    $set: { resync_requested_at: at },
  });
  return at;
}
