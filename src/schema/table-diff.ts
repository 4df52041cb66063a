import { alignWithTable, missingFromTable, type ActualField } from './align.js';
import { type ColumnAddition } from './evolve.js';
import { historyTableSchema, METADATA_FIELDS } from './table-schema.js';
import { type ColumnSpec, type TableField } from './types.js';

/**
 * What must change for a history table to hold `columns`: the pure middle of table administration
 * (introspect, diff, apply). `plan` prints it; `run` hands it to the applier.
 */
export type HistoryTableDiff =
  | {
      readonly kind: 'create';
      /** The table's schema: the columns (never REQUIRED) and the metadata columns. */
      readonly fields: readonly TableField[];
      readonly columns: readonly ColumnSpec[];
    }
  | {
      readonly kind: 'existing';
      /**
       * The columns rows are mapped with: the table's type wins where the columns say another (BigQuery
       * cannot retype a column), columns of types the archiver cannot write are left out.
       */
      readonly columns: readonly ColumnSpec[];
      /** Columns, RECORD sub-fields and metadata columns the table lacks, in order. */
      readonly additions: readonly ColumnAddition[];
      /** One line per column whose declared type or mode differs from the table's. */
      readonly conflicts: readonly string[];
      /** Dotted paths of REQUIRED fields to relax to NULLABLE (delete rows leave user columns NULL). */
      readonly relax: readonly string[];
    };

/** The diff of a history table holding `columns` against the table's fields (`undefined`: it does not exist). */
export function diffHistoryTable(
  columns: readonly ColumnSpec[],
  table: readonly ActualField[] | undefined,
): HistoryTableDiff {
  if (table === undefined) return { kind: 'create', fields: historyTableSchema(columns), columns };
  const aligned = alignWithTable(columns, table);
  return {
    kind: 'existing',
    columns: aligned.columns,
    additions: missingFromTable([...aligned.columns, ...METADATA_FIELDS], table),
    conflicts: aligned.conflicts,
    relax: requiredPaths(table, ''),
  };
}

/** Whether the diff changes the table (a creation, an addition or a relaxed mode). */
export function changesTable(diff: HistoryTableDiff): boolean {
  return diff.kind === 'create' || diff.additions.length > 0 || diff.relax.length > 0;
}

function requiredPaths(fields: readonly ActualField[], prefix: string): string[] {
  return fields.flatMap((f) => {
    const path = `${prefix}${f.name}`;
    return [
      ...(f.mode.toUpperCase() === 'REQUIRED' ? [path] : []),
      ...(f.fields ? requiredPaths(f.fields, `${path}.`) : []),
    ];
  });
}

/** What happens to a view: created, replaced (its label shows another statement or columns), kept, dropped. */
export type ViewAction = 'create' | 'replace' | 'keep' | 'drop' | 'none';

/**
 * The view's fate: `wanted` is the hash of the statement and columns it would be created from (undefined:
 * no view is wanted, as `<table>_latest_view` without a primary key); `existing` what is there now. A table
 * of the view's name is not a view: it is never dropped, and replacing it fails as BigQuery refuses it.
 */
export function diffView(
  wanted: string | undefined,
  existing: { readonly type: string | undefined; readonly viewHash: string | undefined } | undefined,
): ViewAction {
  if (wanted === undefined) return existing?.type === 'VIEW' ? 'drop' : 'none';
  if (existing === undefined) return 'create';
  return existing.type === 'VIEW' && existing.viewHash === wanted ? 'keep' : 'replace';
}
