/** Column types of the original service plus NUMERIC, BIGNUMERIC and JSON (legacy names, as BigQuery's REST API). */
export const COLUMN_TYPES = [
  'STRING',
  'BYTES',
  'INTEGER',
  'FLOAT',
  'BOOLEAN',
  'TIMESTAMP',
  'DATE',
  'TIME',
  'DATETIME',
  'RECORD',
  'NUMERIC',
  'BIGNUMERIC',
  'JSON',
] as const;

export type ColumnType = (typeof COLUMN_TYPES)[number];

export const COLUMN_MODES = ['NULLABLE', 'REQUIRED', 'REPEATED'] as const;

export type ColumnMode = (typeof COLUMN_MODES)[number];

/**
 * Who wrote a mapping's columns: the service (`inferred`: from a sample, then evolved) or the user
 * (`declared`). It decides the default of `schema_evolution`, so it must survive restarts.
 */
export const COLUMNS_ORIGINS = ['inferred', 'declared'] as const;

export type ColumnsOrigin = (typeof COLUMNS_ORIGINS)[number];

/** One column in the original service's settings format. Sub-fields of a RECORD read keys of its sub-document. */
export interface ColumnSpec {
  readonly name: string;
  readonly type: ColumnType;
  /** Dotted path in the document (`\.` escapes a dot inside a key); defaults to `name`. `_id` is the document id. */
  readonly mongo_field?: string;
  readonly fields?: readonly ColumnSpec[];
  readonly primary_key?: boolean;
  readonly mode?: ColumnMode;
}

/** A BigQuery table field, as the REST API and the client libraries describe it. */
export interface TableField {
  readonly name: string;
  readonly type: ColumnType;
  readonly mode: ColumnMode;
  readonly fields?: readonly TableField[];
  readonly description?: string;
}

/** BigQuery limits that shape schemas (https://cloud.google.com/bigquery/quotas#schema_limits). */
export const MAX_COLUMN_NAME_LENGTH = 300;
export const MAX_NESTING_DEPTH = 15;
export const MAX_COLUMNS = 10_000;
