import { type MongoClient } from 'mongodb';
import { type BootstrapConfig } from '../config/bootstrap.js';
import { type SettingsEntry } from '../core/ports.js';
import { ConfigError } from '../errors.js';
import { MongoSettingsStore } from '../mongodb/settings-store.js';

/** How long a command waits for the settings collection to list its documents. */
const LIST_TIMEOUT_MS = 30_000;

/** The settings collection the bootstrap configuration names. */
export function settingsStoreOf(mongo: MongoClient, config: BootstrapConfig): MongoSettingsStore {
  return new MongoSettingsStore(mongo, {
    database: config.SETTINGS_DATABASE,
    collection: config.SETTINGS_COLLECTION,
  });
}

/** The error of a command given a mapping that no settings document has, naming the ones there are. */
export function unknownMappingError(
  config: BootstrapConfig,
  mapping: string,
  entries: readonly SettingsEntry[],
): ConfigError {
  const known = entries.map((e) => e.id).join(', ') || 'none';
  return new ConfigError(
    `no mapping "${mapping}" in ${config.SETTINGS_DATABASE}.${config.SETTINGS_COLLECTION} (mappings: ${known})`,
  );
}

/** The settings document of `mapping` (its `_id` as `status` shows it); a ConfigError when there is none. */
export async function findMappingEntry(
  store: MongoSettingsStore,
  config: BootstrapConfig,
  mapping: string,
): Promise<SettingsEntry> {
  const entries = await store.list(AbortSignal.timeout(LIST_TIMEOUT_MS));
  const entry = entries.find((e) => e.id === mapping);
  if (!entry) throw unknownMappingError(config, mapping, entries);
  return entry;
}
