import { type ColumnSpec, type TableField } from './types.js';

/** Metadata columns appended to every history table (docs/bigquery.md). */
export const METADATA_FIELDS: readonly TableField[] = Object.freeze([
  {
    name: 'time_archived',
    type: 'TIMESTAMP',
    mode: 'NULLABLE',
    description: 'when the archiver wrote the row',
  },
  {
    name: 'operationType',
    type: 'STRING',
    mode: 'NULLABLE',
    description: 'insert, update, replace, delete, drop or backfill',
  },
  {
    name: '_cluster_time',
    type: 'TIMESTAMP',
    mode: 'NULLABLE',
    description: 'MongoDB cluster time of the change (backfill: snapshot start)',
  },
  { name: '_seq', type: 'STRING', mode: 'NULLABLE', description: 'sortable total order of changes' },
  { name: '_doc_id', type: 'STRING', mode: 'NULLABLE', description: 'canonical string of the document _id' },
  { name: '_event_id', type: 'STRING', mode: 'NULLABLE', description: 'unique id of the change (dedup key)' },
  {
    name: '_unmapped',
    type: 'JSON',
    mode: 'NULLABLE',
    description: 'document parts no column holds, as relaxed Extended JSON',
  },
]);

/**
 * The history-table field of a column. REQUIRED becomes NULLABLE, at every level: a delete row fills only the
 * `_id` column and a drop marker no user column at all, and BigQuery refuses a row that lacks a REQUIRED
 * value, so a REQUIRED field would keep deletes out of the history and deleted documents in the views. The
 * declared mode stays in the column specs.
 */
export function columnToField(column: ColumnSpec): TableField {
  return {
    name: column.name,
    type: column.type,
    mode: column.mode === 'REPEATED' ? 'REPEATED' : 'NULLABLE',
    ...(column.fields && { fields: column.fields.map(columnToField) }),
  };
}

/** The history table's schema: the user columns (never REQUIRED) followed by the metadata columns. */
export function historyTableSchema(columns: readonly ColumnSpec[]): TableField[] {
  return [...columns.map(columnToField), ...METADATA_FIELDS];
}
