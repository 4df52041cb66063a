import { type TableMetadata } from '@google-cloud/bigquery';
import { describe, expect, it } from 'vitest';
import { addColumnsSql, columnTypeSql } from '../../../src/bigquery/ddl.js';
import { tableRef } from '../../../src/schema/identifiers.js';
import { DEAD_LETTER_FIELDS, TableAdmin } from '../../../src/bigquery/table-admin.js';
import { VIEW_HASH_LABEL } from '../../../src/bigquery/views.js';
import { BigQueryError, ConfigError, SettingsError } from '../../../src/errors.js';
import { planEvolution } from '../../../src/schema/evolve.js';
import { historyTableSchema } from '../../../src/schema/table-schema.js';
import { type ColumnSpec } from '../../../src/schema/types.js';
import { apiError, RecordingBigQuery } from './recording-bigquery.js';

const PROJECT = 'mba-test';
const DATASET = 'archive';

const COLUMNS: readonly ColumnSpec[] = [
  { name: '_id', type: 'STRING', mongo_field: '_id', primary_key: true },
  { name: 'name', type: 'STRING' },
  { name: 'address', type: 'RECORD', fields: [{ name: 'city', type: 'STRING' }] },
];

function setup(): { admin: TableAdmin; fake: RecordingBigQuery } {
  const fake = new RecordingBigQuery(PROJECT);
  fake.datasets.add(DATASET);
  return { admin: new TableAdmin({ bigquery: fake.client, projectId: PROJECT, datasetId: DATASET }), fake };
}

function schemaOf(metadata: TableMetadata | undefined): unknown {
  const schema = metadata?.schema;
  return typeof schema === 'object' && !Array.isArray(schema) ? schema.fields : undefined;
}

describe('DDL text', () => {
  it('spells every column type in GoogleSQL, RECORD as STRUCT and REPEATED as ARRAY', () => {
    expect(columnTypeSql({ name: 'n', type: 'INTEGER', mode: 'NULLABLE' })).toBe('INT64');
    expect(columnTypeSql({ name: 'f', type: 'FLOAT', mode: 'NULLABLE' })).toBe('FLOAT64');
    expect(columnTypeSql({ name: 'b', type: 'BOOLEAN', mode: 'NULLABLE' })).toBe('BOOL');
    expect(columnTypeSql({ name: 'j', type: 'JSON', mode: 'NULLABLE' })).toBe('JSON');
    expect(columnTypeSql({ name: 'tags', type: 'STRING', mode: 'REPEATED' })).toBe('ARRAY<STRING>');
    expect(
      columnTypeSql({
        name: 'items',
        type: 'RECORD',
        mode: 'REPEATED',
        fields: [
          { name: 'sku', type: 'STRING', mode: 'REQUIRED' },
          {
            name: 'dims',
            type: 'RECORD',
            mode: 'NULLABLE',
            fields: [{ name: 'w', type: 'NUMERIC', mode: 'NULLABLE' }],
          },
          { name: 'at', type: 'TIMESTAMP', mode: 'REPEATED' },
        ],
      }),
    ).toBe('ARRAY<STRUCT<`sku` STRING NOT NULL, `dims` STRUCT<`w` NUMERIC>, `at` ARRAY<TIMESTAMP>>>');
  });

  it('adds several top-level columns in one ALTER TABLE statement (golden)', () => {
    expect(
      addColumnsSql(tableRef(PROJECT, DATASET, 'orders'), [
        { name: 'score', type: 'INTEGER', mode: 'NULLABLE' },
        {
          name: 'geo',
          type: 'RECORD',
          mode: 'NULLABLE',
          fields: [{ name: 'lat', type: 'FLOAT', mode: 'NULLABLE' }],
        },
      ]),
    ).toBe(
      [
        'ALTER TABLE `mba-test.archive.orders`',
        '  ADD COLUMN IF NOT EXISTS `score` INT64,',
        '  ADD COLUMN IF NOT EXISTS `geo` STRUCT<`lat` FLOAT64>',
      ].join('\n'),
    );
  });

  it('refuses to add a REQUIRED column (BigQuery cannot) and a RECORD without fields', () => {
    const ref = tableRef(PROJECT, DATASET, 'orders');
    expect(() => addColumnsSql(ref, [{ name: 'must', type: 'STRING', mode: 'REQUIRED' }])).toThrow(
      SettingsError,
    );
    expect(() => columnTypeSql({ name: 'empty', type: 'RECORD', mode: 'NULLABLE', fields: [] })).toThrow(
      'empty.fields: a RECORD needs at least one field',
    );
  });
});

describe('TableAdmin (against a recording fake transport)', () => {
  it('creates the dataset once; a second call and a lost creation race report "not created"', async () => {
    const fake = new RecordingBigQuery(PROJECT);
    const admin = new TableAdmin({
      bigquery: fake.client,
      projectId: PROJECT,
      datasetId: DATASET,
      location: 'EU',
    });

    expect(await admin.ensureDataset()).toEqual({ datasetId: DATASET, created: true });
    expect(await admin.ensureDataset()).toEqual({ datasetId: DATASET, created: false });
    expect(fake.requests.find((r) => r.method === 'POST')?.json).toMatchObject({ location: 'EU' });

    // Another instance creates it between our lookup and our creation.
    const racing = new RecordingBigQuery(PROJECT);
    racing.failNext('POST', /^\/datasets$/, apiError(409, 'duplicate', 'Already Exists'));
    const raced = new TableAdmin({ bigquery: racing.client, projectId: PROJECT, datasetId: DATASET });
    expect(await raced.ensureDataset()).toEqual({ datasetId: DATASET, created: false });
  });

  it('creates the history table partitioned by day on _cluster_time and clustered on _doc_id', async () => {
    const { admin, fake } = setup();

    const first = await admin.ensureHistoryTable('orders', COLUMNS);
    const second = await admin.ensureHistoryTable('orders', COLUMNS);

    const created = fake.tables.get('orders');
    expect(created?.timePartitioning).toEqual({ type: 'DAY', field: '_cluster_time' });
    expect(created?.clustering).toEqual({ fields: ['_doc_id'] });
    expect(first).toMatchObject({ table: 'orders', created: true, missing: [], clustering: ['_doc_id'] });
    expect(second).toMatchObject({ table: 'orders', created: false, missing: [] });
    expect(second.fields.map((f) => f.name)).toEqual(historyTableSchema(COLUMNS).map((f) => f.name));
    expect(fake.requests.filter((r) => r.method === 'POST')).toHaveLength(1);
  });

  it('reads back an existing table, normalising type aliases and naming the wanted fields it lacks', async () => {
    const { admin, fake } = setup();
    // As the original service left it: no metadata columns beyond time_archived and operationType.
    fake.tables.set('legacy', {
      type: 'TABLE',
      schema: {
        fields: [
          { name: '_id', type: 'STRING' },
          { name: 'name', type: 'STRING', mode: 'NULLABLE' },
          { name: 'address', type: 'STRUCT', fields: [{ name: 'zip', type: 'STRING' }] },
          { name: 'time_archived', type: 'TIMESTAMP' },
          { name: 'operationType', type: 'STRING' },
          { name: 'n', type: 'INT64' },
        ],
      },
    });

    const state = await admin.ensureHistoryTable('legacy', COLUMNS);

    expect(state.created).toBe(false);
    expect(state.partitioning).toBeUndefined();
    expect(state.fields.map((f) => `${f.name}:${f.type}:${f.mode}`)).toEqual([
      '_id:STRING:NULLABLE',
      'name:STRING:NULLABLE',
      'address:RECORD:NULLABLE',
      'time_archived:TIMESTAMP:NULLABLE',
      'operationType:STRING:NULLABLE',
      'n:INTEGER:NULLABLE',
    ]);
    expect(state.missing).toEqual([
      'address.city',
      '_cluster_time',
      '_seq',
      '_doc_id',
      '_event_id',
      '_unmapped',
    ]);
  });

  it('issue 10 item 2: relaxes REQUIRED fields of an existing history table to NULLABLE, with the etag, keeping the rest', async () => {
    const { admin, fake } = setup();
    // A table created by an earlier version from declared REQUIRED columns: BigQuery would refuse every
    // delete row and drop marker (they fill only `_id` and the metadata).
    fake.tables.set('strict', {
      type: 'TABLE',
      etag: 'etag-strict',
      schema: {
        fields: [
          { name: '_id', type: 'STRING', mode: 'REQUIRED' },
          { name: 'name', type: 'STRING', mode: 'REQUIRED', description: 'kept' },
          {
            name: 'address',
            type: 'RECORD',
            mode: 'REQUIRED',
            fields: [{ name: 'city', type: 'STRING', mode: 'REQUIRED' }],
          },
          ...historyTableSchema([]).map((f) => ({ name: f.name, type: f.type, mode: f.mode })),
        ],
      },
    });

    const state = await admin.ensureHistoryTable('strict', COLUMNS);

    const patches = fake.requests.filter((r) => r.method === 'PATCH');
    expect(patches).toHaveLength(1);
    expect(patches[0]?.json).toMatchObject({ etag: 'etag-strict' });
    const stored = schemaOf(fake.tables.get('strict')) as {
      name: string;
      mode: string;
      description?: string;
      fields?: { mode: string }[];
    }[];
    expect(stored.slice(0, 3)).toEqual([
      { name: '_id', type: 'STRING', mode: 'NULLABLE' },
      { name: 'name', type: 'STRING', mode: 'NULLABLE', description: 'kept' },
      {
        name: 'address',
        type: 'RECORD',
        mode: 'NULLABLE',
        fields: [{ name: 'city', type: 'STRING', mode: 'NULLABLE' }],
      },
    ]);
    expect(state.relaxed).toEqual(['_id', 'name', 'address', 'address.city']);
    expect(state.fields.every((f) => f.mode !== 'REQUIRED')).toBe(true);

    // Nothing left to relax: no second patch.
    await admin.ensureHistoryTable('strict', COLUMNS);
    expect(fake.requests.filter((r) => r.method === 'PATCH')).toHaveLength(1);
  });

  it('issue 10 item 2: creates a history table without REQUIRED fields from REQUIRED column specs', async () => {
    const { admin, fake } = setup();
    await admin.ensureHistoryTable('declared', [
      { name: '_id', type: 'STRING', mongo_field: '_id', mode: 'REQUIRED' },
      {
        name: 'r',
        type: 'RECORD',
        mode: 'REQUIRED',
        fields: [{ name: 'x', type: 'STRING', mode: 'REQUIRED' }],
      },
    ]);
    expect(JSON.stringify(schemaOf(fake.tables.get('declared')))).not.toContain('REQUIRED');
  });

  it('refuses to treat a view as the history table', async () => {
    const { admin, fake } = setup();
    fake.tables.set('orders', { type: 'VIEW', schema: { fields: [] } });
    await expect(admin.ensureHistoryTable('orders', COLUMNS)).rejects.toThrow(BigQueryError);
  });

  it('creates the dead-letter table <table>_errors partitioned by day on failed_at', async () => {
    const { admin, fake } = setup();

    const state = await admin.ensureDeadLetterTable('orders');
    expect(await admin.ensureDeadLetterTable('orders')).toMatchObject({ created: false });

    expect(state).toMatchObject({ table: 'orders_errors', created: true, clustering: [] });
    expect(fake.tables.get('orders_errors')?.timePartitioning).toEqual({ type: 'DAY', field: 'failed_at' });
    expect(state.fields.map((f) => `${f.name}:${f.type}`)).toEqual(
      DEAD_LETTER_FIELDS.map((f) => `${f.name}:${f.type}`),
    );
    expect(state.fields.map((f) => f.name)).toEqual([
      'mapping_id',
      'event_id',
      '_doc_id',
      'reason',
      'document',
      'failed_at',
    ]);
  });

  it('adds a top-level column by ALTER and a RECORD sub-field by patch, keeping unknown parts of the schema', async () => {
    const { admin, fake } = setup();
    await admin.ensureHistoryTable('orders', COLUMNS);
    const original = fake.tables.get('orders');
    // Something the archiver does not manage, which the patch must carry over as it is.
    fake.tables.set('orders', {
      ...original,
      schema: {
        fields: [
          ...((schemaOf(original) as object[] | undefined) ?? []),
          { name: 'area', type: 'GEOGRAPHY', description: 'added by hand', policyTags: { names: ['pt'] } },
        ],
      },
    });
    const evolution = planEvolution(COLUMNS, {
      _id: 'a',
      name: 'x',
      score: 7,
      address: { city: 'Paris', zip: '75001' },
    });
    expect(evolution.additions).toEqual([
      { parent: ['address'], column: { name: 'zip', type: 'STRING', mongo_field: 'zip' } },
      { parent: [], column: { name: 'score', type: 'INTEGER', mongo_field: 'score' } },
    ]);

    const result = await admin.addColumns('orders', evolution);

    expect(fake.sql[0]).toBe(
      'ALTER TABLE `mba-test.archive.orders`\n  ADD COLUMN IF NOT EXISTS `score` INT64',
    );
    const patch = fake.requests.find((r) => r.method === 'PATCH');
    expect(patch?.json).toMatchObject({ etag: 'etag-1' });
    const patched = schemaOf(fake.tables.get('orders')) as { name: string; fields?: { name: string }[] }[];
    expect(patched.map((f) => f.name)).toEqual([
      '_id',
      'name',
      'address',
      'time_archived',
      'operationType',
      '_cluster_time',
      '_seq',
      '_doc_id',
      '_event_id',
      '_unmapped',
      'area',
      'score',
    ]);
    expect(patched.find((f) => f.name === 'address')?.fields?.map((f) => f.name)).toEqual(['city', 'zip']);
    expect(patched.find((f) => f.name === 'area')).toEqual({
      name: 'area',
      type: 'GEOGRAPHY',
      description: 'added by hand',
      policyTags: { names: ['pt'] },
    });
    expect(result.added).toEqual(['score', 'address.zip']);
    expect(result.fields.find((f) => f.name === 'score')).toEqual({
      name: 'score',
      type: 'INTEGER',
      mode: 'NULLABLE',
    });
    expect(result.views).toEqual({
      replaced: ['orders_view', 'orders_latest_view'],
      current: [],
      dropped: [],
    });
    expect(fake.sql.slice(1).map((s) => s.split(' AS\n')[0])).toEqual([
      'CREATE OR REPLACE VIEW `mba-test.archive.orders_view`',
      'CREATE OR REPLACE VIEW `mba-test.archive.orders_latest_view`',
    ]);

    // Applying the same evolution again adds nothing and sends neither ALTER nor patch.
    const before = {
      sql: fake.sql.length,
      patches: fake.requests.filter((r) => r.method === 'PATCH').length,
    };
    const again = await admin.addColumns('orders', evolution);
    expect(again.added).toEqual([]);
    // Nor view DDL (issue 12): the views carry the hash of the statements and columns they were made from.
    expect(again.views).toEqual({
      replaced: [],
      current: ['orders_view', 'orders_latest_view'],
      dropped: [],
    });
    expect(fake.sql).toHaveLength(before.sql);
    expect(fake.requests.filter((r) => r.method === 'PATCH')).toHaveLength(before.patches);
  });

  it('re-reads and re-merges when the table changed between read and patch (HTTP 412)', async () => {
    const { admin, fake } = setup();
    await admin.ensureHistoryTable('orders', COLUMNS);
    fake.failNext('PATCH', /tables\/orders$/, apiError(412, 'conditionNotMet', 'Precondition check failed.'));
    const evolution = planEvolution(COLUMNS, { _id: 'a', address: { city: 'Paris', zip: '75001' } });

    const result = await admin.addColumns('orders', evolution);

    expect(result.added).toEqual(['address.zip']);
    expect(fake.requests.filter((r) => r.method === 'PATCH' && r.uri.endsWith('/orders'))).toHaveLength(2);
  });

  it('refuses an addition that conflicts with an existing column, before patching', async () => {
    const { admin, fake } = setup();
    await admin.ensureHistoryTable('orders', COLUMNS);

    await expect(
      admin.addColumns('orders', {
        columns: COLUMNS,
        additions: [{ parent: [], column: { name: 'NAME', type: 'INTEGER' } }],
      }),
    ).rejects.toThrow(/cannot add NAME NULLABLE INTEGER to table orders: it exists as NULLABLE STRING/);
    await expect(
      admin.addColumns('orders', {
        columns: COLUMNS,
        additions: [{ parent: ['name'], column: { name: 'x', type: 'STRING' } }],
      }),
    ).rejects.toThrow(/name is not a RECORD column/);
    // Even with a valid new top-level column alongside, nothing is altered when one addition conflicts.
    await expect(
      admin.addColumns('orders', {
        columns: COLUMNS,
        additions: [
          { parent: [], column: { name: 'score', type: 'INTEGER' } },
          { parent: ['missing'], column: { name: 'x', type: 'STRING' } },
        ],
      }),
    ).rejects.toThrow(/missing is not a RECORD column/);
    expect(fake.sql).toEqual([]);
    expect(fake.requests.filter((r) => r.method === 'PATCH')).toEqual([]);
  });

  it('drops a stale <table>_latest_view when no column is a primary key any more, but never a table', async () => {
    const { admin, fake } = setup();
    const noKey = COLUMNS.map((c) => ({ name: c.name, type: c.type, ...(c.fields && { fields: c.fields }) }));
    fake.tables.set('orders_latest_view', { type: 'VIEW' });

    expect(await admin.ensureViews('orders', noKey)).toEqual({
      replaced: ['orders_view'],
      current: [],
      dropped: ['orders_latest_view'],
    });
    expect(fake.sql.at(-1)).toBe('DROP VIEW IF EXISTS `mba-test.archive.orders_latest_view`');

    const unchanged = { replaced: [], current: ['orders_view'], dropped: [] };
    fake.tables.set('orders_latest_view', { type: 'TABLE' });
    expect(await admin.ensureViews('orders', noKey)).toEqual(unchanged);
    fake.tables.delete('orders_latest_view');
    expect(await admin.ensureViews('orders', noKey)).toEqual(unchanged);
    expect(fake.sql.filter((s) => s.startsWith('DROP'))).toHaveLength(1);
  });

  it('issue 12: a view labelled with the hash of its statement and columns gets no DDL; other columns, another hash or no label do', async () => {
    const { admin, fake } = setup();
    const first = await admin.ensureViews('orders', COLUMNS);
    expect(first.replaced).toEqual(['orders_view', 'orders_latest_view']);
    const labels = ['orders_view', 'orders_latest_view'].map((v) => fake.tables.get(v)?.labels);
    expect(labels).toEqual([
      { [VIEW_HASH_LABEL]: expect.stringMatching(/^[0-9a-f]{40}$/) as unknown },
      { [VIEW_HASH_LABEL]: expect.stringMatching(/^[0-9a-f]{40}$/) as unknown },
    ]);

    // A second start: one tables.get per view, no statement.
    const sent = fake.sql.length;
    expect(await admin.ensureViews('orders', COLUMNS)).toEqual({
      replaced: [],
      current: ['orders_view', 'orders_latest_view'],
      dropped: [],
    });
    expect(fake.sql).toHaveLength(sent);

    // A column more: both views are created again (BigQuery records a view's schema when it is created).
    const more = [...COLUMNS, { name: 'total', type: 'FLOAT' } as const];
    expect((await admin.ensureViews('orders', more)).replaced).toEqual(['orders_view', 'orders_latest_view']);
    expect(fake.sql.slice(sent).map((s) => s.split(' AS\n')[0])).toEqual([
      'CREATE OR REPLACE VIEW `mba-test.archive.orders_view`',
      'CREATE OR REPLACE VIEW `mba-test.archive.orders_latest_view`',
    ]);

    // Replaced by other means (its labels gone), or labelled from other SQL: created again.
    fake.tables.set('orders_view', { type: 'VIEW' });
    fake.tables.set('orders_latest_view', { type: 'VIEW', labels: { [VIEW_HASH_LABEL]: 'not-this-one' } });
    expect((await admin.ensureViews('orders', more)).replaced).toEqual(['orders_view', 'orders_latest_view']);
    expect(fake.sql).toHaveLength(sent + 4);
  });

  it('drops a view before replacing it only with the explicit emulator workaround, and only on loopback', async () => {
    const fake = new RecordingBigQuery(PROJECT);
    const admin = new TableAdmin({
      bigquery: fake.client,
      projectId: PROJECT,
      datasetId: DATASET,
      emulatorWorkarounds: { dropViewBeforeReplace: true },
    });
    await admin.ensureViews('orders', COLUMNS);
    expect(fake.sql.map((s) => s.split(' AS\n')[0])).toEqual([
      'DROP VIEW IF EXISTS `mba-test.archive.orders_view`',
      'CREATE OR REPLACE VIEW `mba-test.archive.orders_view`',
      'DROP VIEW IF EXISTS `mba-test.archive.orders_latest_view`',
      'CREATE OR REPLACE VIEW `mba-test.archive.orders_latest_view`',
    ]);

    const remote = new RecordingBigQuery(PROJECT, 'https://bigquery.googleapis.com');
    expect(
      () =>
        new TableAdmin({
          bigquery: remote.client,
          projectId: PROJECT,
          datasetId: DATASET,
          emulatorWorkarounds: { dropViewBeforeReplace: true },
        }),
    ).toThrow(ConfigError);
  });

  it('issue 10 item 16: adds one column per ALTER TABLE only with the emulator workaround, and only on loopback', async () => {
    const additions = [
      { parent: [], column: { name: 'a', type: 'STRING' } },
      { parent: [], column: { name: 'b', type: 'INTEGER' } },
    ] as const;
    const run = async (oneColumnPerAlter: boolean) => {
      const fake = new RecordingBigQuery(PROJECT);
      fake.datasets.add(DATASET);
      const admin = new TableAdmin({
        bigquery: fake.client,
        projectId: PROJECT,
        datasetId: DATASET,
        emulatorWorkarounds: { oneColumnPerAlter },
      });
      await admin.ensureHistoryTable('orders', COLUMNS);
      await admin.addColumns('orders', {
        columns: [...COLUMNS, ...additions.map((a) => a.column)],
        additions,
      });
      return fake.sql.filter((sql) => sql.startsWith('ALTER'));
    };
    // bqemulator ignores the several-clause form (test/integration/peers/bigquery.test.ts).
    expect(await run(true)).toEqual([
      'ALTER TABLE `mba-test.archive.orders`\n  ADD COLUMN IF NOT EXISTS `a` STRING',
      'ALTER TABLE `mba-test.archive.orders`\n  ADD COLUMN IF NOT EXISTS `b` INT64',
    ]);
    expect(await run(false)).toEqual([
      'ALTER TABLE `mba-test.archive.orders`\n  ADD COLUMN IF NOT EXISTS `a` STRING,\n  ADD COLUMN IF NOT EXISTS `b` INT64',
    ]);
    const remote = new RecordingBigQuery(PROJECT, 'https://bigquery.googleapis.com');
    expect(
      () =>
        new TableAdmin({
          bigquery: remote.client,
          projectId: PROJECT,
          datasetId: DATASET,
          emulatorWorkarounds: { oneColumnPerAlter: true },
        }),
    ).toThrow(ConfigError);
  });

  it('wraps failures of BigQuery as BigQueryError, keeping the cause and its class', async () => {
    const { admin, fake } = setup();
    const cause = apiError(403, 'accessDenied', 'Access Denied: Table mba-test:archive.orders');
    fake.failNext('GET', /tables\/orders$/, cause);

    const failure = admin.ensureHistoryTable('orders', COLUMNS);

    await expect(failure).rejects.toBeInstanceOf(BigQueryError);
    await expect(failure).rejects.toMatchObject({
      failureClass: 'fatal',
      message: 'reading table orders: Access Denied: Table mba-test:archive.orders',
      cause,
    });
  });

  it('issue 14: prepare introspects, diffs and applies: everything created once, a second prepare only reads', async () => {
    const fake = new RecordingBigQuery(PROJECT);
    const admin = new TableAdmin({ bigquery: fake.client, projectId: PROJECT, datasetId: DATASET });

    const first = await admin.prepare('orders', COLUMNS);
    expect(first.diff.kind).toBe('create');
    expect(fake.datasets.has(DATASET)).toBe(true);
    expect([...fake.tables.keys()].sort()).toEqual([
      'orders',
      'orders_errors',
      'orders_latest_view',
      'orders_view',
    ]);

    const before = fake.requests.length;
    const second = await admin.prepare('orders', COLUMNS);
    const writes = fake.requests.slice(before).filter((r) => r.method !== 'GET');
    expect(writes).toEqual([]);
    expect(second).toMatchObject({ diff: { kind: 'existing', additions: [], relax: [] }, conflicts: [] });
    expect(second.columns).toBe(COLUMNS);
  });

  it('issue 14: prepare adds only what an existing table lacks and keeps its types where they conflict', async () => {
    const { admin, fake } = setup();
    fake.tables.set('orders', {
      type: 'TABLE',
      etag: 'etag-orders',
      schema: {
        fields: [
          { name: '_id', type: 'STRING' },
          { name: 'name', type: 'INTEGER' },
          ...historyTableSchema([]).map((f) => ({ name: f.name, type: f.type, mode: f.mode })),
        ],
      },
    });

    const prepared = await admin.prepare('orders', COLUMNS);

    expect(prepared.conflicts).toEqual([
      'name: the columns say NULLABLE STRING, the table has NULLABLE INTEGER',
    ]);
    expect(prepared.columns.find((c) => c.name === 'name')?.type).toBe('INTEGER');
    expect(fake.sql.filter((q) => q.startsWith('ALTER TABLE'))).toEqual([
      'ALTER TABLE `mba-test.archive.orders`\n  ADD COLUMN IF NOT EXISTS `address` STRUCT<`city` STRING>',
    ]);
    expect(prepared.fields.map((f) => f.name)).toContain('address');
    // The additions regenerate the views; the views found before them are not replaced a second time.
    expect(fake.sql.filter((q) => q.startsWith('CREATE OR REPLACE VIEW'))).toHaveLength(2);
  });
});
