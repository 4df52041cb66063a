// Schema evolution of a mapping run against a table stand-in that aligns planned columns with its schema as
// BigQueryDestination.evolve does (alignWithTable: a column of a type the archiver cannot write is left out).
import { describe, expect, it } from 'vitest';
import { SchemaEvolution, type ColumnsEvolver } from '../../../src/app/schema-evolution.js';
import { alignWithTable, missingFromTable, type ActualField } from '../../../src/schema/align.js';
import { columnToField } from '../../../src/schema/table-schema.js';
import { type ColumnSpec } from '../../../src/schema/types.js';

/** A history table that takes additions; `planned` records every evolve call. */
class TableStandIn implements ColumnsEvolver {
  readonly planned: (readonly ColumnSpec[])[] = [];

  constructor(public fields: ActualField[]) {}

  evolve(planned: readonly ColumnSpec[]): Promise<readonly ColumnSpec[]> {
    this.planned.push(planned);
    const { columns } = alignWithTable(planned, this.fields);
    for (const { column } of missingFromTable(columns, this.fields)) this.fields.push(columnToField(column));
    return Promise.resolve(columns);
  }
}

const ID: ColumnSpec = { name: '_id', type: 'STRING', mongo_field: '_id' };

describe('SchemaEvolution', () => {
  it('issue 10 fix finding 5: a field the table holds in a type the archiver cannot write is not planned again batch after batch', async () => {
    const table = new TableStandIn([
      { name: '_id', type: 'STRING', mode: 'NULLABLE' },
      { name: 'geo', type: 'GEOGRAPHY', mode: 'NULLABLE' },
    ]);
    const evolution = new SchemaEvolution([ID]);
    const batch = [{ _id: '1', geo: 'POINT(1 2)' }];

    expect(await evolution.apply(batch, table)).toBeUndefined();
    expect(await evolution.apply(batch, table)).toBeUndefined();
    expect(await evolution.apply([{ _id: '2', geo: 'POINT(3 4)' }], table)).toBeUndefined();

    // One look at the table decided it: `geo` stays out of the columns (its values go to _unmapped).
    expect(table.planned).toHaveLength(1);
    expect(evolution.columns).toEqual([ID]);
  });

  it('issue 10 fix finding 5: a field left to _unmapped does not stop other new fields from becoming columns', async () => {
    const table = new TableStandIn([
      { name: '_id', type: 'STRING', mode: 'NULLABLE' },
      { name: 'geo', type: 'GEOGRAPHY', mode: 'NULLABLE' },
    ]);
    const evolution = new SchemaEvolution([ID]);
    await evolution.apply([{ _id: '1', geo: 'POINT(1 2)' }], table);

    const change = await evolution.apply([{ _id: '2', geo: 'POINT(3 4)', n: 5 }], table);

    expect(change).toEqual({
      columns: [ID, { name: 'n', type: 'INTEGER', mongo_field: 'n' }],
      added: ['n'],
    });
    expect(evolution.columns).toEqual(change?.columns);
    expect(table.planned).toHaveLength(2);
    expect(table.fields.map((f) => f.name)).toEqual(['_id', 'geo', 'n']);
  });

  it('plans new fields again once the columns are set from elsewhere', async () => {
    const table = new TableStandIn([
      { name: '_id', type: 'STRING', mode: 'NULLABLE' },
      { name: 'geo', type: 'GEOGRAPHY', mode: 'NULLABLE' },
    ]);
    const evolution = new SchemaEvolution([ID]);
    await evolution.apply([{ _id: '1', geo: 'POINT(1 2)' }], table);

    evolution.reset([{ ...ID }]);
    expect(await evolution.apply([{ _id: '2', geo: 'POINT(3 4)' }], table)).toBeUndefined();
    expect(table.planned).toHaveLength(2);
  });

  it('without a table, the planned columns are the columns', async () => {
    const evolution = new SchemaEvolution([ID]);
    const change = await evolution.apply([{ _id: '1', s: 'x' }], undefined);
    expect(change?.columns).toEqual([ID, { name: 's', type: 'STRING', mongo_field: 's' }]);
    expect(change?.added).toEqual(['s']);
  });
});
