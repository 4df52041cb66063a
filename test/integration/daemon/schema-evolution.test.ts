// Schema evolution under a write workload while BigQuery shows the new column to writes only after a delay
// (issue 10 item 1): an in-process archiver whose history-table writer sits behind a SchemaLagWriter.
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
import {
  inProcessConfig,
  randomWorkload,
  SETTINGS_COLLECTION,
  viewMatchesCollection,
  waitForState,
  type Item,
} from '../support/daemon.js';
import { schemaLag, type SchemaLagLog } from '../support/schema-lag-writer.js';

const suffix = randomBytes(3).toString('hex');
const DATASET = `evolve_${suffix}`;
const SETTINGS_DB = `evolve_settings_${suffix}`;
const DB = `evolve_src_${suffix}`;
/** How long the new column stays invisible to writes after the table patch (BigQuery: up to minutes). */
const LAG_MS = 10_000;
const SEEDED = 300;

let mongo: MongoClient;
let clients: BigQueryClients;
let config: BootstrapConfig;

beforeAll(async () => {
  mongo = new MongoClient(process.env.MBA_TEST_MONGODB_URI ?? '');
  await mongo.connect();
  clients = await emulatorClients();
  // The default writer: BigQuery's propagation delay is a Storage Write default-stream behaviour.
  config = inProcessConfig(DATASET, SETTINGS_DB, 'storage-write');
});

afterAll(async () => {
  await mongo.close();
  await clients.close();
});

interface Colourful extends Item {
  colour?: string;
}

async function query(sql: string): Promise<Document[]> {
  const [rows] = await clients.bigquery.query({ query: sql });
  return rows as Document[];
}

describe('schema evolution while BigQuery shows the new column only after a delay', () => {
  it('issue 10 item 1: keeps every change of a mixed workload, the new field included, and dead-letters nothing', async () => {
    const items = mongo.db(DB).collection<Colourful>('items');
    await items.insertMany(Array.from({ length: SEEDED }, (_, i) => ({ _id: i, n: i, label: 'seed' })));
    await mongo.db(SETTINGS_DB).collection<{ _id: string } & Document>(SETTINGS_COLLECTION).insertOne({
      _id: 'items',
      mongo_database: DB,
      mongo_collection: 'items',
      bigquery_table: 'items',
      backfill_full_collection: true,
      // No `columns`: inferred from a sample, so `schema_evolution` defaults to `add_columns`.
    });
    const log: SchemaLagLog = { added: [], refused: 0, passed: 0 };
    const controller = new AbortController();
    const logger = createLogger({ level: process.env.MBA_DEBUG_DAEMON ? 'debug' : 'silent' });
    const archiver = await startArchiver(config, logger, controller.signal, {
      decorateWriter: schemaLag(clients.projectId, LAG_MS, log),
    });
    try {
      await waitForState(mongo, SETTINGS_DB, 'items', ['streaming'], 60_000);
      const stop = new AbortController();
      const workload = randomWorkload({ collections: [items], seeded: SEEDED, pauseMs: 10 }, stop.signal);
      await sleep(1_000);
      // A field no column holds yet, on inserted and on updated documents, while the workload goes on.
      for (let i = 0; i < 30; i++) {
        await items.insertOne({ _id: 500_000 + i, n: i, label: 'colourful', colour: `c${i}` });
        await items.updateOne({ _id: i * 7 }, { $set: { colour: `u${i}` } });
        await sleep(100);
      }
      // Past the delay, so changes written after the column became visible are in the run too.
      await sleep(LAG_MS);
      stop.abort();
      await workload;

      const target = {
        mongo,
        clients,
        db: DB,
        collection: 'items',
        dataset: DATASET,
        table: 'items',
        fields: ['n', 'label'],
      };
      const { rows, distinct } = await viewMatchesCollection(target, 120_000);
      expect(rows).toBe(distinct);

      // The delay did bite: the column was added once and appends were refused until it was visible.
      expect(log.added.map((a) => a.column)).toEqual(['colour']);
      expect(log.refused).toBeGreaterThan(0);

      // The new field reached the view for every document that has it, and NULL for the others.
      const docs = await items.find({}).toArray();
      const expected = docs.map((d) => `${docIdString(d._id)}|${d.colour ?? 'null'}`).sort();
      const actual = (
        await query(`SELECT _doc_id, colour FROM \`${clients.projectId}.${DATASET}.items_view\``)
      )
        .map((r) => `${String(r._doc_id)}|${r.colour === null ? 'null' : String(r.colour)}`)
        .sort();
      expect(actual).toEqual(expected);
      expect(docs.filter((d) => d.colour !== undefined).length).toBeGreaterThanOrEqual(30);

      // Nothing went to the dead-letter table, and the mapping reported no failure.
      const [errors] = await query(
        `SELECT COUNT(*) AS n FROM \`${clients.projectId}.${DATASET}.items_errors\``,
      );
      expect(Number(errors?.n)).toBe(0);
      const settings = await mongo
        .db(SETTINGS_DB)
        .collection<{ _id: string } & Document>(SETTINGS_COLLECTION)
        .findOne({ _id: 'items' });
      expect(settings?.lastFailure).toBeUndefined();
      expect((settings?.status as Document | undefined)?.state).toBe('streaming');
    } finally {
      controller.abort();
      await archiver.done;
    }
  }, 240_000);
});
