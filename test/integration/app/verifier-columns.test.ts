// Review finding 6 (issue 14): the verifier maps with the columns the history table has, as `run` does
// (`alignWithTable`), not with the settings' columns. A column declared FLOAT where the table has STRING made
// the digest SQL call IS_NAN on a string (the query failed, verify exited 1) and hashed every document with
// the wrong type.
import { randomBytes } from 'node:crypto';
import { MongoClient } from 'mongodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mappingVerifierFor } from '../../../src/app/verifier.js';
import { type BigQueryClients } from '../../../src/bigquery/client.js';
import { TableAdmin } from '../../../src/bigquery/table-admin.js';
import { parseMappingSettings } from '../../../src/config/settings.js';
import { backfillRecord } from '../../../src/core/history-rows.js';
import { parseColumnSpecs } from '../../../src/schema/column-spec.js';
import { compileRowMapper } from '../../../src/transform/row-mapper.js';
import { bigQueryTestEnv, uniqueDatasetId } from '../support/bigquery.js';
import { emulatorClients } from '../support/bigquery-clients.js';

const env = bigQueryTestEnv();
const datasetId = uniqueDatasetId('verify_cols');
const DB = `verify_cols_${randomBytes(3).toString('hex')}`;
const TABLE = 'items';
/** What the table has: `score` as STRING. */
const TABLE_COLUMNS = parseColumnSpecs([
  { name: 'id', type: 'INTEGER', mongo_field: '_id' },
  { name: 'score', type: 'STRING' },
]).columns;
const DOCUMENTS = Array.from({ length: 30 }, (_, i) => ({ _id: i, score: `s${String(i)}` }));

let clients: BigQueryClients;
let mongo: MongoClient;

beforeAll(async () => {
  clients = await emulatorClients();
  mongo = new MongoClient(process.env.MBA_TEST_MONGODB_URI ?? '');
  await mongo.connect();
  await mongo.db(DB).collection<{ _id: number }>(TABLE).insertMany(DOCUMENTS);
  const admin = new TableAdmin({
    bigquery: clients.bigquery,
    projectId: env.projectId,
    datasetId,
    ...(env.peer === 'goccy-bigquery-emulator' && { emulatorWorkarounds: { dropViewBeforeReplace: true } }),
  });
  await admin.ensureDataset();
  await admin.ensureHistoryTable(TABLE, TABLE_COLUMNS);
  await admin.ensureViews(TABLE, TABLE_COLUMNS);
  // The rows `run` writes: mapped with the table's columns.
  const mapper = compileRowMapper(TABLE_COLUMNS);
  const start = { t: 1_795_600_800, i: 1 };
  const rows = DOCUMENTS.map((doc) => backfillRecord(mapper, doc, start, new Date()).row());
  await clients.bigquery
    .dataset(datasetId)
    .table(TABLE)
    .insert(
      rows.map((json) => ({ insertId: String(json._event_id), json })),
      { raw: true },
    );
});

afterAll(async () => {
  await clients.bigquery
    .dataset(datasetId)
    .delete({ force: true })
    .catch(() => undefined);
  await clients.close();
  await mongo.db(DB).dropDatabase();
  await mongo.close();
});

describe('mappingVerifierFor', () => {
  it('review finding 6: compares with the columns the table has when the settings declare another type', async () => {
    const settings = parseMappingSettings({
      _id: 'items',
      mongo_database: DB,
      mongo_collection: TABLE,
      bigquery_dataset: datasetId,
      bigquery_table: TABLE,
      // The settings say FLOAT; the table has STRING, which `run` keeps writing.
      columns: [
        { name: 'id', type: 'INTEGER', mongo_field: '_id' },
        { name: 'score', type: 'FLOAT' },
      ],
    });
    const verifier = mappingVerifierFor({
      mongo,
      bigquery: clients,
      defaultDataset: datasetId,
      settings,
      checkpoints: mongo.db(DB).collection('checkpoints'),
      // No daemon: the verification does not wait for a checkpoint.
      options: { settleTimeoutMs: 0, ranges: 2 },
    });
    const report = await verifier.verify({}, AbortSignal.timeout(60_000));
    expect(report.documentsChecked).toBe(DOCUMENTS.length);
    expect(report.differing.count + report.missing.count + report.extra.count).toBe(0);
    expect(report.differingRanges).toEqual([]);
  });
});
