import { createHash } from 'node:crypto';
import { VIEW_ROW_NUMBER_COLUMN } from '../schema/names.js';
import { historyTableSchema } from '../schema/table-schema.js';
import { type ColumnSpec, type TableField } from '../schema/types.js';
import { quoteColumn, type TableRef } from '../schema/identifiers.js';

/**
 * The label a view carries with the hash of what it was created from (`viewHash`): a start whose view
 * carries the hash it would create runs no DDL. BigQuery keeps labels until the view is replaced, which
 * drops them, so a view replaced by other means (by hand, by an older version) is replaced again.
 */
export const VIEW_HASH_LABEL = 'mba_view_hash';
/** Hex digits of the SHA-256 kept (160 bits): label values are at most 63 characters. */
const VIEW_HASH_HEX_DIGITS = 40;

/**
 * The hash of a view's DDL statement and of the history table's columns (names, types, modes, at every
 * depth). The columns count although `<table>_view` selects `*`: BigQuery records a view's schema when it is
 * created, so a view is created again when the columns change, as it always was.
 */
export function viewHash(statement: string, columns: readonly ColumnSpec[]): string {
  const shape = (fields: readonly TableField[]): unknown =>
    fields.map((f) => [f.name, f.type, f.mode, shape(f.fields ?? [])]);
  return createHash('sha256')
    .update(JSON.stringify([statement, shape(historyTableSchema(columns))]))
    .digest('hex')
    .slice(0, VIEW_HASH_HEX_DIGITS);
}

/** Names of the derived objects of a history table. */
export function viewNames(table: string): { view: string; latestView: string; errors: string } {
  return { view: `${table}_view`, latestView: `${table}_latest_view`, errors: `${table}_errors` };
}

/**
 * `<table>_view`: the current state of the collection. One row per `_doc_id`: the row with the greatest
 * `_seq`, unless that row is a delete; rows at or before the latest `drop` marker are ignored. A change
 * written twice (same `_event_id`, same `_seq`) still yields one row, so the view is exactly-once even
 * though the history table is at-least-once. `docIds`, when given, is a condition on `h.\`_doc_id\`` alone that
 * keeps or drops whole documents before the window (the view reader's ranges, so clustering prunes).
 */
export function currentStateViewSql(history: TableRef, docIds?: string): string {
  const rowNumber = `\`${VIEW_ROW_NUMBER_COLUMN}\``;
  return [
    `SELECT * EXCEPT (${rowNumber}) FROM (`,
    `  SELECT h.*, ROW_NUMBER() OVER (PARTITION BY h.\`_doc_id\` ORDER BY h.\`_seq\` DESC) AS ${rowNumber}`,
    `  FROM ${history.sql} AS h`,
    `  WHERE h.\`_doc_id\` IS NOT NULL`,
    ...(docIds === undefined ? [] : [`    AND (${docIds})`]),
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
