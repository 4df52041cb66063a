import { MAX_COLUMN_NAME_LENGTH } from './types.js';

/** Column names we write the metadata of every change into (docs/bigquery.md). */
export const METADATA_COLUMN_NAMES = [
  'time_archived',
  'operationType',
  '_cluster_time',
  '_seq',
  '_doc_id',
  '_event_id',
  '_unmapped',
] as const;

/** Prefixes BigQuery reserves for column names (case-insensitive). */
export const RESERVED_COLUMN_PREFIXES = [
  '_TABLE_',
  '_FILE_',
  '_PARTITION',
  '_ROW_TIMESTAMP',
  '__ROOT__',
  '_COLIDENTIFIER',
  '_CHANGE_SEQUENCE_NUMBER',
  '_CHANGE_TYPE',
  '_CHANGE_TIMESTAMP',
] as const;

/** The helper column the view SQL numbers rows with; no user column may take its name. */
export const VIEW_ROW_NUMBER_COLUMN = '_mba_rn';

/** Top-level names a user column may not have: the metadata columns and the views' helper column. */
export const RESERVED_TOP_LEVEL_NAMES: readonly string[] = [...METADATA_COLUMN_NAMES, VIEW_ROW_NUMBER_COLUMN];

const LEGAL_COLUMN_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
const RESERVED_LOWER = new Set(RESERVED_TOP_LEVEL_NAMES.map((n) => n.toLowerCase()));

/** Why `name` cannot be a BigQuery column name, or undefined when it can. */
export function columnNameProblem(name: string): string | undefined {
  if (name.length === 0) return 'must not be empty';
  if (name.length > MAX_COLUMN_NAME_LENGTH) return `must be at most ${MAX_COLUMN_NAME_LENGTH} characters`;
  if (!LEGAL_COLUMN_NAME.test(name)) {
    return 'must contain only letters, digits and underscores, and not start with a digit';
  }
  const upper = name.toUpperCase();
  const reserved = RESERVED_COLUMN_PREFIXES.find((p) => upper.startsWith(p));
  if (reserved) return `must not start with the reserved prefix ${reserved}`;
  return undefined;
}

export function isMetadataColumnName(name: string): boolean {
  return RESERVED_LOWER.has(name.toLowerCase());
}

/** A legal column name derived from an arbitrary document key (not yet unique). */
export function sanitizeColumnName(key: string): string {
  let name = key.replace(/[^A-Za-z0-9_]/g, '_');
  if (name.length === 0) name = '_empty';
  if (/^[0-9]/.test(name)) name = `_${name}`;
  const upper = name.toUpperCase();
  if (RESERVED_COLUMN_PREFIXES.some((p) => upper.startsWith(p))) name = `x${name}`;
  // Keep room for a uniqueness suffix.
  return name.slice(0, MAX_COLUMN_NAME_LENGTH - 8);
}

/**
 * Assigns names to sibling keys: legal, case-insensitively unique among themselves and against `taken`.
 * Deterministic: keys are considered in code-unit order, so the same set of keys always gets the same names.
 */
export function assignColumnNames(keys: Iterable<string>, taken: Iterable<string> = []): Map<string, string> {
  const used = new Set<string>();
  for (const t of taken) used.add(t.toLowerCase());
  const result = new Map<string, string>();
  const sorted = [...new Set(keys)].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  // Keys that are already legal keep their name when free, before derived names compete for suffixes.
  const pending: string[] = [];
  for (const key of sorted) {
    if (columnNameProblem(key) === undefined && !used.has(key.toLowerCase())) {
      used.add(key.toLowerCase());
      result.set(key, key);
    } else {
      pending.push(key);
    }
  }
  for (const key of pending) {
    const base = sanitizeColumnName(key);
    let candidate = base;
    for (let n = 2; used.has(candidate.toLowerCase()); n++) candidate = `${base}_${n}`;
    used.add(candidate.toLowerCase());
    result.set(key, candidate);
  }
  return result;
}
