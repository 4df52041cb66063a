import { describe, expect, it } from 'vitest';
import { alignWithTable, missingFromTable, type ActualField } from '../../../src/schema/align.js';
import { planEvolution } from '../../../src/schema/evolve.js';
import { type ColumnSpec } from '../../../src/schema/types.js';

const ID: ColumnSpec = { name: '_id', type: 'STRING', mongo_field: '_id', primary_key: true };
const field = (name: string, type: string, mode = 'NULLABLE', fields?: ActualField[]): ActualField => ({
  name,
  type,
  mode,
  ...(fields && { fields }),
});

describe('columns aligned with the existing table', () => {
  it('issue 10 item 10: keeps the same array when the table agrees (REQUIRED counts as NULLABLE, names are case-insensitive)', () => {
    const columns: ColumnSpec[] = [ID, { name: 'Name', type: 'STRING', mode: 'REQUIRED' }];
    const table = [field('_id', 'STRING', 'REQUIRED'), field('name', 'STRING')];
    const alignment = alignWithTable(columns, table);
    expect(alignment.columns).toBe(columns);
    expect(alignment.conflicts).toEqual([]);
  });

  it('issue 10 item 10: takes the type, mode and sub-fields the table has, keeps mongo_field, and names each difference', () => {
    const columns: ColumnSpec[] = [
      ID,
      { name: 's', type: 'JSON', mongo_field: 'raw.s' },
      { name: 'code', type: 'INTEGER', primary_key: true },
      { name: 'tags', type: 'STRING' },
      {
        name: 'address',
        type: 'RECORD',
        fields: [
          { name: 'city', type: 'STRING', mongo_field: 'town' },
          { name: 'zip', type: 'INTEGER' },
        ],
      },
      { name: 'place', type: 'STRING' },
      { name: 'fresh', type: 'BOOLEAN' },
    ];
    const table = [
      field('_id', 'STRING'),
      field('s', 'STRING'),
      field('code', 'RECORD', 'NULLABLE', [field('a', 'STRING')]),
      field('tags', 'STRING', 'REPEATED'),
      field('address', 'RECORD', 'NULLABLE', [field('city', 'STRING'), field('zip', 'STRING')]),
      field('place', 'GEOGRAPHY'),
    ];
    const { columns: aligned, conflicts } = alignWithTable(columns, table);
    expect(aligned).toEqual([
      ID,
      { name: 's', type: 'STRING', mongo_field: 'raw.s' },
      // No longer a single scalar: not a primary key any more.
      { name: 'code', type: 'RECORD', fields: [{ name: 'a', type: 'STRING' }] },
      { name: 'tags', type: 'STRING', mode: 'REPEATED' },
      {
        name: 'address',
        type: 'RECORD',
        fields: [
          { name: 'city', type: 'STRING', mongo_field: 'town' },
          { name: 'zip', type: 'STRING' },
        ],
      },
      // A type the archiver cannot write: left out, its values go to _unmapped.
      { name: 'fresh', type: 'BOOLEAN' },
    ]);
    expect(conflicts).toEqual([
      's: the columns say NULLABLE JSON, the table has NULLABLE STRING',
      'code: the columns say NULLABLE INTEGER, the table has NULLABLE RECORD',
      'tags: the columns say NULLABLE STRING, the table has REPEATED STRING',
      'address.zip: the columns say NULLABLE INTEGER, the table has NULLABLE STRING',
      'place: the columns say NULLABLE STRING, the table has NULLABLE GEOGRAPHY, which the archiver cannot write (its values go to _unmapped)',
    ]);
    expect(missingFromTable(aligned, table)).toEqual([
      { parent: [], column: { name: 'fresh', type: 'BOOLEAN' } },
    ]);
  });

  it('issue 10 item 10: an evolution planned for a field the table already has adds only what the table lacks', () => {
    // `s` was removed from the columns (or a crash lost the columns saved after the table was patched).
    const table = [
      field('_id', 'STRING'),
      field('s', 'STRING'),
      field('r', 'RECORD', 'NULLABLE', [field('a', 'INTEGER')]),
    ];
    const planned = planEvolution([ID], { _id: 'x', s: 5, r: { a: 'text', b: true }, n: 1 }).columns;
    const { columns } = alignWithTable(planned, table);
    expect(columns.find((c) => c.name === 's')).toEqual({ name: 's', type: 'STRING', mongo_field: 's' });
    expect(columns.find((c) => c.name === 'r')?.fields).toEqual([
      { name: 'a', type: 'INTEGER', mongo_field: 'a' },
      { name: 'b', type: 'BOOLEAN', mongo_field: 'b' },
    ]);
    expect(missingFromTable(columns, table).map((a) => [...a.parent, a.column.name].join('.'))).toEqual([
      'n',
      'r.b',
    ]);
  });
});
