import { setTimeout as sleep } from 'node:timers/promises';
import { MongoClient, type Document } from 'mongodb';
import { peerContext, startPeers } from '../../scripts/peers/lib.js';
import { selectedPeers } from '../../scripts/peers/registry.js';
import { bigQueryConnection, startArchiver } from '../app/archiver.js';
import { createBigQueryClients } from '../bigquery/client.js';
import { loadBootstrapConfig } from '../config/bootstrap.js';
import { createLogger } from '../observability/logger.js';
import { EXIT } from './common.js';

const DATASET = 'acquisitions';
const TABLE = 'facebook_ad_cpta';
const SETTINGS_DATABASE = 'archiver';
const WAIT_MS = 60_000;

/** The original README's example settings document, with `tracking_code` as the primary key. */
const SETTINGS = {
  _id: 'facebook_ad_cpta',
  mongo_database: 'bidding',
  mongo_collection: 'ad_cpta',
  bigquery_table: TABLE,
  backfill_full_collection: true,
  columns: [
    { name: 'tracking_code', type: 'INTEGER', mongo_field: 'tracking_code', primary_key: true },
    {
      name: 'midnight_to_timestamp',
      type: 'RECORD',
      mongo_field: 'midnight_to_timestamp',
      fields: [
        { name: 'cpta', type: 'FLOAT' },
        { name: 'activations', type: 'INTEGER' },
        { name: 'spend', type: 'FLOAT' },
        { name: 'date_start', type: 'STRING' },
        { name: 'ad_spend_id', type: 'STRING' },
      ],
    },
    { name: 'created_on_timestamp', type: 'FLOAT', mongo_field: 'created_on_timestamp' },
    {
      name: 'lifetime_to_timestamp',
      type: 'RECORD',
      mongo_field: 'lifetime_to_timestamp',
      fields: [
        { name: 'cpta', type: 'FLOAT' },
        { name: 'activations', type: 'INTEGER' },
        { name: 'spend', type: 'FLOAT' },
      ],
    },
  ],
};

function adDocument(i: number, trackingCode: number): Document {
  const activations = 10 + i;
  const spend = 25 + i * 3.5;
  return {
    tracking_code: trackingCode,
    midnight_to_timestamp: {
      cpta: Number((spend / activations).toFixed(2)),
      activations,
      spend,
      date_start: `2018-05-${String((i % 28) + 1).padStart(2, '0')}`,
      ad_spend_id: `as_${1000 + i}`,
    },
    created_on_timestamp: 1_525_132_800 + i * 3_600,
    lifetime_to_timestamp: { cpta: 2.5, activations: activations * 4, spend: spend * 4 },
    campaign: i % 2 === 0 ? 'spring' : 'summer',
  };
}

function step(text: string): void {
  console.log(`\n== ${text}`);
}

/**
 * Starts the local stand-ins, seeds `bidding.ad_cpta`, archives it into `facebook_ad_cpta` with a backfill,
 * changes the collection while the archiver runs, prints what landed in BigQuery, and stops everything.
 */
export async function demoCommand(): Promise<number> {
  step('starting the local stand-ins for MongoDB and BigQuery (installed on first use)');
  const peers = await startPeers(
    selectedPeers(),
    peerContext((m) => {
      console.log(`   ${m}`);
    }),
  );
  const env = peers.env;
  const mongo = new MongoClient(env.MBA_TEST_MONGODB_URI ?? '');
  const controller = new AbortController();
  try {
    await mongo.connect();
    const ads = mongo.db('bidding').collection('ad_cpta');
    await ads.deleteMany({});
    step('seeding bidding.ad_cpta with 8 documents and the settings document of the original README');
    await ads.insertMany([1, 2, 3, 4, 5, 6, 7, 8].map((i) => adDocument(i, 48_200 + (i % 4))));
    const settings = mongo.db(SETTINGS_DATABASE).collection<{ _id: string }>('bigquery_archiver_settings');
    await settings.deleteMany({});
    await settings.insertOne(SETTINGS);

    const config = loadBootstrapConfig({
      path: '/nonexistent/config.json',
      env: {
        MONGO_CLIENT: env.MBA_TEST_MONGODB_URI,
        BIGQUERY_PROJECT: env.MBA_TEST_BIGQUERY_PROJECT,
        BIGQUERY_DATASET: DATASET,
        SETTINGS_DATABASE,
        SETTINGS_POLL_INTERVAL_MS: '1000',
        BIGQUERY_EMULATOR_ENDPOINT: env.MBA_TEST_BIGQUERY_API_ENDPOINT,
        BIGQUERY_EMULATOR_GRPC: `${env.MBA_TEST_BIGQUERY_GRPC_HOST ?? ''}:${env.MBA_TEST_BIGQUERY_GRPC_PORT ?? ''}`,
        BIGQUERY_EMULATOR_KIND: env.MBA_TEST_BIGQUERY_PEER,
        METRICS_PORT: '0',
        LOG_LEVEL: process.env.LOG_LEVEL ?? 'warn',
      },
    });
    step('starting the archiver (backfill of the collection, then its change stream)');
    const archiver = await startArchiver(
      config,
      createLogger({ level: config.LOG_LEVEL }),
      controller.signal,
    );
    await waitFor(
      () => archiver.supervisor.ready().detail[SETTINGS._id] === 'streaming',
      'the mapping to stream',
    );

    step('changing the collection while the archiver runs: 2 inserts, 3 updates, 1 replace, 2 deletes');
    await ads.insertMany([adDocument(9, 48_209), adDocument(10, 48_210)]);
    await ads.updateMany({ tracking_code: 48_201 }, { $inc: { 'midnight_to_timestamp.spend': 100 } });
    await ads.updateOne({ tracking_code: 48_210 }, { $set: { 'lifetime_to_timestamp.cpta': 9.75 } });
    await ads.replaceOne({ tracking_code: 48_209 }, adDocument(42, 48_209));
    await ads.deleteMany({ tracking_code: 48_202 });

    const clients = await createBigQueryClients(bigQueryConnection(config));
    const query = async (sql: string) => (await clients.bigquery.query({ query: sql }))[0] as Document[];
    const table = (name: string) => `\`${config.BIGQUERY_PROJECT}.${DATASET}.${name}\``;
    // Wait until the view holds exactly what MongoDB holds: every document, with its current values.
    const current = (await ads.find({}).toArray())
      .map(
        (d) =>
          `${String(d._id)}:${String((d.midnight_to_timestamp as Document).spend)}:${String((d.lifetime_to_timestamp as Document).cpta)}`,
      )
      .sort();
    const expected = current.length;
    await waitFor(async () => {
      const rows = await query(
        `SELECT _doc_id, midnight_to_timestamp.spend AS spend, lifetime_to_timestamp.cpta AS cpta FROM ${table(`${TABLE}_view`)}`,
      );
      const archived = rows.map((r) => `${String(r._doc_id)}:${String(r.spend)}:${String(r.cpta)}`).sort();
      return JSON.stringify(archived) === JSON.stringify(current);
    }, 'the view to match the collection');

    const [history] = await query(`SELECT COUNT(*) AS n FROM ${table(TABLE)}`);
    step(`history table ${TABLE}: ${String(history?.n)} rows (every version of every document)`);
    console.table(
      await query(
        `SELECT operationType, tracking_code, midnight_to_timestamp.spend AS spend, _seq FROM ${table(TABLE)} ORDER BY _seq`,
      ),
    );
    step(`${TABLE}_view: the current state, ${expected} documents as in MongoDB`);
    console.table(
      await query(
        `SELECT _doc_id, tracking_code, midnight_to_timestamp.spend AS spend, lifetime_to_timestamp.cpta AS lifetime_cpta, operationType FROM ${table(`${TABLE}_view`)} ORDER BY tracking_code, _doc_id`,
      ),
    );
    step(`${TABLE}_latest_view: the latest document per tracking_code (the primary key)`);
    console.table(
      await query(
        `SELECT tracking_code, midnight_to_timestamp.spend AS spend, operationType FROM ${table(`${TABLE}_latest_view`)} ORDER BY tracking_code`,
      ),
    );
    await clients.close();
    step('stopping the archiver and the stand-ins');
    controller.abort();
    await archiver.done;
    return EXIT.ok;
  } finally {
    controller.abort();
    await mongo.close();
    await peers.stop();
  }
}

async function waitFor(check: () => boolean | Promise<boolean>, what: string): Promise<void> {
  const deadline = Date.now() + WAIT_MS;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(250);
  }
}
