import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { MongoClient, type Document } from 'mongodb';
import { peerContext, startPeers } from '../../scripts/peers/lib.js';
import { peersRunRoot } from '../../scripts/peers/paths.js';
import { selectedPeers } from '../../scripts/peers/registry.js';
import { bigQueryConnection, startArchiver } from '../app/archiver.js';
import { createBigQueryClients } from '../bigquery/client.js';
import { loadBootstrapConfig } from '../config/bootstrap.js';
import { createLogger } from '../observability/logger.js';
import { EXIT } from './common.js';
import { showStatus } from './status.js';
import { formatTable } from './text-table.js';

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

/** Lines indented under the step they belong to. */
function detail(...lines: readonly string[]): void {
  for (const line of lines) console.log(line === '' ? '' : `   ${line}`);
}

export interface DemoOptions {
  /**
   * Leave the stand-ins running (with what was archived) after the demo, and print how to connect to them
   * and how to stop them.
   */
  readonly keep?: boolean;
}

/** The metrics the demo shows: the mapping's lag, what it read and wrote, its state. */
const SHOWN_METRICS = [
  'mba_replication_lag_seconds',
  'mba_change_events_total',
  'mba_rows_written_total',
  'mba_backfill_documents_copied_total',
] as const;

/** The lines of the /metrics exposition for `SHOWN_METRICS` (samples only, no HELP or TYPE lines). */
export function shownMetricLines(exposition: string): string[] {
  return exposition
    .split('\n')
    .filter((line) =>
      SHOWN_METRICS.some((name) => line.startsWith(`${name}{`) || line.startsWith(`${name} `)),
    );
}

/**
 * The demo's stand-ins run in a folder of their own under the peers' run folder, so that a test run in the
 * same checkout never takes kept demo stand-ins for its own left-overs.
 */
function demoRunDir(): string {
  return join(peersRunRoot(), 'demo');
}

/**
 * Starts the local stand-ins, seeds `bidding.ad_cpta`, archives it into `facebook_ad_cpta` with a backfill,
 * changes the collection while the archiver runs, prints what landed in BigQuery, the `status` command's
 * view and a few metrics, and stops everything (or, with `keep`, leaves the stand-ins running).
 */
export async function demoCommand(options: DemoOptions = {}): Promise<number> {
  step('starting the local stand-ins for MongoDB and BigQuery (installed on first use)');
  const runDir = demoRunDir();
  mkdirSync(runDir, { recursive: true });
  const peers = await startPeers(selectedPeers(), {
    ...peerContext((m) => {
      detail(m);
    }),
    runDir,
  });
  const env = peers.env;
  const mongo = new MongoClient(env.MBA_TEST_MONGODB_URI ?? '');
  const controller = new AbortController();
  let kept = false;
  try {
    await mongo.connect();
    const ads = mongo.db('bidding').collection('ad_cpta');
    await ads.deleteMany({});
    step('seeding bidding.ad_cpta with 8 documents and the settings document of the original README');
    await ads.insertMany([1, 2, 3, 4, 5, 6, 7, 8].map((i) => adDocument(i, 48_200 + (i % 4))));
    const settings = mongo.db(SETTINGS_DATABASE).collection<{ _id: string }>('bigquery_archiver_settings');
    await settings.deleteMany({});
    await settings.insertOne(SETTINGS);

    // The configuration a user would write: `status` (and `run`, after --keep) read the same file.
    const configFile = join(runDir, 'config.json');
    writeFileSync(
      configFile,
      `${JSON.stringify(
        {
          MONGO_CLIENT: env.MBA_TEST_MONGODB_URI,
          BIGQUERY_PROJECT: env.MBA_TEST_BIGQUERY_PROJECT,
          BIGQUERY_DATASET: DATASET,
          SETTINGS_DATABASE,
          SETTINGS_POLL_INTERVAL_MS: 1_000,
          BIGQUERY_EMULATOR_ENDPOINT: env.MBA_TEST_BIGQUERY_API_ENDPOINT,
          BIGQUERY_EMULATOR_GRPC: `${env.MBA_TEST_BIGQUERY_GRPC_HOST ?? ''}:${env.MBA_TEST_BIGQUERY_GRPC_PORT ?? ''}`,
          BIGQUERY_EMULATOR_KIND: env.MBA_TEST_BIGQUERY_PEER,
        },
        null,
        2,
      )}\n`,
    );
    const config = loadBootstrapConfig({
      path: configFile,
      explicitPath: true,
      env: {
        METRICS_PORT: '0',
        LOG_LEVEL: process.env.LOG_LEVEL ?? 'warn',
        LOG_FORMAT: process.env.LOG_FORMAT,
      },
    });
    step('starting the archiver (backfill of the collection, then its change stream)');
    const archiver = await startArchiver(
      config,
      createLogger({ level: config.LOG_LEVEL, format: config.LOG_FORMAT }),
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
    const versions = await query(
      `SELECT operationType, tracking_code, midnight_to_timestamp.spend AS spend, _seq FROM ${table(TABLE)} ORDER BY _seq`,
    );
    console.log(formatTable(versions, { indent: '   ' }));
    if (!versions.some((row) => row.operationType === 'replace')) {
      detail(
        '',
        'No `replace` row: the MongoDB stand-in reports the replace of tracking_code 48209 as an `update`',
        '(the full document, spend 172). A real MongoDB reports it as `replace`; both are archived alike.',
      );
    }
    step(`${TABLE}_view: the current state, ${expected} documents as in MongoDB`);
    console.log(
      formatTable(
        await query(
          `SELECT _doc_id, tracking_code, midnight_to_timestamp.spend AS spend, lifetime_to_timestamp.cpta AS lifetime_cpta, operationType FROM ${table(`${TABLE}_view`)} ORDER BY tracking_code, _doc_id`,
        ),
        { indent: '   ' },
      ),
    );
    step(`${TABLE}_latest_view: the latest document per tracking_code (the primary key)`);
    console.log(
      formatTable(
        await query(
          `SELECT tracking_code, midnight_to_timestamp.spend AS spend, operationType FROM ${table(`${TABLE}_latest_view`)} ORDER BY tracking_code`,
        ),
        { indent: '   ' },
      ),
    );
    await clients.close();

    const statusCommandLine = `${CLEAN_ENV}npx tsx src/main.ts --config ${configFile} status`;
    step(`what \`status\` says (${statusCommandLine})`);
    // From the demo's own configuration: a MONGO_CLIENT exported for a real deployment must not be read.
    await showStatus(config, {}, { write: (text) => process.stdout.write(text) });
    const metricsUrl = `http://127.0.0.1:${String(archiver.metricsPort)}/metrics`;
    step(`a few lines of ${metricsUrl} (Prometheus)`);
    detail(...shownMetricLines(await (await fetch(metricsUrl)).text()));

    step(
      options.keep
        ? 'stopping the archiver; the stand-ins keep running'
        : 'stopping the archiver and the stand-ins',
    );
    controller.abort();
    await archiver.done;
    if (options.keep) {
      peers.keep();
      kept = true;
      printConnections(env, configFile, runDir);
    }
    printNextSteps();
    return EXIT.ok;
  } finally {
    controller.abort();
    await mongo.close();
    if (!kept) await peers.stop();
  }
}

/** A prefix that runs a command without the caller's configuration keys (the environment wins over the file). */
const CLEAN_ENV = 'env -i PATH="$PATH" HOME="$HOME" ';

/** How to reach the stand-ins left running, run the archiver against them again, and stop them. */
function printConnections(env: Readonly<Record<string, string>>, configFile: string, runDir: string): void {
  const uri = env.MBA_TEST_MONGODB_URI ?? '';
  const endpoint = env.MBA_TEST_BIGQUERY_API_ENDPOINT ?? '';
  const project = env.MBA_TEST_BIGQUERY_PROJECT ?? '';
  const sql = `SELECT tracking_code, midnight_to_timestamp.spend AS spend FROM \`${project}.${DATASET}.${TABLE}_view\``;
  step('the stand-ins are still running');
  detail(
    `MongoDB (MONGO_CLIENT):       ${uri}`,
    `  mongosh '${uri}' --eval 'db.getSiblingDB("bidding").ad_cpta.find()'`,
    `BigQuery emulator (REST API): ${endpoint}  project ${project}, dataset ${DATASET}`,
    `  curl -s -X POST ${endpoint}/bigquery/v2/projects/${project}/queries \\`,
    `    -H 'Content-Type: application/json' \\`,
    `    -d '${JSON.stringify({ query: sql, useLegacySql: false })}'`,
    `The demo's configuration: ${configFile}`,
    `  status:              ${CLEAN_ENV}npx tsx src/main.ts --config ${configFile} status`,
    `  archive again (run): ${CLEAN_ENV}npx tsx src/main.ts --config ${configFile} run`,
    '  (the environment wins over a config file: `env -i` keeps keys exported for a real deployment out)',
    `Stop them: MBA_PEERS_RUN_DIR=${runDir} npm run peers -- stop`,
  );
}

function printNextSteps(): void {
  step('next steps');
  detail(
    'docs/settings.md: every configuration key and every field of a settings document (also as JSON Schemas in schema/).',
    'README.md "Running it": the commands (validate, status, resync, infer-schema).',
    'docs/operations.md: metrics and alerts, logs, status and lag, several replicas, backfills, re-syncs.',
    'docs/deploy.md: the container image and the Kubernetes manifests.',
    'docs/schema.md: how documents become columns, and how the schema evolves.',
    '',
    'To archive a real cluster (a replica set or a sharded cluster: change streams need one):',
    '  1. write config.json with MONGO_CLIENT, BIGQUERY_PROJECT, BIGQUERY_DATASET, SERVICE_ACCOUNT_FILE (or use',
    '     Application Default Credentials) and SETTINGS_DATABASE;',
    '  2. insert one settings document per collection into <SETTINGS_DATABASE>.bigquery_archiver_settings,',
    '     like the one this demo used (`infer-schema <db.collection>` prints columns to start from);',
    '  3. `mongo-bigquery-archiver --config config.json validate`, then `... run`.',
  );
}

async function waitFor(check: () => boolean | Promise<boolean>, what: string): Promise<void> {
  const deadline = Date.now() + WAIT_MS;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(250);
  }
}
