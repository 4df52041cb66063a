// Issue 14: the plan of a mapping as data, on fakes of its ports (the introspector, the sampler, the
// collection's size), and the BigQuery adapter's read-only half on a recording transport.
import { describe, expect, it } from 'vitest';
import {
  estimateBackfill,
  logPlan,
  planMapping,
  STORAGE_WRITE_LIST_PRICE,
  type PlanSources,
} from '../../../src/app/plan.js';
import { analyseSample, type SampleFindings } from '../../../src/app/plan-sample.js';
import { TableIntrospector, type MappingObjects } from '../../../src/bigquery/table-introspector.js';
import { parseMappingSettings } from '../../../src/config/settings.js';
import { tableRef } from '../../../src/schema/identifiers.js';
import { createLogger } from '../../../src/observability/logger.js';
import { type ColumnSpec } from '../../../src/schema/types.js';
import { RecordingBigQuery } from '../bigquery/recording-bigquery.js';

const PROJECT = 'mba-test';
const DATASET = 'archive';
const COLUMNS: ColumnSpec[] = [
  { name: 'tracking_code', type: 'INTEGER' },
  { name: 'rec', type: 'RECORD', fields: [{ name: 'a', type: 'INTEGER' }] },
  { name: 'tags', type: 'STRING', mode: 'REPEATED' },
];

const NOTHING: MappingObjects = {
  datasetExists: false,
  history: undefined,
  deadLetter: undefined,
  view: undefined,
  latestView: undefined,
};

function table(tableId: string, type: string, numBytes?: number) {
  return {
    tableId,
    type,
    fields: [],
    partitioning: undefined,
    clustering: [],
    viewHash: undefined,
    numBytes,
    numRows: undefined,
  };
}

function settings(extra: Record<string, unknown> = {}) {
  return parseMappingSettings({
    _id: 'orders',
    mongo_database: 'shop',
    mongo_collection: 'orders',
    bigquery_table: 'orders',
    columns: COLUMNS,
    ...extra,
  });
}

function sources(found: MappingObjects, dryRun: (sql: string) => Promise<number>): PlanSources {
  return {
    tables: {
      projectId: PROJECT,
      datasetId: DATASET,
      ref: (t) => tableRef(PROJECT, DATASET, t),
      mapping: () => Promise.resolve(found),
      dryRunBytes: dryRun,
    },
    sample: () => Promise.resolve([{ _id: 1, tracking_code: 5, extra: 'x' }]),
    size: () => Promise.resolve({ documents: 10, bytes: 2_000, bytesSource: 'storageStats.size' }),
  };
}

const signal = new AbortController().signal;

describe('analyseSample', () => {
  const documents = [
    { _id: 1, tracking_code: 'not a number', rec: { a: 'nor this', b: 1 }, extra: 2, tags: ['a', null] },
    { _id: 2, tracking_code: 2, rec: { a: 1 }, extra: 'again' },
  ];

  it('names every path that lands in _unmapped, and why: no column, or a value that does not fit its column', () => {
    const findings = analyseSample(COLUMNS, documents, true);
    expect(findings.documents).toBe(2);
    expect(findings.unmapped).toEqual([
      { path: 'extra', reason: 'no-column', documents: 2, kinds: ['number', 'string'] },
      { path: 'rec.a', reason: 'does-not-fit', column: 'rec.a INTEGER', documents: 1, kinds: ['string'] },
      { path: 'rec.b', reason: 'no-column', documents: 1, kinds: ['number'] },
      {
        path: 'tags',
        reason: 'does-not-fit',
        column: 'tags REPEATED STRING',
        documents: 1,
        kinds: ['array'],
      },
      {
        path: 'tracking_code',
        reason: 'does-not-fit',
        column: 'tracking_code INTEGER',
        documents: 1,
        kinds: ['string'],
      },
    ]);
  });

  it('with capture_unmapped off, only the values that do not fit (they are kept either way)', () => {
    const paths = analyseSample(COLUMNS, documents, false).unmapped.map((f) => f.path);
    expect(paths).toEqual(['rec.a', 'tags', 'tracking_code']);
  });

  it("names rows over BigQuery's limits: a row over the row cap, a document nested deeper than 15 levels", () => {
    let deep: Record<string, unknown> = { leaf: 1 };
    for (let i = 0; i < 16; i++) deep = { d: deep };
    const findings = analyseSample(
      COLUMNS,
      [
        { _id: 'big', extra: 'x'.repeat(9_500_000) },
        { _id: 'deep', deep },
        { _id: 'fine', tracking_code: 1 },
      ],
      true,
    );
    expect(findings.overLimits.map((o) => [o.docId, o.limit])).toEqual([
      ['"big"', 'row-size'],
      ['"deep"', 'nesting'],
    ]);
  });
});

describe('planMapping', () => {
  it('asks BigQuery for a dry run of SELECT * FROM the view when it exists', async () => {
    const asked: string[] = [];
    const found: MappingObjects = {
      ...NOTHING,
      datasetExists: true,
      history: table('orders', 'TABLE', 9_000),
      view: table('orders_view', 'VIEW'),
    };
    const plan = await planMapping(
      settings(),
      sources(found, (sql) => {
        asked.push(sql);
        return Promise.resolve(4_242);
      }),
      signal,
    );
    expect(asked).toEqual([`SELECT * FROM \`${PROJECT}.${DATASET}.orders_view\``]);
    expect(plan.scans).toEqual([{ view: 'orders_view', bytes: 4_242, source: 'dry-run' }]);
  });

  it("falls back to the history table's size, saying why, when the dry run is refused or the view is absent", async () => {
    const found: MappingObjects = {
      ...NOTHING,
      datasetExists: true,
      history: table('orders', 'TABLE', 9_000),
      view: table('orders_view', 'VIEW'),
    };
    const refused = await planMapping(
      settings(),
      sources(found, () => Promise.reject(new Error('dry runs are not supported'))),
      signal,
    );
    expect(refused.scans).toEqual([
      {
        view: 'orders_view',
        bytes: 9_000,
        source: 'history-table-size',
        note: 'dry run refused (dry runs are not supported): at most the history table',
      },
    ]);
    const absent = await planMapping(
      settings(),
      sources({ ...found, view: undefined }, () => Promise.reject(new Error('not asked'))),
      signal,
    );
    expect(absent.scans[0]).toMatchObject({ bytes: 9_000, source: 'history-table-size' });
  });

  it('infers the columns from the sample when the settings have none (kept in the plan only)', async () => {
    const plan = await planMapping(
      settings({ columns: undefined }),
      sources(NOTHING, () => Promise.reject(new Error('not asked'))),
      signal,
    );
    expect(plan.columnsFrom).toBe('inferred');
    expect(plan.columns.map((c) => c.name)).toEqual(['_id', 'extra', 'tracking_code']);
    expect(plan.tables.steps.map((s) => s.kind)).toEqual([
      'create-dataset',
      'create-table',
      'create-dead-letter-table',
      'create-view',
      'create-view',
    ]);
  });

  it('estimates the backfill only when backfill_full_collection is on', async () => {
    const off = await planMapping(
      settings(),
      sources(NOTHING, () => Promise.resolve(0)),
      signal,
    );
    expect(off.backfill).toBeUndefined();
    const on = await planMapping(
      settings({ backfill_full_collection: true }),
      sources(NOTHING, () => Promise.resolve(0)),
      signal,
    );
    expect(on.backfill).toMatchObject({ documents: 10, bytes: 2_000, bytesSource: 'storageStats.size' });
  });
});

describe('estimateBackfill', () => {
  const sample: SampleFindings = {
    documents: 4,
    unmapped: [],
    unmappedNotListed: 0,
    overLimits: [],
    overLimitsNotListed: 0,
    averageRowBytes: 500,
  };

  it('prices the bytes at the Storage Write list price, before and after the 2 TiB free each month', () => {
    const tib = 1024 ** 4;
    const estimate = estimateBackfill(
      { documents: 1_000, bytes: 3 * tib, bytesSource: 'storageStats.size' },
      sample,
    );
    expect(STORAGE_WRITE_LIST_PRICE).toEqual({ usdPerGiB: 0.025, freeTiBPerMonth: 2, asOf: '2026-12-06' });
    expect(estimate.costUsd).toBeCloseTo(3 * 1024 * 0.025, 6);
    expect(estimate.costAfterFreeTierUsd).toBeCloseTo(1024 * 0.025, 6);
  });

  it("takes the sample's mean row size × count when the server gives no statistics, and says so", () => {
    expect(
      estimateBackfill({ documents: 1_000, bytes: undefined, bytesSource: undefined }, sample),
    ).toMatchObject({ bytes: 500_000, bytesSource: 'sample mean row size × count' });
  });
});

describe('TableIntrospector (read-only) on a recording transport', () => {
  it('reads what exists with GET requests only, and reads a dry run as BigQuery answers it', async () => {
    const fake = new RecordingBigQuery(PROJECT);
    fake.datasets.add(DATASET);
    fake.tables.set('orders', { type: 'TABLE', numBytes: '123', schema: { fields: [] } });
    fake.dryRunBytes = 987_654_321;
    const introspector = new TableIntrospector({
      bigquery: fake.client,
      projectId: PROJECT,
      datasetId: DATASET,
    });

    const found = await introspector.mapping('orders');
    expect(found).toMatchObject({
      datasetExists: true,
      history: { numBytes: 123 },
      deadLetter: undefined,
      view: undefined,
    });
    expect(fake.requests.every((r) => r.method === 'GET')).toBe(true);

    expect(await introspector.dryRunBytes('SELECT 1')).toBe(987_654_321);
    expect(fake.dryRuns).toEqual(['SELECT 1']);
  });
});

describe('logPlan (a dry-run mapping)', () => {
  function capture() {
    const lines: string[] = [];
    const log = createLogger({
      level: 'info',
      format: 'json',
      destination: { write: (line: string) => void lines.push(line), isTTY: false },
    });
    return { log, lines: () => lines.map((l) => JSON.parse(l) as { msg: string; text?: string }) };
  }

  it('logs the plan once as data and as text, reading only', async () => {
    const fake = new RecordingBigQuery(PROJECT);
    const { log, lines } = capture();
    await logPlan(
      settings({ dryrun: true }),
      {
        bigquery: { bigquery: fake.client, projectId: PROJECT },
        defaultDataset: DATASET,
        sample: () => Promise.resolve([{ _id: 1 }]),
        size: () => Promise.resolve({ documents: 1, bytes: 10, bytesSource: 'storageStats.size' }),
        log,
      },
      signal,
    );
    const [line] = lines();
    expect(line?.msg).toBe('dry run: the plan of this mapping (what run would do)');
    expect(line?.text).toContain(`CREATE TABLE \`${PROJECT}.${DATASET}.orders\``);
    expect(fake.requests.every((r) => r.method === 'GET')).toBe(true);
  });

  it('a plan that cannot be computed is a warning, not a failure of the mapping', async () => {
    const { log, lines } = capture();
    await logPlan(
      settings({ dryrun: true }),
      {
        bigquery: { bigquery: new RecordingBigQuery(PROJECT).client, projectId: PROJECT },
        defaultDataset: DATASET,
        sample: () => Promise.reject(new Error('sampling failed')),
        size: () => Promise.reject(new Error('not asked')),
        log,
      },
      signal,
    );
    expect(lines().map((l) => l.msg)).toEqual(['dry run: could not compute the plan of this mapping']);
  });
});
