import { describe, expect, it } from 'vitest';
import { tableRef } from '../../../src/schema/identifiers.js';
import { TableAdmin } from '../../../src/bigquery/table-admin.js';
import { currentStateViewSql, latestViewSql, viewHash, viewNames } from '../../../src/bigquery/views.js';
import { IdentifierError, SettingsError } from '../../../src/errors.js';
import { parseColumnSpecs } from '../../../src/schema/column-spec.js';
import { type ColumnSpec } from '../../../src/schema/types.js';
import { RecordingBigQuery } from './recording-bigquery.js';

const PROJECT = 'mba-test';
const DATASET = 'archive';
const SQL_NAME = 'x` ; DROP TABLE t; --';

const history = tableRef(PROJECT, DATASET, 'orders');
const view = tableRef(PROJECT, DATASET, 'orders_view');

const COLUMNS: readonly ColumnSpec[] = [
  { name: '_id', type: 'STRING', mongo_field: '_id', primary_key: true },
  { name: 'status', type: 'STRING' },
];

describe('view SQL', () => {
  it('names the derived objects of a history table', () => {
    expect(viewNames('orders')).toEqual({
      view: 'orders_view',
      latestView: 'orders_latest_view',
      errors: 'orders_errors',
    });
  });

  it('<table>_view: latest row per _doc_id by _seq, deletes and rows up to the last drop excluded (golden)', () => {
    expect(currentStateViewSql(history)).toBe(
      [
        'SELECT * EXCEPT (`_mba_rn`) FROM (',
        '  SELECT h.*, ROW_NUMBER() OVER (PARTITION BY h.`_doc_id` ORDER BY h.`_seq` DESC) AS `_mba_rn`',
        '  FROM `mba-test.archive.orders` AS h',
        '  WHERE h.`_doc_id` IS NOT NULL',
        "    AND h.`_seq` > COALESCE((SELECT MAX(d.`_seq`) FROM `mba-test.archive.orders` AS d WHERE d.`operationType` = 'drop'), '')",
        ')',
        "WHERE `_mba_rn` = 1 AND `operationType` != 'delete'",
      ].join('\n'),
    );
  });

  it('<table>_latest_view: latest row per primary-key value, built on <table>_view (golden)', () => {
    expect(latestViewSql(view, COLUMNS)).toBe(
      [
        'SELECT * EXCEPT (`_mba_rn`) FROM (',
        '  SELECT v.*, ROW_NUMBER() OVER (PARTITION BY v.`_id` ORDER BY v.`_seq` DESC, v.`_doc_id` DESC) AS `_mba_rn`',
        '  FROM `mba-test.archive.orders_view` AS v',
        ')',
        'WHERE `_mba_rn` = 1',
      ].join('\n'),
    );
  });

  it('<table>_latest_view partitions by every primary-key column, quoted, in column order', () => {
    const sql = latestViewSql(view, [
      { name: 'tenant', type: 'STRING', primary_key: true },
      { name: 'select', type: 'INTEGER', primary_key: true },
      { name: 'note', type: 'STRING', primary_key: false },
    ]);
    expect(sql).toContain('PARTITION BY v.`tenant`, v.`select` ORDER BY v.`_seq` DESC, v.`_doc_id` DESC');
  });

  it('issue 12: the hash a view is labelled with changes with its statement and with the columns, and is a legal label value', () => {
    const statement = `CREATE OR REPLACE VIEW ${view.sql} AS\n${currentStateViewSql(history)}`;
    const hash = viewHash(statement, COLUMNS);
    // BigQuery label values: at most 63 characters, lower-case letters, digits, `_` and `-`.
    expect(hash).toMatch(/^[0-9a-f]{40}$/);
    expect(viewHash(statement, COLUMNS)).toBe(hash);
    expect(viewHash(`${statement} `, COLUMNS)).not.toBe(hash);
    expect(viewHash(statement, [...COLUMNS, { name: 'total', type: 'FLOAT' }])).not.toBe(hash);
    const retyped: ColumnSpec[] = COLUMNS.map((c) => (c.name === 'status' ? { ...c, type: 'INTEGER' } : c));
    expect(viewHash(statement, retyped)).not.toBe(hash);
  });

  it('has no <table>_latest_view without a primary key', () => {
    expect(latestViewSql(view, [{ name: 'status', type: 'STRING' }])).toBeUndefined();
    expect(latestViewSql(view, [])).toBeUndefined();
  });
});

// Regression, defect 7 of the original service (DESIGN 2.3): the primary key name was concatenated into the
// view SQL unquoted, so a settings document could inject SQL. Names are now validated before any SQL exists.
describe('a settings document whose primary key or column name is crafted as SQL', () => {
  const crafted: unknown = [
    { name: SQL_NAME, type: 'STRING', mongo_field: '_id', primary_key: true },
    { name: 'status', type: 'STRING' },
  ];
  const craftedColumns: readonly ColumnSpec[] = [
    { name: SQL_NAME, type: 'STRING', mongo_field: '_id', primary_key: true },
    { name: 'status', type: 'STRING' },
  ];
  const craftedRecord: readonly ColumnSpec[] = [
    { name: '_id', type: 'STRING', mongo_field: '_id', primary_key: true },
    { name: 'address', type: 'RECORD', fields: [{ name: SQL_NAME, type: 'STRING' }] },
  ];

  function admin(): { admin: TableAdmin; fake: RecordingBigQuery } {
    const fake = new RecordingBigQuery(PROJECT);
    fake.datasets.add(DATASET);
    return { admin: new TableAdmin({ bigquery: fake.client, projectId: PROJECT, datasetId: DATASET }), fake };
  }

  it('is refused by the settings parser, naming the column', () => {
    expect(() => parseColumnSpecs(crafted)).toThrow(SettingsError);
    expect(() => parseColumnSpecs(crafted)).toThrow(
      'columns[0].name: "x` ; DROP TABLE t; --" must contain only letters, digits and underscores',
    );
  });

  it('is refused by latestViewSql before any SQL text is returned', () => {
    expect(() => latestViewSql(view, craftedColumns)).toThrow(IdentifierError);
  });

  it('is refused by every TableAdmin method before any request, let alone SQL, is sent', async () => {
    const { admin: tableAdmin, fake } = admin();

    await expect(tableAdmin.ensureViews('orders', craftedColumns)).rejects.toThrow(IdentifierError);
    await expect(tableAdmin.ensureHistoryTable('orders', craftedColumns)).rejects.toThrow(IdentifierError);
    await expect(tableAdmin.ensureHistoryTable('orders', craftedRecord)).rejects.toThrow(IdentifierError);
    await expect(
      tableAdmin.addColumns('orders', {
        columns: COLUMNS,
        additions: [{ parent: [], column: { name: SQL_NAME, type: 'STRING' } }],
      }),
    ).rejects.toThrow(IdentifierError);
    await expect(
      tableAdmin.addColumns('orders', {
        columns: COLUMNS,
        additions: [{ parent: [SQL_NAME], column: { name: 'zip', type: 'STRING' } }],
      }),
    ).rejects.toThrow(IdentifierError);
    await expect(
      tableAdmin.addColumns('orders', {
        columns: COLUMNS,
        additions: [
          {
            parent: [],
            column: { name: 'geo', type: 'RECORD', fields: [{ name: SQL_NAME, type: 'FLOAT' }] },
          },
        ],
      }),
    ).rejects.toThrow(IdentifierError);
    // The views of the evolved columns are checked before the schema is touched.
    await expect(tableAdmin.addColumns('orders', { columns: craftedColumns, additions: [] })).rejects.toThrow(
      IdentifierError,
    );

    expect(fake.sql).toEqual([]);
    expect(fake.requests).toEqual([]);
  });

  it('as a table name, is refused by every TableAdmin method before any request', async () => {
    const { admin: tableAdmin, fake } = admin();

    await expect(tableAdmin.ensureHistoryTable(SQL_NAME, COLUMNS)).rejects.toThrow(IdentifierError);
    await expect(tableAdmin.ensureViews(SQL_NAME, COLUMNS)).rejects.toThrow(IdentifierError);
    await expect(tableAdmin.ensureDeadLetterTable(SQL_NAME)).rejects.toThrow(IdentifierError);
    await expect(tableAdmin.addColumns(SQL_NAME, { columns: COLUMNS, additions: [] })).rejects.toThrow(
      IdentifierError,
    );

    expect(fake.requests).toEqual([]);
  });

  it('as a project or dataset id, is refused when the TableAdmin is built', () => {
    const fake = new RecordingBigQuery(PROJECT);
    expect(() => new TableAdmin({ bigquery: fake.client, projectId: PROJECT, datasetId: SQL_NAME })).toThrow(
      IdentifierError,
    );
    expect(() => new TableAdmin({ bigquery: fake.client, projectId: SQL_NAME, datasetId: DATASET })).toThrow(
      IdentifierError,
    );
    expect(fake.requests).toEqual([]);
  });

  it('while legal names do reach the fake: both views are created with quoted identifiers', async () => {
    const { admin: tableAdmin, fake } = admin();

    const result = await tableAdmin.ensureViews('orders', COLUMNS);

    expect(result).toEqual({ replaced: ['orders_view', 'orders_latest_view'], current: [], dropped: [] });
    expect(fake.sql).toEqual([
      `CREATE OR REPLACE VIEW \`mba-test.archive.orders_view\` AS\n${currentStateViewSql(history)}`,
      `CREATE OR REPLACE VIEW \`mba-test.archive.orders_latest_view\` AS\n${latestViewSql(view, COLUMNS) ?? ''}`,
    ]);
  });
});
