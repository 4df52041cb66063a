import { IdentifierError } from '../errors.js';
import { columnNameProblem } from './names.js';

// https://cloud.google.com/resource-manager/docs/creating-managing-projects (optionally domain-scoped)
const PROJECT_ID = /^(?:[a-z0-9.-]{1,63}:)?[a-z][a-z0-9-]{4,28}[a-z0-9]$/;
// https://cloud.google.com/bigquery/docs/datasets#dataset-naming
const DATASET_ID = /^[A-Za-z0-9_]{1,1024}$/;
// https://cloud.google.com/bigquery/docs/tables#table_naming: letters, marks, numbers, connectors, dashes, spaces
const TABLE_ID = /^[\p{L}\p{M}\p{N}\p{Pc}\p{Pd}\p{Zs}]+$/u;
const MAX_TABLE_ID_BYTES = 1024;
/** The rules above as JSON Schema patterns (ECMA-262, `u` flag), for the published schemas. */
export const IDENTIFIER_PATTERNS = {
  project: PROJECT_ID.source,
  dataset: DATASET_ID.source,
  table: TABLE_ID.source,
} as const;
/** The longest suffix we append to a table name (`<table>_latest_view`). */
const LONGEST_SUFFIX = '_latest_view';

/** A validated reference to a table; `sql` is the backtick-quoted path, safe to splice into SQL. */
export interface TableRef {
  readonly projectId: string;
  readonly datasetId: string;
  readonly tableId: string;
  readonly sql: string;
}

/** Why `projectId` is not a BigQuery project id, or undefined when it is one. */
export function projectIdProblem(projectId: string): string | undefined {
  return PROJECT_ID.test(projectId)
    ? undefined
    : 'not a valid BigQuery project id (6-30 lowercase letters, digits or hyphens, starting with a letter)';
}

/** Why `datasetId` is not a BigQuery dataset id, or undefined when it is one. */
export function datasetIdProblem(datasetId: string): string | undefined {
  return DATASET_ID.test(datasetId)
    ? undefined
    : 'not a valid BigQuery dataset id (letters, digits and underscores, at most 1024)';
}

/** Why `tableId` cannot name a history table (with its views' suffixes), or undefined when it can. */
export function tableIdProblem(tableId: string): string | undefined {
  return TABLE_ID.test(tableId) && Buffer.byteLength(tableId + LONGEST_SUFFIX, 'utf8') <= MAX_TABLE_ID_BYTES
    ? undefined
    : `not a valid BigQuery table name (letters, marks, digits, connectors, dashes and spaces; at most ${MAX_TABLE_ID_BYTES - LONGEST_SUFFIX.length} bytes)`;
}

function assertIdentifier(what: string, value: string, problem: string | undefined): string {
  if (problem !== undefined) throw new IdentifierError(`${what} "${value}" is ${problem}`);
  return value;
}

export function assertProjectId(projectId: string): string {
  return assertIdentifier('project', projectId, projectIdProblem(projectId));
}

export function assertDatasetId(datasetId: string): string {
  return assertIdentifier('dataset', datasetId, datasetIdProblem(datasetId));
}

export function assertTableId(tableId: string): string {
  return assertIdentifier('table', tableId, tableIdProblem(tableId));
}

export function tableRef(projectId: string, datasetId: string, tableId: string): TableRef {
  assertProjectId(projectId);
  assertDatasetId(datasetId);
  assertTableId(tableId);
  return { projectId, datasetId, tableId, sql: `\`${projectId}.${datasetId}.${tableId}\`` };
}

/** A column name, validated and backtick-quoted for SQL. */
export function quoteColumn(name: string): string {
  const problem = columnNameProblem(name);
  if (problem) throw new IdentifierError(`column "${name}" ${problem}`);
  return `\`${name}\``;
}
