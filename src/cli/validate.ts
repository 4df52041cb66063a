import { connectMongo, bigQueryConnection } from '../app/archiver.js';
import { createBigQueryClients } from '../bigquery/client.js';
import { redactUri } from '../config/bootstrap.js';
import { historyTableConflicts } from '../app/schema-check.js';
import { parseMappingSettings, settingsIdString, type MappingSettings } from '../config/settings.js';
import { SettingsError } from '../errors.js';
import { EXIT, loadConfig, type GlobalOptions } from './common.js';

/** Checks the configuration, every settings document, and that MongoDB and BigQuery answer. */
export async function validateCommand(options: GlobalOptions): Promise<number> {
  const config = loadConfig(options);
  console.log('config: ok');
  let failures = 0;
  const mappings: MappingSettings[] = [];
  const mongo = connectMongo(config);
  try {
    await mongo.connect();
    await mongo.db('admin').command({ ping: 1 });
    console.log(`mongodb: ok (${redactUri(config.MONGO_CLIENT)})`);
    const docs = await mongo
      .db(config.SETTINGS_DATABASE)
      .collection(config.SETTINGS_COLLECTION)
      .find({})
      .toArray();
    for (const doc of docs) {
      try {
        const settings = parseMappingSettings(doc);
        mappings.push(settings);
        const warnings = settings.warnings.length > 0 ? ` (warnings: ${settings.warnings.join('; ')})` : '';
        console.log(`settings ${settings.id}: ok${warnings}`);
      } catch (error) {
        if (!(error instanceof SettingsError)) throw error;
        failures++;
        console.log(`settings ${settingsIdString(doc._id)}: invalid: ${error.issues.join('; ')}`);
      }
    }
  } catch (error) {
    failures++;
    console.log(`mongodb: failed: ${error instanceof Error ? redactUri(error.message) : String(error)}`);
  } finally {
    await mongo.close();
  }
  try {
    const clients = await createBigQueryClients(bigQueryConnection(config));
    try {
      const [exists] = await clients.bigquery.dataset(config.BIGQUERY_DATASET).exists();
      console.log(
        `bigquery: ok (dataset ${config.BIGQUERY_DATASET} ${exists ? 'exists' : 'will be created'})`,
      );
      // BigQuery cannot retype a column: the daemon would write with the table's types instead.
      for (const settings of mappings) {
        const conflicts = await historyTableConflicts(clients, config.BIGQUERY_DATASET, settings);
        if (conflicts.length === 0) continue;
        failures++;
        console.log(
          `settings ${settings.id}: columns differ from table ${settings.bigqueryTable}: ${conflicts.join('; ')}`,
        );
      }
    } finally {
      await clients.close();
    }
  } catch (error) {
    failures++;
    console.log(`bigquery: failed: ${error instanceof Error ? error.message : String(error)}`);
  }
  return failures === 0 ? EXIT.ok : EXIT.failure;
}
