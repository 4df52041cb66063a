// Issue 14, must-show 1 (the verify half): `mongo-bigquery-archiver verify` as an operator runs it, against a
// daemon streaming a mapping on the peers. With a writer inserting, updating and deleting during the verify,
// it reports nothing; after history rows are deleted and bogus ones inserted directly in BigQuery, and
// documents are changed in MongoDB while the daemon is stopped, it reports exactly those ids, each in its list.
import { randomBytes } from 'node:crypto';
import { MongoClient, type Collection, type Document } from 'mongodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type BigQueryClients } from '../../../src/bigquery/client.js';
import { EXIT } from '../../../src/cli/common.js';
import { docIdString } from '../../../src/transform/values.js';
import { emulatorClients } from '../support/bigquery-clients.js';
import {
  daemonEnv,
  randomWorkload,
  SETTINGS_COLLECTION,
  runCli,
  spawnDaemon,
  viewMatchesCollection,
  waitForState,
  type DaemonProcess,
  type Item,
} from '../support/daemon.js';

const suffix = randomBytes(3).toString('hex');
const DATASET = `verify_${suffix}`;
const SETTINGS_DB = `archiver_verify_${suffix}`;
const DB = `verifydb_${suffix}`;
const SEEDED = 400;

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

interface Report {
  rangesChecked: number;
  documentsChecked: number;
  missing: { count: number; ids: string[] };
  extra: { count: number; ids: string[] };
  differing: { count: number; ids: string[] };
  differingRanges: unknown[];
  bytesScanned: number;
  settled?: boolean;
}

/** `mongo-bigquery-archiver verify items --json <args>` as its own process. */
async function verifyCli(
  args: readonly string[],
): Promise<{ code: number | null; report: Report; stderr: string }> {
  const { code, stdout, stderr } = await runCli(['verify', 'items', '--json', ...args], env());
  return { code, report: (stdout ? JSON.parse(stdout) : {}) as Report, stderr };
}

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
  await viewMatchesCollection({
    mongo,
    clients,
    db: DB,
    collection: 'items',
    dataset: DATASET,
    table: 'items',
    fields: ['n', 'label'],
  });
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

const table = (): string => `\`${clients.projectId}.${DATASET}.items\``;

describe('verify against a streaming daemon', () => {
  it('reports no difference while a writer inserts, updates and deletes during the verify', async () => {
    const stop = new AbortController();
    const workload = randomWorkload({ collections: [items], seeded: SEEDED, pauseMs: 20 }, stop.signal);
    try {
      const { code, report, stderr } = await verifyCli(['--ranges', '4', '--settle-timeout', '60']);
      expect(stderr).toBe('');
      expect(report.missing).toEqual({ count: 0, ids: [] });
      expect(report.extra).toEqual({ count: 0, ids: [] });
      expect(report.differing).toEqual({ count: 0, ids: [] });
      expect(report.rangesChecked).toBe(4);
      expect(report.documentsChecked).toBeGreaterThan(SEEDED / 2);
      expect(report.settled).toBeUndefined();
      expect(code).toBe(EXIT.ok);
    } finally {
      stop.abort();
      await workload;
    }
  }, 180_000);

  it('names exactly the documents whose history was tampered with in BigQuery or changed in MongoDB while the daemon was stopped', async () => {
    await viewMatchesCollection({
      mongo,
      clients,
      db: DB,
      collection: 'items',
      dataset: DATASET,
      table: 'items',
      fields: ['n', 'label'],
    });
    const existing = (
      await items
        .find({}, { projection: { _id: 1 } })
        .sort({ _id: 1 })
        .toArray()
    ).map((d) => d._id);
    const [a1, a2, b1, c1, c2, c3] = [
      existing[3],
      existing[150],
      existing[60],
      existing[10],
      existing[200],
      existing[300],
    ];
    if ([a1, a2, b1, c1, c2, c3].some((id) => id === undefined)) throw new Error('too few documents left');
    const id = (n: number | undefined) => docIdString(n);

    // In BigQuery: the history of a1 and a2 deleted (missing), a row for an id MongoDB never had (extra),
    // and a newer row with other content for b1 (differing).
    await clients.bigquery.query({
      query: `DELETE FROM ${table()} WHERE _doc_id IN ('${id(a1)}', '${id(a2)}')`,
    });
    const bogus = (docId: string, n: number) => ({
      _id: docId,
      n,
      label: 'bogus',
      _doc_id: docId,
      _seq: 'zzzz',
      _event_id: `bogus-${docId}`,
      operationType: 'update',
      _cluster_time: new Date().toISOString(),
      time_archived: new Date().toISOString(),
      _unmapped: null,
    });
    await clients.bigquery
      .dataset(DATASET)
      .table('items')
      .insert(
        [bogus(id(9_999_999), 1), bogus(id(b1), -1)].map((json) => ({ insertId: json._event_id, json })),
        { raw: true },
      );

    // In MongoDB, with the daemon stopped: c1 updated (differing), c2 deleted (extra), a new c3 + 1e6
    // inserted (missing).
    daemon?.child.kill('SIGTERM');
    await daemon?.exited;
    daemon = undefined;
    await items.updateOne({ _id: c1 ?? -1 }, { $set: { label: 'changed while stopped' } });
    await items.deleteOne({ _id: c2 ?? -1 });
    const inserted = (c3 ?? 0) + 1_000_000_000;
    await items.insertOne({ _id: inserted, n: 1, label: 'inserted while stopped' });

    const { code, report } = await verifyCli(['--ranges', '4', '--settle-timeout', '3']);
    expect(report.missing.ids).toEqual([id(a1), id(a2), id(inserted)].sort());
    expect(report.extra.ids).toEqual([id(9_999_999), id(c2)].sort());
    expect(report.differing.ids).toEqual([id(b1), id(c1)].sort());
    expect(report.settled).toBe(false);
    expect(report.bytesScanned).toBeGreaterThanOrEqual(0);
    expect(code).toBe(EXIT.differences);
  }, 180_000);
});
