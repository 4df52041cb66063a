import { type Document } from 'mongodb';
import { connectMongo } from '../app/archiver.js';
import { settingsIdString } from '../config/settings.js';
import { MongoLeaseStore } from '../mongodb/lease-store.js';
import { isDocument } from '../transform/bson-kind.js';
import { EXIT, loadConfig, type GlobalOptions } from './common.js';

function field(doc: Document | undefined, key: string): unknown {
  return doc?.[key];
}

/**
 * One line per mapping: state, lag, last checkpoint, the instance holding its lease, last failure (read from
 * the settings documents and the leases).
 */
export async function statusCommand(options: GlobalOptions): Promise<number> {
  const config = loadConfig(options);
  const mongo = connectMongo(config);
  try {
    await mongo.connect();
    const docs = await mongo
      .db(config.SETTINGS_DATABASE)
      .collection(config.SETTINGS_COLLECTION)
      .find({})
      .toArray();
    const holders = await new MongoLeaseStore(
      mongo.db(config.SETTINGS_DATABASE).collection(`${config.SETTINGS_COLLECTION}_leases`),
    ).holders();
    if (docs.length === 0)
      console.log(`no mappings in ${config.SETTINGS_DATABASE}.${config.SETTINGS_COLLECTION}`);
    for (const doc of docs) {
      const status: unknown = doc.status;
      const s = isDocument(status) ? status : undefined;
      const lag = field(s, 'lagSeconds');
      const checkpoint = field(s, 'lastCheckpointAt');
      const failure = field(doc, 'lastFailure');
      console.log(
        [
          settingsIdString(doc._id),
          `${String(doc.mongo_database)}.${String(doc.mongo_collection)} -> ${String(doc.bigquery_table)}`,
          `state=${typeof field(s, 'state') === 'string' ? String(field(s, 'state')) : 'unknown'}`,
          `lag=${typeof lag === 'number' ? `${lag}s` : '-'}`,
          `checkpoint=${checkpoint instanceof Date ? checkpoint.toISOString() : '-'}`,
          `owner=${holders.get(settingsIdString(doc._id))?.owner ?? '-'}`,
          `lastFailure=${typeof failure === 'string' ? JSON.stringify(failure) : '-'}`,
        ].join('  '),
      );
    }
    return EXIT.ok;
  } finally {
    await mongo.close();
  }
}
