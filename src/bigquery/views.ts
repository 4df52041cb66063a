import { VIEW_ROW_NUMBER_COLUMN } from '../schema/names.js';
import { type ColumnSpec } from '../schema/types.js';
import { quoteColumn, type TableRef } from '../schema/identifiers.js';

/** Names of the derived objects of a history table. */
export function viewNames(table: string): { view: string; latestView: string; errors: string } {
  return { view: `${table}_view`, latestView: `${table}_latest_view`, errors: `${table}_errors` };
}

/**
 * `<table>_view`: the current state of the collection. One row per `_doc_id`: the row with the greatest
 * `_seq`, unless that row is a delete; rows at or before the latest `drop` marker are ignored. A change
 * written twice (same `_event_id`, same `_seq`) still yields one row, so the view is exactly-once even
 * though the history table is at-least-once.
 */
export function currentStateViewSql(history: TableRef): string {
  const rowNumber = `\`${VIEW_ROW_NUMBER_COLUMN}\``;
  return [
    `SELECT * EXCEPT (${rowNumber}) FROM (`,
    `  SELECT h.*, ROW_NUMBER() OVER (PARTITION BY h.\`_doc_id\` ORDER BY h.\`_seq\` DESC) AS ${rowNumber}`,
    `  FROM ${history.sql} AS h`,
    `  WHERE h.\`_doc_id\` IS NOT NULL`,
    `    AND h.\`_seq\` > COALESCE((SELECT MAX(d.\`_seq\`) FROM ${history.sql} AS d WHERE d.\`operationType\` = 'drop'), '')`,
    `)`,
    `WHERE ${rowNumber} = 1 AND \`operationType\` != 'delete'`,
  ].join('\n');
}

/**
 * `<table>_latest_view`: the latest current row per primary-key value, built on `<table>_view` so deletes
 * and drops are honoured. Undefined when no column is a primary key. Documents with the same key and the
 * same `_seq` (copied by one backfill) are ordered by `_doc_id`, so the view is deterministic.
 */
export function latestViewSql(view: TableRef, columns: readonly ColumnSpec[]): string | undefined {
  const keys = columns.filter((c) => c.primary_key === true).map((c) => quoteColumn(c.name));
  if (keys.length === 0) return undefined;
  const rowNumber = `\`${VIEW_ROW_NUMBER_COLUMN}\``;
  return [
    `SELECT * EXCEPT (${rowNumber}) FROM (`,
    `  SELECT v.*, ROW_NUMBER() OVER (PARTITION BY ${keys.map((k) => `v.${k}`).join(', ')} ORDER BY v.\`_seq\` DESC, v.\`_doc_id\` DESC) AS ${rowNumber}`,
    `  FROM ${view.sql} AS v`,
    `)`,
    `WHERE ${rowNumber} = 1`,
  ].join('\n');
}
