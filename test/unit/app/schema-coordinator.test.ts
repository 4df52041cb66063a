import { describe, expect, it } from 'vitest';
import { SchemaCoordinator, type CoordinatedTable } from '../../../src/app/schema-coordinator.js';
import { createLogger } from '../../../src/observability/logger.js';
import { alignWithTable, missingFromTable, type ActualField } from '../../../src/schema/align.js';
import { columnToField } from '../../../src/schema/table-schema.js';
import { type ColumnSpec } from '../../../src/schema/types.js';

const ID: ColumnSpec = { name: '_id', type: 'STRING', mongo_field: '_id' };
const never = new AbortController().signal;

/** A history table that takes additions slowly, as a schema patch does, and counts overlapping calls. */
class SlowTable implements CoordinatedTable {
  readonly schemaConflicts: readonly string[] = [];
  columns: readonly ColumnSpec[] = [ID];
  evolving = 0;
  maxEvolving = 0;

  constructor(readonly fields: ActualField[]) {}

  async evolve(planned: readonly ColumnSpec[]): Promise<readonly ColumnSpec[]> {
    this.evolving++;
    this.maxEvolving = Math.max(this.maxEvolving, this.evolving);
    await new Promise((resolve) => setTimeout(resolve, 5));
    const { columns } = alignWithTable(planned, this.fields);
    for (const { column } of missingFromTable(columns, this.fields)) this.fields.push(columnToField(column));
    this.evolving--;
    this.columns = columns;
    return columns;
  }
}

function coordinator(saved: (readonly ColumnSpec[])[]) {
  return new SchemaCoordinator({
    columns: [ID],
    columnsUnsaved: false,
    origin: 'inferred',
    evolution: 'add_columns',
    captureUnmapped: true,
    saveColumns: (columns) => {
      saved.push(columns);
      return Promise.resolve();
    },
    reportConflicts: () => Promise.resolve(),
    log: createLogger({ level: 'silent' }),
  });
}

describe('schema coordinator (issue 11 roles)', () => {
  it('issue 11 build 6: the mapping spec for worker threads stays the same object until the columns change, and carries what evolution plans from', async () => {
    const table = new SlowTable([{ name: '_id', type: 'STRING', mode: 'NULLABLE' }]);
    const schema = coordinator([]);
    await schema.adoptTable(table);
    const spec = schema.mappingSpec;
    expect(schema.mappingSpec).toBe(spec);
    expect(spec.columns).toBe(schema.mapper.columns);
    expect(spec.captureUnmapped).toBe(true);
    expect(spec.planned?.map((c) => c.name)).toEqual(['_id']);
    await schema.evolve([{ _id: '1', colour: 'red' }], never);
    const evolved = schema.mappingSpec;
    expect(evolved).not.toBe(spec);
    expect(evolved.columns.map((c) => c.name)).toEqual(['_id', 'colour']);
    expect(evolved.planned?.map((c) => c.name)).toEqual(['_id', 'colour']);
    expect(schema.mappingSpec).toBe(evolved);
  });

  it('issue 11: concurrent evolutions from the stream and the backfill queue, and no addition is lost', async () => {
    const table = new SlowTable([{ name: '_id', type: 'STRING', mode: 'NULLABLE' }]);
    const saved: (readonly ColumnSpec[])[] = [];
    const schema = coordinator(saved);
    await schema.adoptTable(table);
    await Promise.all([
      schema.evolve([{ _id: '1', fromStream: 1 }], never),
      schema.evolve([{ _id: '2', fromBackfill: 'x' }], never),
      schema.evolve([{ _id: '3', fromStream: 2, later: true }], never),
    ]);
    const names = schema.columns.map((c) => c.name);
    expect(names).toEqual(expect.arrayContaining(['_id', 'fromStream', 'fromBackfill', 'later']));
    expect(table.maxEvolving).toBe(1);
    // The mapper follows the columns: a row of a document with every field has them all.
    const { row } = schema.mapper.map({ _id: '4', fromStream: 3, fromBackfill: 'y', later: false });
    expect(row).toMatchObject({ fromStream: 3, fromBackfill: 'y', later: false });
    expect(saved.at(-1)).toBe(schema.columns);
  });

  it('a failed evolution does not block the ones queued after it', async () => {
    const table = new SlowTable([{ name: '_id', type: 'STRING', mode: 'NULLABLE' }]);
    const schema = coordinator([]);
    await schema.adoptTable(table);
    const refused = new Error('table patch refused');
    const evolve = table.evolve.bind(table);
    let calls = 0;
    table.evolve = (planned) => (++calls === 1 ? Promise.reject(refused) : evolve(planned));
    const [first, second] = await Promise.allSettled([
      schema.evolve([{ _id: '1', a: 1 }], never),
      schema.evolve([{ _id: '2', b: 1 }], never),
    ]);
    expect(first).toEqual({ status: 'rejected', reason: refused });
    expect(second.status).toBe('fulfilled');
    expect(schema.columns.map((c) => c.name)).toContain('b');
  });
});
