import { SettingsError } from '../errors.js';
import { type ColumnType, type TableField } from '../schema/types.js';
import { quoteColumn, tableRef, type TableRef } from '../schema/identifiers.js';

/** GoogleSQL spellings of the column types (the REST API and the settings use the legacy names). */
const SQL_TYPES: Readonly<Record<Exclude<ColumnType, 'RECORD'>, string>> = {
  STRING: 'STRING',
  BYTES: 'BYTES',
  INTEGER: 'INT64',
  FLOAT: 'FLOAT64',
  BOOLEAN: 'BOOL',
  TIMESTAMP: 'TIMESTAMP',
  DATE: 'DATE',
  TIME: 'TIME',
  DATETIME: 'DATETIME',
  NUMERIC: 'NUMERIC',
  BIGNUMERIC: 'BIGNUMERIC',
  JSON: 'JSON',
};

/**
 * The GoogleSQL type of a field, for a column definition: `STRUCT<...>` for a RECORD, `ARRAY<...>` for a
 * REPEATED field, `NOT NULL` on REQUIRED sub-fields. Every name is validated and quoted.
 */
export function columnTypeSql(field: TableField, path: string = field.name): string {
  let base: string;
  if (field.type === 'RECORD') {
    const fields = field.fields ?? [];
    if (fields.length === 0) throw new SettingsError([`${path}.fields: a RECORD needs at least one field`]);
    const members = fields.map((f) => {
      const notNull = f.mode === 'REQUIRED' ? ' NOT NULL' : '';
      return `${quoteColumn(f.name)} ${columnTypeSql(f, `${path}.${f.name}`)}${notNull}`;
    });
    base = `STRUCT<${members.join(', ')}>`;
  } else {
    base = SQL_TYPES[field.type];
  }
  return field.mode === 'REPEATED' ? `ARRAY<${base}>` : base;
}

/**
 * `ALTER TABLE ... ADD COLUMN IF NOT EXISTS ...` for new top-level columns (one statement for all of them).
 * BigQuery refuses to add a REQUIRED column to an existing table, so such a field is refused here.
 */
export function addColumnsSql(table: TableRef, fields: readonly TableField[]): string {
  if (fields.length === 0) throw new RangeError('addColumnsSql needs at least one field');
  const clauses = fields.map((f) => {
    if (f.mode === 'REQUIRED') {
      throw new SettingsError([
        `${f.name}: a column added to an existing table must be NULLABLE or REPEATED`,
      ]);
    }
    return `ADD COLUMN IF NOT EXISTS ${quoteColumn(f.name)} ${columnTypeSql(f)}`;
  });
  return `ALTER TABLE ${table.sql}\n  ${clauses.join(',\n  ')}`;
}

export function createOrReplaceViewSql(view: TableRef, body: string): string {
  return `CREATE OR REPLACE VIEW ${view.sql} AS\n${body}`;
}

export function dropViewSql(view: TableRef): string {
  return `DROP VIEW IF EXISTS ${view.sql}`;
}

/** A GoogleSQL string literal: single-quoted, backslashes and quotes escaped. */
export function sqlString(text: string): string {
  return `'${text.replace(/\\/g, '\\\\').replace(/'/g, "\\'").replace(/\n/g, '\\n')}'`;
}

/**
 * `CREATE SCHEMA` for a dataset, as `run` creates it (through the REST API, which `plan` shows as this
 * statement). The names were validated by `tableRef`; the location is a string literal.
 */
export function createSchemaSql(projectId: string, datasetId: string, location?: string): string {
  const ref = tableRef(projectId, datasetId, 'unused');
  const options = location === undefined ? '' : `\nOPTIONS(location = ${sqlString(location)})`;
  return `CREATE SCHEMA \`${ref.projectId}.${ref.datasetId}\`${options}`;
}

/**
 * `CREATE TABLE` with the columns (descriptions as OPTIONS), DAY partitions on a TIMESTAMP field and
 * clustering: the statement equivalent to the tables.insert request `run` sends.
 */
export function createTableSql(
  table: TableRef,
  fields: readonly TableField[],
  partitionField: string,
  clustering: readonly string[],
): string {
  const columns = fields.map((f) => {
    const notNull = f.mode === 'REQUIRED' ? ' NOT NULL' : '';
    const description =
      f.description === undefined ? '' : ` OPTIONS(description = ${sqlString(f.description)})`;
    return `  ${quoteColumn(f.name)} ${columnTypeSql(f)}${notNull}${description}`;
  });
  const cluster = clustering.length === 0 ? '' : `\nCLUSTER BY ${clustering.map(quoteColumn).join(', ')}`;
  return (
    `CREATE TABLE ${table.sql} (\n${columns.join(',\n')}\n)\n` +
    `PARTITION BY TIMESTAMP_TRUNC(${quoteColumn(partitionField)}, DAY)${cluster}`
  );
}
