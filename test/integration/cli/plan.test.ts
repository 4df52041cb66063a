// Issue 14, must-show 3: `plan` on the original README's example settings, against the peers (their wire
// protocols): the DDL and the table diff compared with golden files written by hand from what BigQuery DDL
// should be (test/fixtures/plan/), and proof that a plan writes nothing anywhere.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MongoClient } from 'mongodb';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { type BigQueryClients } from '../../../src/bigquery/client.js';
import { EXIT, reportFatal } from '../../../src/cli/common.js';
import { freePort } from '../../../scripts/peers/process.js';
import { planCommand } from '../../../src/cli/plan.js';
import { type ViewScan } from '../../../src/app/plan.js';
import { TableAdmin } from '../../../src/bigquery/table-admin.js';
import { parseColumnSpecs } from '../../../src/schema/column-spec.js';
import { type ColumnSpec } from '../../../src/schema/types.js';
import { METADATA_FIELDS } from '../../../src/schema/table-schema.js';
import { emulatorClients } from '../support/bigquery-clients.js';
import { bigQueryTestEnv, uniqueDatasetId } from '../support/bigquery.js';
import { daemonEnv, SETTINGS_COLLECTION } from '../support/daemon.js';

const FIXTURES = join(import.meta.dirname, '../../fixtures');
const SETTINGS_DB = `plan_${randomBytes(4).toString('hex')}`;
const SOURCE_DB = `plan_src_${randomBytes(4).toString('hex')}`;
const MAPPING = 'facebook_ad_cpta';
const bq = bigQueryTestEnv();

let mongo: MongoClient;
let bigquery: BigQueryClients;

/** The original README's example, read from another database of this run and with a fixed `_id`. */
function originalSettings(): Record<string, unknown> {
  const settings = JSON.parse(
    readFileSync(join(FIXTURES, 'original-readme-settings.json'), 'utf8'),
  ) as Record<string, unknown>;
  return { _id: MAPPING, ...settings, mongo_database: SOURCE_DB };
}

function configFor(dataset: string): string {
  const path = join(mkdtempSync(join(tmpdir(), 'mba-plan-')), 'config.json');
  const env = daemonEnv(dataset, SETTINGS_DB);
  const keys = [
    'MONGO_CLIENT',
    'BIGQUERY_PROJECT',
    'BIGQUERY_DATASET',
    'SETTINGS_DATABASE',
    'BIGQUERY_EMULATOR_ENDPOINT',
    'BIGQUERY_EMULATOR_GRPC',
  ] as const;
  writeFileSync(path, JSON.stringify(Object.fromEntries(keys.map((k) => [k, env[k]]))));
  return path;
}

/** `mongo-bigquery-archiver --config <file> plan [mapping] [--json]`, in this process; what it printed. */
async function plan(
  dataset: string,
  options: { mapping?: string; json?: boolean } = {},
): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const log = vi.spyOn(console, 'log').mockImplementation((line: string) => out.push(line));
  const error = vi.spyOn(console, 'error').mockImplementation((line: string) => err.push(line));
  try {
    const code = await planCommand(options.mapping, {
      config: configFor(dataset),
      ...(options.json === true && { json: true }),
    });
    return { code, out: out.join('\n'), err: err.join('\n') };
  } finally {
    log.mockRestore();
    error.mockRestore();
  }
}

/** A golden file with this run's names put in. */
function golden(name: string, dataset: string): string {
  return readFileSync(join(FIXTURES, 'plan', name), 'utf8')
    .replaceAll('${PROJECT}', bq.projectId)
    .replaceAll('${DATASET}', dataset)
    .replaceAll('${DATABASE}', SOURCE_DB)
    .trimEnd();
}

/** The DDL and the table diff: everything before the sample's section. */
function ddlAndDiff(out: string): string {
  const end = out.indexOf('\n\nSample:');
  return (end < 0 ? out : out.slice(0, end)).trimEnd();
}

beforeAll(async () => {
  mongo = new MongoClient(process.env.MBA_TEST_MONGODB_URI ?? '');
  await mongo.connect();
  bigquery = await emulatorClients();
  await mongo.db(SETTINGS_DB).collection(SETTINGS_COLLECTION).insertOne(originalSettings());
  await mongo
    .db(SOURCE_DB)
    .collection<{ _id: string; [key: string]: unknown }>('ad_cpta')
    .insertMany([
      {
        _id: 'a',
        tracking_code: 1,
        created_on_timestamp: 1.5,
        midnight_to_timestamp: { cpta: 1.5, activations: 2, spend: 3.5, date_start: 'x', ad_spend_id: 'y' },
      },
      { _id: 'b', tracking_code: 'not a number', extra: { note: 'no column' } },
      { _id: 'c', tracking_code: 3, midnight_to_timestamp: { cpta: 2.5, campaign: 'no column either' } },
    ]);
}, 60_000);

afterAll(async () => {
  await mongo.db(SETTINGS_DB).dropDatabase();
  await mongo.db(SOURCE_DB).dropDatabase();
  await mongo.close();
  await bigquery.close();
});

afterEach(() => {
  vi.restoreAllMocks();
});

describe('plan against the peers (issue 14)', () => {
  it('writes nothing: the dataset and tables stay absent, the settings document byte-identical', async () => {
    const dataset = uniqueDatasetId('plan_nothing');
    const settingsDb = mongo.db(SETTINGS_DB);
    const raw = async () =>
      (await settingsDb.collection(SETTINGS_COLLECTION).find({}, { raw: true }).toArray()).map((d) =>
        Buffer.from(d as unknown as Uint8Array).toString('hex'),
      );
    const collections = async () =>
      (await settingsDb.listCollections({}, { nameOnly: true }).toArray()).map((c) => c.name).sort();
    const before = { documents: await raw(), collections: await collections() };
    expect((await bigquery.bigquery.dataset(dataset).exists())[0]).toBe(false);

    const { code, out } = await plan(dataset);

    expect(code).toBe(EXIT.ok);
    expect(out).toContain(`CREATE SCHEMA \`${bq.projectId}.${dataset}\`;`);
    expect(out).toContain(`CREATE TABLE \`${bq.projectId}.${dataset}.facebook_ad_cpta\` (`);
    expect((await bigquery.bigquery.dataset(dataset).exists())[0]).toBe(false);
    expect(await raw()).toEqual(before.documents);
    expect(await collections()).toEqual(before.collections);
  }, 60_000);

  it('against an empty dataset: the DDL of every object (golden)', async () => {
    const dataset = uniqueDatasetId('plan_empty');
    await bigquery.bigquery.createDataset(dataset);

    const { code, out } = await plan(dataset, { mapping: MAPPING });

    expect(code).toBe(EXIT.ok);
    expect(ddlAndDiff(out)).toBe(golden('empty-dataset.txt', dataset));
    // Nothing was created by the plan either.
    const [tables] = await bigquery.bigquery.dataset(dataset).getTables();
    expect(tables.map((t) => t.id)).toEqual([]);
    // The sample, mapped with the declared columns: what would land in _unmapped, and why.
    expect(out).toContain('Sample: 3 documents (columns from the settings)');
    expect(out).toContain('_unmapped: extra (no column; 1 document; document)');
    expect(out).toContain('_unmapped: midnight_to_timestamp.campaign (no column; 1 document; string)');
    expect(out).toContain(
      '_unmapped: tracking_code (does not fit tracking_code INTEGER; 1 document; string)',
    );
    expect(out).toContain('no row over BigQuery limits');
    expect(out).toMatch(/Backfill: 3 documents \(estimatedDocumentCount\), \d/);
    expect(out).toContain('$0.025 per GiB after the first 2 TiB per month free');
  }, 60_000);

  it('against a history table lacking two columns, with one of another type: the diff (golden) and --json', async () => {
    const dataset = uniqueDatasetId('plan_existing');
    await bigquery.bigquery.createDataset(dataset);
    const settings = originalSettings() as { columns: { name: string; type: string }[] };
    const kept = settings.columns.filter(
      (c) => c.name !== 'created_on_timestamp' && c.name !== 'lifetime_to_timestamp',
    );
    await bigquery.bigquery.dataset(dataset).createTable(MAPPING, {
      schema: {
        fields: [
          ...kept.map((c) => (c.name === 'tracking_code' ? { name: c.name, type: 'STRING' } : c)),
          ...METADATA_FIELDS.map((f) => ({ name: f.name, type: f.type, mode: f.mode })),
        ],
      },
    });

    const { code, out } = await plan(dataset, { mapping: MAPPING });
    expect(code).toBe(EXIT.ok);
    expect(ddlAndDiff(out)).toBe(golden('existing-table.txt', dataset));

    const json = await plan(dataset, { mapping: MAPPING, json: true });
    expect(json.code).toBe(EXIT.ok);
    const report = JSON.parse(json.out) as {
      mappings: {
        mapping: string;
        tables: { diff: { kind: string; conflicts: string[]; additions: { column: { name: string } }[] } };
        scans: { view: string; source: string }[];
      }[];
    };
    const [only] = report.mappings;
    expect(only?.mapping).toBe(MAPPING);
    expect(only?.tables.diff.kind).toBe('existing');
    expect(only?.tables.diff.additions.map((a) => a.column.name)).toEqual([
      'created_on_timestamp',
      'lifetime_to_timestamp',
    ]);
    expect(only?.tables.diff.conflicts).toHaveLength(1);
    // The view does not exist yet: the history table's size bounds what it would scan.
    expect(only?.scans[0]).toMatchObject({ view: 'facebook_ad_cpta_view', source: 'history-table-size' });
    // Still nothing written: the view and the dead-letter table are only planned.
    const [tables] = await bigquery.bigquery.dataset(dataset).getTables();
    expect(tables.map((t) => t.id)).toEqual([MAPPING]);
  }, 60_000);

  it('after run prepared the tables: nothing left to do, and what the view scans', async () => {
    const dataset = uniqueDatasetId('plan_prepared');
    const settings = originalSettings() as { columns: ColumnSpec[] };
    // What `run` does first (introspect, diff, apply), through the same applier.
    await new TableAdmin({
      bigquery: bigquery.bigquery,
      projectId: bq.projectId,
      datasetId: dataset,
      emulatorWorkarounds: {
        oneColumnPerAlter: true,
        dropViewBeforeReplace: bq.peer === 'goccy-bigquery-emulator',
      },
    }).prepare(MAPPING, parseColumnSpecs(settings.columns).columns);

    const { code, out } = await plan(dataset, { mapping: MAPPING, json: true });

    expect(code).toBe(EXIT.ok);
    const [only] = (
      JSON.parse(out) as {
        mappings: { tables: { steps: unknown[]; diff: { additions: unknown[] } }; scans: ViewScan[] }[];
      }
    ).mappings;
    expect(only?.tables.steps).toEqual([]);
    expect(only?.tables.diff.additions).toEqual([]);
    expect(only?.scans).toHaveLength(1);
    // bqemulator takes a dry-run job but reports no totalBytesProcessed: the plan falls back to the
    // history table's size and says why (docs/testing.md). BigQuery answers the dry run itself.
    if (bq.peer === 'bqemulator') {
      expect(only?.scans[0]).toMatchObject({
        view: 'facebook_ad_cpta_view',
        bytes: 0,
        source: 'history-table-size',
      });
      expect(only?.scans[0]?.note).toMatch(
        /^dry run refused \(.*no totalBytesProcessed\): at most the history table$/,
      );
    } else {
      expect(only?.scans[0]?.bytes).toEqual(expect.any(Number));
    }
  }, 60_000);

  it('BigQuery on a closed loopback port: exits 1 naming BigQuery and the fix, as validate does', async () => {
    const port = await freePort();
    const path = configFor(uniqueDatasetId('plan_unreachable'));
    const config = JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>;
    writeFileSync(
      path,
      JSON.stringify({ ...config, BIGQUERY_EMULATOR_ENDPOINT: `http://127.0.0.1:${String(port)}` }),
    );
    const failure = await planCommand(MAPPING, { config: path }).then(
      () => undefined,
      (error: unknown) => error,
    );
    const err = vi.spyOn(console, 'error').mockImplementation(() => undefined);
    expect(reportFatal(failure)).toBe(EXIT.failure);
    expect(err).toHaveBeenCalledWith(
      `error: BigQuery at http://127.0.0.1:${String(port)} unreachable (connection refused): check BIGQUERY_EMULATOR_ENDPOINT and BIGQUERY_EMULATOR_GRPC and that the emulator is running`,
    );
  }, 60_000);

  it('names an unknown mapping and exits 2', async () => {
    const dataset = uniqueDatasetId('plan_unknown');
    await expect(plan(dataset, { mapping: 'nope' })).rejects.toThrow(
      `no mapping "nope" in ${SETTINGS_DB}.${SETTINGS_COLLECTION} (mappings: ${MAPPING})`,
    );
  }, 60_000);
});
