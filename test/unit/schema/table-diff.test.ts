// The pure middle of table administration: what a history table must become for a mapping's columns, and
// what happens to each view. `plan` prints these; `run` applies them.
import { describe, expect, it } from 'vitest';
import { type ActualField } from '../../../src/schema/align.js';
import { changesTable, diffHistoryTable, diffView } from '../../../src/schema/table-diff.js';
import { historyTableSchema, METADATA_FIELDS } from '../../../src/schema/table-schema.js';
import { type ColumnSpec } from '../../../src/schema/types.js';

const field = (name: string, type: string, mode = 'NULLABLE', fields?: ActualField[]): ActualField => ({
  name,
  type,
  mode,
  ...(fields && { fields }),
});

const METADATA: ActualField[] = METADATA_FIELDS.map((f) => field(f.name, f.type, f.mode));

const COLUMNS: ColumnSpec[] = [
  { name: '_id', type: 'STRING', mongo_field: '_id', primary_key: true },
  { name: 'qty', type: 'INTEGER' },
  {
    name: 'address',
    type: 'RECORD',
    fields: [
      { name: 'city', type: 'STRING' },
      { name: 'zip', type: 'STRING' },
    ],
  },
];

const TABLE: ActualField[] = [
  field('_id', 'STRING'),
  field('qty', 'INTEGER'),
  field('address', 'RECORD', 'NULLABLE', [field('city', 'STRING'), field('zip', 'STRING')]),
  ...METADATA,
];

describe('diffHistoryTable', () => {
  it('creates an absent table with the columns (never REQUIRED) and the metadata columns', () => {
    const required: ColumnSpec[] = [{ name: 'must', type: 'STRING', mode: 'REQUIRED' }];
    const diff = diffHistoryTable(required, undefined);
    expect(diff).toEqual({ kind: 'create', fields: historyTableSchema(required), columns: required });
    expect(diff.kind === 'create' && diff.fields[0]?.mode).toBe('NULLABLE');
    expect(changesTable(diff)).toBe(true);
  });

  it('changes nothing when the table has every column with its type', () => {
    const diff = diffHistoryTable(COLUMNS, TABLE);
    expect(diff).toEqual({ kind: 'existing', columns: COLUMNS, additions: [], conflicts: [], relax: [] });
    expect(changesTable(diff)).toBe(false);
  });

  it('adds the columns and metadata columns the table lacks, in order', () => {
    const table = TABLE.filter((f) => f.name !== 'qty' && f.name !== '_seq');
    const diff = diffHistoryTable(COLUMNS, table);
    expect(diff.kind === 'existing' && diff.additions).toEqual([
      { parent: [], column: { name: 'qty', type: 'INTEGER' } },
      { parent: [], column: METADATA_FIELDS.find((f) => f.name === '_seq') },
    ]);
    expect(changesTable(diff)).toBe(true);
  });

  it('adds a missing RECORD sub-field under its parent, and a missing RECORD with its sub-fields', () => {
    const withoutZip = TABLE.map((f) =>
      f.name === 'address' ? field('address', 'RECORD', 'NULLABLE', [field('city', 'STRING')]) : f,
    );
    expect(diffHistoryTable(COLUMNS, withoutZip)).toMatchObject({
      additions: [{ parent: ['address'], column: { name: 'zip', type: 'STRING' } }],
      conflicts: [],
    });
    const withoutAddress = TABLE.filter((f) => f.name !== 'address');
    expect(diffHistoryTable(COLUMNS, withoutAddress)).toMatchObject({
      additions: [{ parent: [], column: COLUMNS[2] }],
    });
  });

  it('reports a column whose type conflicts with the table, and maps it with the table type', () => {
    const table = TABLE.map((f) => (f.name === 'qty' ? field('qty', 'STRING') : f));
    const diff = diffHistoryTable(COLUMNS, table);
    expect(diff.kind === 'existing' && diff.conflicts).toEqual([
      'qty: the columns say NULLABLE INTEGER, the table has NULLABLE STRING',
    ]);
    expect(diff.columns.find((c) => c.name === 'qty')?.type).toBe('STRING');
    // A conflict alone adds nothing: BigQuery cannot retype a column.
    expect(diff.kind === 'existing' && diff.additions).toEqual([]);
  });

  it('names every REQUIRED field of the table, at every depth, to be relaxed', () => {
    const table = TABLE.map((f) => {
      if (f.name === '_id') return field('_id', 'STRING', 'REQUIRED');
      if (f.name === 'address') {
        return field('address', 'RECORD', 'NULLABLE', [
          field('city', 'STRING', 'REQUIRED'),
          field('zip', 'STRING'),
        ]);
      }
      return f;
    });
    const diff = diffHistoryTable(COLUMNS, table);
    expect(diff).toMatchObject({ relax: ['_id', 'address.city'], additions: [], conflicts: [] });
    expect(changesTable(diff)).toBe(true);
  });
});

describe('diffView', () => {
  it('creates an absent view, keeps one labelled with the same hash, replaces one with another or none', () => {
    expect(diffView('h1', undefined)).toBe('create');
    expect(diffView('h1', { type: 'VIEW', viewHash: 'h1' })).toBe('keep');
    expect(diffView('h1', { type: 'VIEW', viewHash: 'h0' })).toBe('replace');
    expect(diffView('h1', { type: 'VIEW', viewHash: undefined })).toBe('replace');
  });

  it('drops an unwanted view, but never a table of its name', () => {
    expect(diffView(undefined, { type: 'VIEW', viewHash: 'h1' })).toBe('drop');
    expect(diffView(undefined, { type: 'TABLE', viewHash: undefined })).toBe('none');
    expect(diffView(undefined, undefined)).toBe('none');
  });
});
