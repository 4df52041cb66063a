// The daemon against a history table whose schema differs from the mapping's columns: columns removed
// from the settings, a crash between patching the table and saving the columns, a type changed in the
// settings. The table's actual schema must win; nothing may fail for good.
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { MongoClient, type Document } from 'mongodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startArchiver } from '../../../src/app/archiver.js';
import { historyTableConflicts } from '../../../src/app/schema-check.js';
import { type BigQueryClients } from '../../../src/bigquery/client.js';
import { TableAdmin } from '../../../src/bigquery/table-admin.js';
import { type BootstrapConfig } from '../../../src/config/bootstrap.js';
import { parseMappingSettings } from '../../../src/config/settings.js';
import { createLogger } from '../../../src/observability/logger.js';
import { type ColumnSpec } from '../../../src/schema/types.js';
import { emulatorClients } from '../support/bigquery-clients.js';
import { inProcessConfig, SETTINGS_COLLECTION, waitForState } from '../support/daemon.js';

const suffix = randomBytes(3).toString('hex');
const DATASET = `schema_${suffix}`;
const SETTINGS_DB = `archiver_schema_${suffix}`;
const DB = `shop_schema_${suffix}`;
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

const ID_COLUMN: ColumnSpec = { name: '_id', type: 'STRING', mongo_field: '_id', primary_key: true };

/** The history table as an earlier run left it (the archiver's own table admin creates it). */
async function existingTable(table: string, columns: readonly ColumnSpec[]): Promise<void> {
  const admin = new TableAdmin({
    bigquery: clients.bigquery,
    projectId: clients.projectId,
    datasetId: DATASET,
  });
  await admin.ensureDataset();
  await admin.ensureHistoryTable(table, columns);
}

async function running(): Promise<{ stop: () => Promise<void> }> {
  const controller = new AbortController();
  const logger = createLogger({ level: process.env.MBA_DEBUG_DAEMON ? 'debug' : 'silent' });
  const archiver = await startArchiver(config, logger, controller.signal);
  return {
    stop: async () => {
      controller.abort();
      await archiver.done;
    },
  };
}

async function rowsOf(table: string, expected: number, timeoutMs = 30_000): Promise<Document[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const [rows] = (await clients.bigquery
      .query({
        query: `SELECT _doc_id, s, TO_JSON_STRING(_unmapped) AS unmapped FROM \`${clients.projectId}.${DATASET}.${table}\` ORDER BY _doc_id`,
      })
      .catch(() => [[]])) as [Document[]];
    if (rows.length >= expected || Date.now() > deadline) return rows;
    await sleep(300);
  }
}

function settings() {
  return mongo.db(SETTINGS_DB).collection<{ _id: string } & Document>(SETTINGS_COLLECTION);
}

describe('schema of an existing history table', () => {
  it('issue 10 item 10: evolution adopts a column the table already has with another type (removed from columns, or saved columns lost in a crash) instead of failing for good', async () => {
    await existingTable('evolving', [ID_COLUMN, { name: 's', type: 'STRING' }]);
    await settings().insertOne({
      _id: 'evolving',
      mongo_database: DB,
      mongo_collection: 'evolving',
      bigquery_table: 'evolving',
      columns: [ID_COLUMN],
      schema_evolution: 'add_columns',
    });
    const run = await running();
    try {
      await waitForState(mongo, SETTINGS_DB, 'evolving', ['streaming']);
      const collection = mongo.db(DB).collection<{ _id: string; s: unknown }>('evolving');
      await collection.insertOne({ _id: 'a', s: 5 });
      await collection.insertOne({ _id: 'b', s: { nested: true } });
      const rows = await rowsOf('evolving', 2);
      const document = await settings().findOne({ _id: 'evolving' });
      expect(document?.lastFailure).toBeUndefined();
      expect(rows).toEqual([
        { _doc_id: '"a"', s: '5', unmapped: null },
        { _doc_id: '"b"', s: '{"nested":true}', unmapped: null },
      ]);
      // The column is back in the settings with the table's type.
      expect(document?.columns).toEqual([ID_COLUMN, { name: 's', type: 'STRING', mongo_field: 's' }]);
      expect((document?.status as Document | undefined)?.state).toBe('streaming');
    } finally {
      await run.stop();
    }
  }, 90_000);

  it('issue 10 item 10: a column type changed in the settings for an existing table is reported in lastFailure, and rows keep the table type', async () => {
    await existingTable('retyped', [ID_COLUMN, { name: 's', type: 'STRING' }]);
    await settings().insertOne({
      _id: 'retyped',
      mongo_database: DB,
      mongo_collection: 'retyped',
      bigquery_table: 'retyped',
      columns: [ID_COLUMN, { name: 's', type: 'JSON' }],
    });
    const run = await running();
    try {
      await waitForState(mongo, SETTINGS_DB, 'retyped', ['streaming']);
      await mongo.db(DB).collection<{ _id: string; s: unknown }>('retyped').insertOne({ _id: 'a', s: 'x' });
      // The string "x" stays x in the STRING column (as JSON text it would be "\"x\"").
      expect(await rowsOf('retyped', 1)).toEqual([{ _doc_id: '"a"', s: 'x', unmapped: null }]);
      const document = await settings().findOne({ _id: 'retyped' });
      expect(document?.lastFailure).toMatch(
        /s: the columns say NULLABLE JSON, the table has NULLABLE STRING/,
      );
      // The settings keep what the user wrote, and `validate` reports the difference (reading only).
      expect(document?.columns).toEqual([ID_COLUMN, { name: 's', type: 'JSON' }]);
      expect(await historyTableConflicts(clients, DATASET, parseMappingSettings(document ?? {}))).toEqual([
        's: the columns say NULLABLE JSON, the table has NULLABLE STRING',
      ]);
      const agreeing = parseMappingSettings({
        ...document,
        columns: [ID_COLUMN, { name: 's', type: 'STRING' }],
      });
      expect(await historyTableConflicts(clients, DATASET, agreeing)).toEqual([]);
      const absent = parseMappingSettings({ ...document, bigquery_table: 'not_there' });
      expect(await historyTableConflicts(clients, DATASET, absent)).toEqual([]);
    } finally {
      await run.stop();
    }
  }, 90_000);

  it('issue 10 item 4: an inferred mapping that infers again (its saved columns lost) keeps the types the table has', async () => {
    // An earlier run inferred `s` STRING and created the table; its columns never reached the settings.
    await existingTable('inferred', [ID_COLUMN, { name: 's', type: 'STRING' }]);
    // The new sample mixes strings and sub-documents: inferred alone, `s` would now be JSON.
    await mongo
      .db(DB)
      .collection<{ _id: string; s: unknown }>('inferred')
      .insertMany([
        { _id: 'a', s: 'x' },
        { _id: 'b', s: { n: 1 } },
      ]);
    await settings().insertOne({
      _id: 'inferred',
      mongo_database: DB,
      mongo_collection: 'inferred',
      bigquery_table: 'inferred',
      backfill_full_collection: true,
    });
    const run = await running();
    try {
      await waitForState(mongo, SETTINGS_DB, 'inferred', ['streaming']);
      expect(await rowsOf('inferred', 2)).toEqual([
        { _doc_id: '"a"', s: 'x', unmapped: null },
        { _doc_id: '"b"', s: '{"n":1}', unmapped: null },
      ]);
      const document = await settings().findOne({ _id: 'inferred' });
      expect(document?.columns).toEqual([ID_COLUMN, { name: 's', type: 'STRING', mongo_field: 's' }]);
      expect(document?.lastFailure).toBeUndefined();
    } finally {
      await run.stop();
    }
  }, 90_000);
});
