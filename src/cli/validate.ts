import { connectMongo, bigQueryConnection } from '../app/archiver.js';
import { historyTableConflicts } from '../app/schema-check.js';
import { createBigQueryClients } from '../bigquery/client.js';
import { type BootstrapConfig } from '../config/bootstrap.js';
import { parseMappingSettings } from '../config/settings.js';
import { settingsIdString, type MappingSettings } from '../core/settings.js';
import { SettingsError, errorMessage } from '../errors.js';
import { scrubText } from '../observability/logger.js';
import { EXIT, loadConfig, type GlobalOptions } from './common.js';

/** What `validate` asks of MongoDB and BigQuery: the daemon's own clients, or fakes in tests. */
export interface ValidateProbes {
  /** Pings MongoDB and reads every settings document. */
  readonly mongo: (config: BootstrapConfig) => Promise<readonly Readonly<Record<string, unknown>>[]>;
  /**
   * Asks BigQuery whether the dataset exists, and where each mapping's `columns` differ from its existing
   * history table (one line per difference; read only).
   */
  readonly bigquery: (
    config: BootstrapConfig,
    mappings: readonly MappingSettings[],
  ) => Promise<{ readonly exists: boolean; readonly conflicts: ReadonlyMap<string, readonly string[]> }>;
}

export const LIVE_PROBES: ValidateProbes = {
  mongo: async (config) => {
    const mongo = connectMongo(config);
    try {
      await mongo.connect();
      await mongo.db('admin').command({ ping: 1 });
      return await mongo
        .db(config.SETTINGS_DATABASE)
        .collection(config.SETTINGS_COLLECTION)
        .find({})
        .toArray();
    } finally {
      await mongo.close();
    }
  },
  bigquery: async (config, mappings) => {
    const clients = await createBigQueryClients(bigQueryConnection(config));
    try {
      const [exists] = await clients.bigquery.dataset(config.BIGQUERY_DATASET).exists();
      const conflicts = new Map<string, readonly string[]>();
      for (const settings of mappings) {
        conflicts.set(settings.id, await historyTableConflicts(clients, config.BIGQUERY_DATASET, settings));
      }
      return { exists, conflicts };
    } finally {
      await clients.close();
    }
  },
};

/**
 * Checks the configuration, every settings document, and that MongoDB and BigQuery answer. Every line goes
 * through the logs' scrubber: the connection string, and any error naming it, may carry secrets.
 */
export async function validateCommand(
  options: GlobalOptions,
  probes: ValidateProbes = LIVE_PROBES,
): Promise<number> {
  const say = (line: string): void => {
    console.log(scrubText(line));
  };
  const config = loadConfig(options);
  say('config: ok');
  let failures = 0;
  const mappings: MappingSettings[] = [];
  try {
    const docs = await probes.mongo(config);
    // The connection string comes last: its secrets are cut up to the end of the line.
    say(`mongodb: ok, reached ${config.MONGO_CLIENT}`);
    for (const doc of docs) {
      try {
        const settings = parseMappingSettings(doc);
        mappings.push(settings);
        const warnings = settings.warnings.length > 0 ? ` (warnings: ${settings.warnings.join('; ')})` : '';
        say(`settings ${settings.id}: ok${warnings}`);
      } catch (error) {
        if (!(error instanceof SettingsError)) throw error;
        failures++;
        say(`settings ${settingsIdString(doc._id)}: invalid: ${error.issues.join('; ')}`);
      }
    }
  } catch (error) {
    failures++;
    say(`mongodb: failed: ${errorMessage(error)}`);
  }
  try {
    const { exists, conflicts } = await probes.bigquery(config, mappings);
    say(`bigquery: ok (dataset ${config.BIGQUERY_DATASET} ${exists ? 'exists' : 'will be created'})`);
    // BigQuery cannot retype a column: the daemon would write with the table's types instead.
    for (const settings of mappings) {
      const differences = conflicts.get(settings.id) ?? [];
      if (differences.length === 0) continue;
      failures++;
      say(
        `settings ${settings.id}: columns differ from table ${settings.bigqueryTable}: ${differences.join('; ')}`,
      );
    }
  } catch (error) {
    failures++;
    say(`bigquery: failed: ${errorMessage(error)}`);
  }
  return failures === 0 ? EXIT.ok : EXIT.failure;
}
