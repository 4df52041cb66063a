// Issue 14, must-show 1 (verify --repair): `mongo-bigquery-archiver verify --repair` as an operator runs it,
// against a daemon streaming a mapping on the peers. History rows of some documents are deleted and bogus rows
// for ids MongoDB never had are inserted directly in BigQuery; the command reports them, the daemon copies
// only the ranges that differ again, and the view equals the collection, with far fewer rows written than a
// full copy.
import { randomBytes } from 'node:crypto';
import { MongoClient, type Collection, type Document } from 'mongodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type BigQueryClients } from '../../../src/bigquery/client.js';
import { EXIT } from '../../../src/cli/common.js';
import { docIdString } from '../../../src/transform/values.js';
import { emulatorClients } from '../support/bigquery-clients.js';
import {
  daemonEnv,
  SETTINGS_COLLECTION,
  runCli,
  spawnDaemon,
  viewMatchesCollection,
  waitForState,
  type DaemonProcess,
  type Item,
} from '../support/daemon.js';

const suffix = randomBytes(3).toString('hex');
const DATASET = `vrepair_${suffix}`;
const SETTINGS_DB = `archiver_vrepair_${suffix}`;
const DB = `vrepairdb_${suffix}`;
const SEEDED = 2_000;

const env = (): NodeJS.ProcessEnv => ({
  ...daemonEnv(DATASET, SETTINGS_DB),
  BIGQUERY_WRITER: 'insert-all',
  // The verifier waits for the checkpoint to pass its reads; an idle stream saves its position this often.
  IDLE_CHECKPOINT_INTERVAL_MS: '1000',
});

let mongo: MongoClient;
let clients: BigQueryClients;
let daemon: DaemonProcess | undefined;
let items: Collection<Item>;

interface Ids {
  count: number;
  ids: string[];
}
interface Report {
  missing: Ids;
  extra: Ids;
  differing: Ids;
  differingRanges: unknown[];
  rangesChecked: number;
}
interface Outcome {
  before: Report;
  repair?: { ranges: unknown[]; result: { documents: number; deletes: number } | null; queued: boolean };
  after: Report | null;
}

async function verifyRepairCli(args: readonly string[]): Promise<{ code: number | null; outcome: Outcome }> {
  const { code, stdout } = await runCli(['verify', 'items', '--repair', '--json', ...args], env(), {
    stderr: 'inherit',
  });
  return { code, outcome: (stdout ? JSON.parse(stdout) : {}) as Outcome };
}

const target = () => ({
  mongo,
  clients,
  db: DB,
  collection: 'items',
  dataset: DATASET,
  table: 'items',
  fields: ['n', 'label'],
});

beforeAll(async () => {
  mongo = new MongoClient(process.env.MBA_TEST_MONGODB_URI ?? '');
  await mongo.connect();
  clients = await emulatorClients();
  items = mongo.db(DB).collection<Item>('items');
  await items.insertMany(
    Array.from({ length: SEEDED }, (_, i) => ({ _id: i, n: i, label: `seed-${String(i)}` })),
  );
  await mongo
    .db(SETTINGS_DB)
    .collection<{ _id: string } & Document>(SETTINGS_COLLECTION)
    .insertOne({
      _id: 'items',
      mongo_database: DB,
      mongo_collection: 'items',
      bigquery_table: 'items',
      backfill_full_collection: true,
      columns: [
        { name: '_id', type: 'STRING', mongo_field: '_id' },
        { name: 'n', type: 'INTEGER' },
        { name: 'label', type: 'STRING' },
      ],
    });
  daemon = spawnDaemon(env());
  await waitForState(mongo, SETTINGS_DB, 'items', ['streaming'], 120_000);
  await viewMatchesCollection(target());
}, 180_000);

afterAll(async () => {
  daemon?.child.kill('SIGKILL');
  await clients.bigquery
    .dataset(DATASET)
    .delete({ force: true })
    .catch(() => undefined);
  await clients.close();
  await mongo.close();
});

describe('verify --repair against a streaming daemon', () => {
  it('reports the tampered ids, has the daemon copy only the differing ranges, and ends equal', async () => {
    const id = (n: number) => docIdString(n);
    const table = `\`${clients.projectId}.${DATASET}.items\``;
    // Two corners of the id space: documents 5 and 6 lose their history; ids MongoDB never had appear.
    await clients.bigquery.query({ query: `DELETE FROM ${table} WHERE _doc_id IN ('${id(5)}', '${id(6)}')` });
    const bogus = (n: number) => {
      const docId = id(n);
      return {
        insertId: `bogus-${docId}`,
        json: {
          _id: docId,
          n,
          label: 'bogus',
          _doc_id: docId,
          _seq: '0000000000000001',
          _event_id: `bogus-${docId}`,
          operationType: 'insert',
          _cluster_time: new Date().toISOString(),
          time_archived: new Date().toISOString(),
          _unmapped: null,
        },
      };
    };
    await clients.bigquery
      .dataset(DATASET)
      .table('items')
      .insert([bogus(3_981), bogus(-7)], { raw: true });

    const { code, outcome } = await verifyRepairCli([
      '--ranges',
      '8',
      '--settle-timeout',
      '60',
      '--repair-timeout',
      '240',
    ]);
    expect(outcome.before.missing.ids).toEqual([id(5), id(6)].sort());
    expect(outcome.before.extra.ids).toEqual([id(-7), id(3_981)].sort());
    expect(outcome.before.differing.count).toBe(0);
    expect(outcome.repair?.queued).toBe(false);
    const written = (outcome.repair?.result?.documents ?? 0) + (outcome.repair?.result?.deletes ?? 0);
    expect(outcome.repair?.result?.deletes).toBe(2);
    // Only the differing ranges: at most two of eight ranges' documents, against SEEDED for a full copy.
    expect(outcome.repair?.ranges.length).toBeLessThanOrEqual(2);
    expect(written).toBeLessThan(SEEDED / 2);
    process.stdout.write(
      `verify --repair wrote ${String(written)} rows over ${String(outcome.repair?.ranges.length)} ranges; a full copy writes ${String(SEEDED)}\n`,
    );
    expect(outcome.after?.missing.count).toBe(0);
    expect(outcome.after?.extra.count).toBe(0);
    expect(outcome.after?.differing.count).toBe(0);
    expect(code).toBe(EXIT.ok);
    await viewMatchesCollection(target());
  }, 400_000);
});
