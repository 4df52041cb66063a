import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { MongoClient, type Document } from 'mongodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startArchiver } from '../../../src/app/archiver.js';
import { type BigQueryClients } from '../../../src/bigquery/client.js';
import { type BootstrapConfig } from '../../../src/config/bootstrap.js';
import { createLogger } from '../../../src/observability/logger.js';
import { docIdString } from '../../../src/transform/values.js';
import { emulatorClients } from '../support/bigquery-clients.js';
import { inProcessConfig, SETTINGS_COLLECTION } from '../support/daemon.js';

const suffix = randomBytes(3).toString('hex');
const DATASET = `scope_${suffix}`;
const SETTINGS_DB = `archiver_scope_${suffix}`;
let mongo: MongoClient;
let clients: BigQueryClients;
let config: BootstrapConfig;

beforeAll(async () => {
  mongo = new MongoClient(process.env.MBA_TEST_MONGODB_URI ?? '');
  await mongo.connect();
  clients = await emulatorClients();
  config = inProcessConfig(DATASET, SETTINGS_DB, 'insert-all');
});

afterAll(async () => {
  await mongo.close();
  await clients.close();
});

interface Item {
  _id: number;
  n: number;
  label: string;
}

/** `<table>_view` as `_doc_id|n|label` lines, sorted. */
async function viewLines(table: string): Promise<string[]> {
  const [rows] = await clients.bigquery.query({
    query: `SELECT _doc_id, n, label FROM \`${clients.projectId}.${DATASET}.${table}_view\``,
  });
  return (rows as Document[]).map((r) => `${String(r._doc_id)}|${String(r.n)}|${String(r.label)}`).sort();
}

/** Waits until the view holds one row per document of the collection, with its current values. */
async function viewMatches(db: string, collection: string, table: string, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const docs = await mongo.db(db).collection<Item>(collection).find({}).toArray();
    const expected = docs.map((d) => `${docIdString(d._id)}|${String(d.n)}|${d.label}`).sort();
    const actual = await viewLines(table).catch(() => []);
    if (JSON.stringify(actual) === JSON.stringify(expected)) return;
    if (Date.now() > deadline) {
      expect(actual).toEqual(expected);
      return;
    }
    await sleep(300);
  }
}

describe('CHANGE_STREAM_SCOPE against the test peer (issue 12)', () => {
  it('database: mongo-java-server cannot open a database-level stream, so the daemon reads per collection, says so once, and the views equal MongoDB', async () => {
    const db = `scope_src_${suffix}`;
    const collections = ['orders', 'refunds'] as const;
    for (const name of collections) {
      await mongo
        .db(db)
        .collection<Item>(name)
        .insertMany(Array.from({ length: 50 }, (_, i) => ({ _id: i, n: i, label: 'seed' })));
      await mongo
        .db(SETTINGS_DB)
        .collection<{ _id: string } & Document>(SETTINGS_COLLECTION)
        .insertOne({
          _id: name,
          mongo_database: db,
          mongo_collection: name,
          bigquery_table: `scope_${name}`,
          backfill_full_collection: true,
        });
    }
    const lines: Record<string, unknown>[] = [];
    const logger = createLogger({
      level: 'info',
      destination: { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) },
    });
    const controller = new AbortController();
    const archiver = await startArchiver(
      { ...config, CHANGE_STREAM_SCOPE: 'database' },
      logger,
      controller.signal,
    );
    try {
      for (const name of collections) {
        const items = mongo.db(db).collection<Item>(name);
        for (let i = 0; i < 10; i++) {
          await items.updateOne({ _id: i }, { $set: { label: 'changed' }, $inc: { n: 100 } });
          await items.insertOne({ _id: 1_000 + i, n: i, label: 'new' });
        }
        await items.deleteMany({ _id: { $gte: 40, $lt: 45 } });
      }
      for (const name of collections) await viewMatches(db, name, `scope_${name}`);
    } finally {
      controller.abort();
      await archiver.done;
    }
    // One line at start says which streams and why.
    const scope = lines.filter((line) => line.changeStreamScope !== undefined);
    expect(scope).toEqual([
      expect.objectContaining({
        changeStreamScope: 'collection',
        reason: expect.stringMatching(/neither a replica set \(setName\) nor mongos/) as unknown,
        msg: 'change streams: one per mapping',
      }),
    ]);
    // No shared stream was opened, nor a database probed.
    expect(lines.filter((line) => /shared change stream|database-level one/.test(String(line.msg)))).toEqual(
      [],
    );
    // Every mapping read its own stream.
    expect(lines.filter((line) => line.sharedDatabaseStream === true)).toEqual([]);
  }, 180_000);
});
