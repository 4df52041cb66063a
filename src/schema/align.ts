import { type ColumnAddition } from './evolve.js';
import { COLUMN_TYPES, type ColumnSpec, type ColumnType } from './types.js';

/** A field of an existing table as BigQuery reports it (legacy type names; any type, any mode). */
export interface ActualField {
  readonly name: string;
  readonly type: string;
  readonly mode: string;
  readonly fields?: readonly ActualField[];
}

export interface Alignment {
  /**
   * The columns as the table holds them: a column the table has with another type or mode takes the
   * table's (with `mongo_field` and, when still possible, `primary_key` kept); a column of a type the
   * archiver cannot write is left out, so its values go to `_unmapped`. Columns the table lacks are kept
   * as they are (adding them is the caller's business). The same array when nothing differs.
   */
  readonly columns: readonly ColumnSpec[];
  /** One line per column that differs, naming its dotted path, what the columns say and what the table has. */
  readonly conflicts: readonly string[];
}

/**
 * Brings column specs in line with the table they are written to. BigQuery cannot change a column's type
 * in place, so the table's actual schema wins: rows are mapped to the types the table really has (a value
 * that does not fit goes to `_unmapped`, as always), never to types it does not have. REQUIRED in the table
 * counts as NULLABLE (history tables are relaxed, see `columnToField`).
 */
export function alignWithTable(columns: readonly ColumnSpec[], table: readonly ActualField[]): Alignment {
  const conflicts: string[] = [];
  const aligned = alignLevel(columns, table, '', conflicts);
  return { columns: conflicts.length === 0 ? columns : aligned, conflicts };
}

function alignLevel(
  columns: readonly ColumnSpec[],
  table: readonly ActualField[],
  prefix: string,
  conflicts: string[],
): ColumnSpec[] {
  return columns.flatMap((column) => {
    const path = `${prefix}${column.name}`;
    const actual = findField(table, column.name);
    if (!actual) return [column];
    const type = knownType(actual.type);
    const mode = modeOf(actual.mode);
    const wanted = `${modeOf(column.mode)} ${column.type}`;
    if (type === undefined) {
      conflicts.push(
        `${path}: the columns say ${wanted}, the table has ${mode} ${actual.type}, which the archiver cannot ` +
          `write (its values go to _unmapped)`,
      );
      return [];
    }
    if (type === column.type && mode === modeOf(column.mode)) {
      if (type !== 'RECORD' || !column.fields || !actual.fields) return [column];
      const fields = alignLevel(column.fields, actual.fields, `${path}.`, conflicts);
      return [fields.every((f, i) => f === column.fields?.[i]) ? column : { ...column, fields }];
    }
    conflicts.push(`${path}: the columns say ${wanted}, the table has ${mode} ${type}`);
    const adopted = fromTable(actual, column);
    return adopted ? [adopted] : [];
  });
}

/** A column spec for an existing field, keeping what `like` says about where its value comes from. */
function fromTable(field: ActualField, like: ColumnSpec | undefined): ColumnSpec | undefined {
  const type = knownType(field.type);
  if (type === undefined) return undefined;
  const mode = modeOf(field.mode);
  let fields: ColumnSpec[] | undefined;
  if (type === 'RECORD') {
    fields = (field.fields ?? []).flatMap((f) => {
      const sub = fromTable(
        f,
        like?.fields?.find((c) => c.name.toLowerCase() === f.name.toLowerCase()),
      );
      return sub ? [sub] : [];
    });
    // BigQuery has no RECORD without fields; the value then goes to `_unmapped` whole.
    if (fields.length === 0) return undefined;
  }
  const scalar = type !== 'RECORD' && type !== 'JSON' && mode !== 'REPEATED';
  return {
    name: like?.name ?? field.name,
    type,
    ...(like?.mongo_field !== undefined && { mongo_field: like.mongo_field }),
    ...(fields !== undefined && { fields }),
    ...(like?.primary_key === true && scalar && { primary_key: true }),
    ...(mode === 'REPEATED' && { mode }),
  };
}

function knownType(type: string): ColumnType | undefined {
  return COLUMN_TYPES.find((t) => t === type);
}

function modeOf(mode: string | undefined): 'NULLABLE' | 'REPEATED' {
  return mode === 'REPEATED' ? 'REPEATED' : 'NULLABLE';
}

function findField(fields: readonly ActualField[], name: string): ActualField | undefined {
  const lower = name.toLowerCase();
  return fields.find((f) => f.name.toLowerCase() === lower);
}

/**
 * The columns and RECORD sub-fields of `columns` that `table` lacks, as additions (parent: the column names
 * above; [] at the top level), in order. Sub-fields of a RECORD the table lacks come with it.
 */
export function missingFromTable(
  columns: readonly ColumnSpec[],
  table: readonly ActualField[],
  parent: readonly string[] = [],
): ColumnAddition[] {
  return columns.flatMap((column) => {
    const actual = findField(table, column.name);
    if (!actual) return [{ parent, column }];
    if (column.type !== 'RECORD' || !column.fields || knownType(actual.type) !== 'RECORD') return [];
    return missingFromTable(column.fields, actual.fields ?? [], [...parent, column.name]);
  });
}
