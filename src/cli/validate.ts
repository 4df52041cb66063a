import { connectMongo, bigQueryConnection } from '../app/archiver.js';
import { createBigQueryClients } from '../bigquery/client.js';
import { type BootstrapConfig } from '../config/bootstrap.js';
import { parseMappingSettings, settingsIdString } from '../config/settings.js';
import { SettingsError } from '../errors.js';
import { scrubText } from '../observability/logger.js';
import { EXIT, loadConfig, type GlobalOptions } from './common.js';

/** What `validate` asks of MongoDB and BigQuery: the daemon's own clients, or fakes in tests. */
export interface ValidateProbes {
  /** Pings MongoDB and reads every settings document. */
  readonly mongo: (config: BootstrapConfig) => Promise<readonly Readonly<Record<string, unknown>>[]>;
  /** Asks BigQuery whether the dataset exists. */
  readonly bigquery: (config: BootstrapConfig) => Promise<boolean>;
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
  bigquery: async (config) => {
    const clients = await createBigQueryClients(bigQueryConnection(config));
    try {
      const [exists] = await clients.bigquery.dataset(config.BIGQUERY_DATASET).exists();
      return exists;
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
  try {
    const docs = await probes.mongo(config);
    // The connection string comes last: its secrets are cut up to the end of the line.
    say(`mongodb: ok, reached ${config.MONGO_CLIENT}`);
    for (const doc of docs) {
      try {
        const settings = parseMappingSettings(doc);
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
    say(`mongodb: failed: ${messageOf(error)}`);
  }
  try {
    const exists = await probes.bigquery(config);
    say(`bigquery: ok (dataset ${config.BIGQUERY_DATASET} ${exists ? 'exists' : 'will be created'})`);
  } catch (error) {
    failures++;
    say(`bigquery: failed: ${messageOf(error)}`);
  }
  return failures === 0 ? EXIT.ok : EXIT.failure;
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
