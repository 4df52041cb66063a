import { readFileSync } from 'node:fs';
import { ObjectId } from 'bson';
import { describe, expect, it } from 'vitest';
import { parseMappingSettings } from '../../../src/config/settings.js';
import { INFERRED_COLUMNS_FIELD } from '../../../src/core/settings.js';
import { SettingsError } from '../../../src/errors.js';
import { columnsHash, parseColumnSpecs } from '../../../src/schema/column-spec.js';

const example = JSON.parse(
  readFileSync(new URL('../../fixtures/original-readme-settings.json', import.meta.url), 'utf8'),
) as Record<string, unknown>;

function issuesOf(document: Record<string, unknown>): readonly string[] {
  try {
    parseMappingSettings(document);
  } catch (error) {
    if (error instanceof SettingsError) return error.issues;
    throw error;
  }
  return [];
}

describe('settings documents', () => {
  it("reads the original README's example", () => {
    const id = new ObjectId('65a1b2c3d4e5f60718293a4b');
    const settings = parseMappingSettings({ _id: id, ...example });
    expect(settings).toMatchObject({
      id: '65a1b2c3d4e5f60718293a4b',
      mongoDatabase: 'bidding',
      mongoCollection: 'ad_cpta',
      bigqueryTable: 'facebook_ad_cpta',
      bigqueryDataset: undefined,
      backfillFullCollection: true,
      dryrun: false,
      schemaEvolution: 'off',
      captureUnmapped: true,
      onHistoryLost: 'fail',
      warnings: [],
    });
    expect(settings.columns?.map((c) => c.name)).toEqual([
      'tracking_code',
      'midnight_to_timestamp',
      'created_on_timestamp',
      'lifetime_to_timestamp',
    ]);
  });

  it('defaults schema evolution to add_columns when the columns are to be inferred', () => {
    const { columns: _c, ...noColumns } = example;
    expect(parseMappingSettings({ _id: 'm', ...noColumns }).schemaEvolution).toBe('add_columns');
  });

  it('issue 10 item 5: columns the service inferred and wrote back keep the add_columns default; a hand edit makes them declared', () => {
    const { columns: _c, ...noColumns } = example;
    const inferred = parseColumnSpecs([
      { name: '_id', type: 'STRING', mongo_field: '_id', primary_key: true },
      { name: 'price', type: 'FLOAT' },
    ]).columns;
    // As the settings store writes them back for an inferred mapping (columns and their fingerprint), read
    // again after a daemon restart; key order as a GUI might show it.
    const written = {
      _id: 'm',
      ...noColumns,
      columns: inferred.map((c) => Object.fromEntries(Object.entries(c).reverse())),
      [INFERRED_COLUMNS_FIELD]: columnsHash(inferred),
    };
    expect(parseMappingSettings(written)).toMatchObject({
      columnsOrigin: 'inferred',
      schemaEvolution: 'add_columns',
      warnings: [],
    });
    const edited = { ...written, columns: [...written.columns, { name: 'extra', type: 'STRING' }] };
    expect(parseMappingSettings(edited)).toMatchObject({ columnsOrigin: 'declared', schemaEvolution: 'off' });
    expect(parseMappingSettings({ ...edited, schema_evolution: 'add_columns' }).schemaEvolution).toBe(
      'add_columns',
    );
    // The fingerprint is the service's own field: it configures nothing and restarts nothing.
    expect(parseMappingSettings(written).configurationKey).toBe(
      parseMappingSettings({ _id: 'm', ...noColumns }).configurationKey,
    );
  });

  it('names every invalid field, columns included', () => {
    const columns = structuredClone(example.columns) as { fields?: { type: string }[] }[];
    const third = columns[3];
    if (third?.fields?.[0]) third.fields[0].type = 'FLOATY';
    expect(
      issuesOf({
        _id: 'm',
        ...example,
        mongo_collection: 42,
        dryrun: 'yes',
        on_history_lost: 'ignore',
        columns,
      }),
    ).toEqual([
      'mongo_collection: expected a string',
      'dryrun: expected true or false',
      'on_history_lost: expected one of fail, resnapshot, repair',
      'columns[3].fields[0].type: expected one of STRING, BYTES, INTEGER, FLOAT, BOOLEAN, TIMESTAMP, DATE, TIME, DATETIME, RECORD, NUMERIC, BIGNUMERIC, JSON',
    ]);
  });

  it('issue 11: backfill_parallelism is a whole number from 1 to 64, unset by default (the configuration key stays)', () => {
    const plain = parseMappingSettings({ _id: 'm', ...example });
    expect(plain.backfillParallelism).toBeUndefined();
    const set = parseMappingSettings({ _id: 'm', ...example, backfill_parallelism: 8 });
    expect(set.backfillParallelism).toBe(8);
    expect(set.configurationKey).not.toBe(plain.configurationKey);
    for (const value of [0, 2.5, 65, '4']) {
      expect(issuesOf({ _id: 'm', ...example, backfill_parallelism: value })).toEqual([
        'backfill_parallelism: expected a whole number from 1 to 64',
      ]);
    }
  });

  it('rejects table and dataset names BigQuery would not accept, before any SQL exists', () => {
    expect(issuesOf({ _id: 'm', ...example, bigquery_table: 'x` ; DROP TABLE t; --' })[0]).toMatch(
      /^bigquery_table: not a valid BigQuery table name/,
    );
    expect(issuesOf({ _id: 'm', ...example, bigquery_dataset: 'a-b' })[0]).toMatch(
      /^bigquery_dataset: not a valid BigQuery dataset id/,
    );
    expect(issuesOf({ _id: 'm', ...example, mongo_database: 'a.b' })).toEqual([
      'mongo_database: not a valid MongoDB database name',
    ]);
  });

  it('issue 10 item 15: an invalid bigquery_dataset is named in the problems, with every other problem', () => {
    expect(issuesOf({ _id: 'm', ...example, bigquery_dataset: 'my-dataset', dryrun: 'yes' })).toEqual([
      'dryrun: expected true or false',
      'bigquery_dataset: not a valid BigQuery dataset id (letters, digits and underscores, at most 1024)',
    ]);
    expect(issuesOf({ _id: 'm', ...example, bigquery_dataset: 'a`b', bigquery_table: 'ok' })).toEqual([
      'bigquery_dataset: not a valid BigQuery dataset id (letters, digits and underscores, at most 1024)',
    ]);
  });

  it('warns about unknown fields and ignores the fields the service writes itself', () => {
    const settings = parseMappingSettings({
      _id: 'm',
      ...example,
      lastChangeId: { _data: '8263' },
      lastFailure: 'x',
      status: { state: 'running' },
      colour: 'red',
    });
    expect(settings.warnings).toEqual(['colour: unknown field ignored']);
  });

  // Issue 13: `backfil_full_collection: true` was accepted with a generic warning and the backfill silently
  // stayed off: the documents already in the collection never reached BigQuery.
  it('issue 13: a near miss of a setting makes the document invalid, with the field it probably meant', () => {
    const { backfill_full_collection: _b, ...rest } = example;
    expect(issuesOf({ _id: 'm', ...rest, backfil_full_collection: true })).toEqual([
      'backfil_full_collection: unknown field; did you mean backfill_full_collection?',
    ]);
    expect(issuesOf({ _id: 'm', ...example, dryRun: true, bigquery_datset: 'other' })).toEqual([
      'dryRun: unknown field; did you mean dryrun?',
      'bigquery_datset: unknown field; did you mean bigquery_dataset?',
    ]);
    expect(issuesOf({ _id: 'm', ...example, on_hisotry_lost: 'resnapshot', colums: [] })).toEqual([
      'on_hisotry_lost: unknown field; did you mean on_history_lost?',
      'colums: unknown field; did you mean columns?',
    ]);
    // A field far from every setting is the document's own note: a warning, and the mapping runs.
    expect(parseMappingSettings({ _id: 'm', ...example, owner: 'ads team' }).warnings).toEqual([
      'owner: unknown field ignored',
    ]);
  });

  it('issue 13: a required field that is absent is said to be missing, next to the near miss that was meant', () => {
    const { mongo_collection: _c, ...rest } = example;
    expect(issuesOf({ _id: 'm', ...rest, mongo_colection: 'ad_cpta' })).toEqual([
      'mongo_collection: missing (expected a string)',
      'mongo_colection: unknown field; did you mean mongo_collection?',
    ]);
  });

  it("keeps the configuration key when only the service's own fields change, and changes it otherwise", () => {
    const base = parseMappingSettings({ _id: 'm', ...example }).configurationKey;
    const serviceWrites = parseMappingSettings({
      _id: 'm',
      ...example,
      columns: [{ name: 'x', type: 'STRING' }],
      lastChangeId: { _data: '82' },
      lastFailure: 'boom',
      status: { state: 'running', lagSeconds: 3 },
    }).configurationKey;
    const userChange = parseMappingSettings({
      _id: 'm',
      ...example,
      bigquery_table: 'other',
    }).configurationKey;
    expect(serviceWrites).toBe(base);
    expect(userChange).not.toBe(base);
  });

  it('issue 14: verify is off by default, takes defaults, and changing it keeps the configuration key', () => {
    const base = parseMappingSettings({ _id: 'm', ...example });
    expect(base.verify).toBeUndefined();
    const on = parseMappingSettings({ _id: 'm', ...example, verify: {} });
    expect(on.verify).toEqual({ intervalMinutes: 60, share: 0.1, repair: false });
    const tuned = parseMappingSettings({
      _id: 'm',
      ...example,
      verify: { interval_minutes: 5, share: 1, repair: true },
    });
    expect(tuned.verify).toEqual({ intervalMinutes: 5, share: 1, repair: true });
    expect(on.configurationKey).toBe(base.configurationKey);
    expect(tuned.configurationKey).toBe(base.configurationKey);
  });

  it('issue 14: verify names its invalid fields', () => {
    expect(issuesOf({ ...example, verify: { interval_minutes: 0, share: 0, repair: 'yes' } })).toEqual([
      'verify.interval_minutes: expected minutes, at least 1',
      'verify.share: expected a share above 0 and at most 1',
      'verify.repair: expected true or false',
    ]);
    expect(issuesOf({ ...example, verify: { shares: 0.5 } })).toHaveLength(1);
  });

  it('issue 14: a new repair request restarts the mapping (its configuration key changes); on_history_lost takes repair', () => {
    const base = parseMappingSettings({ _id: 'm', ...example });
    const requested = parseMappingSettings({
      _id: 'm',
      ...example,
      repair_requested_at: new Date('2026-12-06T10:00:00Z'),
      on_history_lost: 'repair',
    });
    expect(requested.onHistoryLost).toBe('repair');
    const onlyRequested = parseMappingSettings({
      _id: 'm',
      ...example,
      repair_requested_at: new Date('2026-12-06T10:00:00Z'),
    });
    expect(onlyRequested.configurationKey).not.toBe(base.configurationKey);
  });
});
