import { type ColumnAddition } from '../schema/evolve.js';
import { diffHistoryTable, diffView, type HistoryTableDiff } from '../schema/table-diff.js';
import { columnToField } from '../schema/table-schema.js';
import { tableRef } from '../schema/identifiers.js';
import { type ColumnSpec, type TableField } from '../schema/types.js';
import { addColumnsSql, createSchemaSql, createTableSql, dropViewSql } from './ddl.js';
import {
  DEAD_LETTER_FIELDS,
  DEAD_LETTER_PARTITION_FIELD,
  HISTORY_CLUSTERING_FIELDS,
  HISTORY_PARTITION_FIELD,
  viewPlan,
} from './table-admin.js';
import { type IntrospectedTable, type MappingObjects } from './table-introspector.js';
import { viewNames } from './views.js';

export const PLANNED_STEP_KINDS = [
  'create-dataset',
  'create-table',
  'create-dead-letter-table',
  'add-columns',
  'patch-schema',
  'create-view',
  'replace-view',
  'drop-view',
] as const;

/** One change `run` would make, in the order it makes them. */
export interface PlannedStep {
  readonly kind: (typeof PLANNED_STEP_KINDS)[number];
  /** The dataset, table or view it changes. */
  readonly object: string;
  /**
   * The DDL statement (for a dataset or table `run` sends the equivalent REST request); undefined for a
   * tables.patch, which no statement expresses (a field inside a STRUCT, a REQUIRED field relaxed).
   */
  readonly sql: string | undefined;
  /** What a step without SQL does, or why a statement is there. */
  readonly note?: string;
}

/** What `run` would do to one mapping's BigQuery objects, computed from an introspection without writing. */
export interface TablesPlan {
  readonly steps: readonly PlannedStep[];
  /** Lines about what is not done (no latest view without a primary key, say). */
  readonly notes: readonly string[];
  readonly diff: HistoryTableDiff;
  /** Objects of the mapping's names that `run` would refuse (a view where the history table belongs). */
  readonly problems: readonly string[];
}

/** Where the mapping's objects are: project, dataset (and its location when `run` would create it). */
export interface TablesTarget {
  readonly projectId: string;
  readonly datasetId: string;
  readonly location?: string;
}

/**
 * The steps `run` would take for history table `table` holding `columns`, given what exists (`found`, from
 * `TableIntrospector.mapping`): the same diff TableAdmin.prepare applies, as statements. Pure: names are
 * validated, nothing is sent.
 */
export function planTables(
  target: TablesTarget,
  found: MappingObjects,
  table: string,
  columns: readonly ColumnSpec[],
): TablesPlan {
  const ref = tableRef(target.projectId, target.datasetId, table);
  const names = viewNames(table);
  const steps: PlannedStep[] = [];
  const notes: string[] = [];
  const problems: string[] = [];
  if (!found.datasetExists) {
    steps.push({
      kind: 'create-dataset',
      object: target.datasetId,
      sql: createSchemaSql(target.projectId, target.datasetId, target.location),
    });
  }
  const history = notATable(found.history, problems) ? undefined : found.history;
  const diff = diffHistoryTable(columns, history?.fields);
  if (diff.kind === 'create') {
    steps.push({
      kind: 'create-table',
      object: table,
      sql: createTableSql(ref, diff.fields, HISTORY_PARTITION_FIELD, HISTORY_CLUSTERING_FIELDS),
    });
  } else {
    if (diff.relax.length > 0) {
      steps.push({
        kind: 'patch-schema',
        object: table,
        sql: undefined,
        note: `tables.patch: REQUIRED to NULLABLE for ${diff.relax.join(', ')} (delete rows leave them NULL)`,
      });
    }
    const topLevel = diff.additions.filter((a) => a.parent.length === 0).map((a) => columnToField(a.column));
    if (topLevel.length > 0) {
      steps.push({ kind: 'add-columns', object: table, sql: addColumnsSql(ref, topLevel) });
    }
    const nested = diff.additions.filter((a) => a.parent.length > 0);
    if (nested.length > 0) {
      steps.push({
        kind: 'patch-schema',
        object: table,
        sql: undefined,
        note: `tables.patch (no DDL adds a field inside a STRUCT): adds ${nested.map(additionText).join(', ')}`,
      });
    }
  }
  if (!notATable(found.deadLetter, problems) && found.deadLetter === undefined) {
    steps.push({
      kind: 'create-dead-letter-table',
      object: names.errors,
      sql: createTableSql(
        tableRef(target.projectId, target.datasetId, names.errors),
        DEAD_LETTER_FIELDS,
        DEAD_LETTER_PARTITION_FIELD,
        [],
      ),
    });
  }
  const views = viewPlan(target.projectId, target.datasetId, table, diff.columns);
  // Column additions make `run` create the views again whatever their labels say.
  const added = diff.kind === 'existing' && diff.additions.length > 0;
  const viewStep = (
    object: string,
    statement: { sql: string; hash: string },
    existing: IntrospectedTable | undefined,
  ): void => {
    const action = added && existing !== undefined ? 'replace' : diffView(statement.hash, existing);
    if (action === 'keep') notes.push(`${object} is current: left as it is`);
    else
      steps.push({ kind: action === 'create' ? 'create-view' : 'replace-view', object, sql: statement.sql });
  };
  viewStep(names.view, views.viewSql, found.view);
  if (views.latestViewSql !== undefined) {
    viewStep(names.latestView, views.latestViewSql, found.latestView);
  } else if (diffView(undefined, found.latestView) === 'drop') {
    steps.push({
      kind: 'drop-view',
      object: names.latestView,
      sql: dropViewSql(views.latestView),
      note: 'no column is a primary key any more',
    });
  } else {
    notes.push(`no ${names.latestView}: no column is a primary key`);
  }
  return { steps, notes, diff, problems };
}

/** A dotted path and its type, as the plan prints an addition: `a.b RECORD<c STRING>`. */
export function additionText(addition: ColumnAddition): string {
  return `${[...addition.parent, addition.column.name].join('.')} ${fieldText(columnToField(addition.column))}`;
}

function fieldText(field: TableField): string {
  const base =
    field.type === 'RECORD'
      ? `RECORD<${(field.fields ?? []).map((f) => `${f.name} ${fieldText(f)}`).join(', ')}>`
      : field.type;
  return field.mode === 'REPEATED' ? `REPEATED ${base}` : base;
}

/** True (and a problem noted) when an object of a table's name exists but is no table. */
function notATable(found: IntrospectedTable | undefined, problems: string[]): boolean {
  if (found?.type === undefined || found.type === 'TABLE') return false;
  problems.push(
    `${found.tableId} is a ${found.type}, not a table: run would stop there (drop it or choose another bigquery_table)`,
  );
  return true;
}
