import { isDocument } from '../base/bson-kind.js';
import { countColumns } from './column-spec.js';
import { parseFieldPath } from './field-path.js';
import { columnsFor, emptyNode, observe, resolveType, type ResolvedType } from './infer.js';
import { METADATA_COLUMN_NAMES, RESERVED_TOP_LEVEL_NAMES } from './names.js';
import { MAX_COLUMNS, MAX_NESTING_DEPTH, type ColumnSpec } from './types.js';

/** One additive change: a new NULLABLE (or REPEATED) column at `parent` (column names; [] for top level). */
export interface ColumnAddition {
  readonly parent: readonly string[];
  readonly column: ColumnSpec;
}

export interface Evolution {
  /** The full column list after the additions (unchanged object when there are none). */
  readonly columns: readonly ColumnSpec[];
  readonly additions: readonly ColumnAddition[];
}

/**
 * The additive changes a document asks for: new top-level columns for fields no column reads, and new
 * sub-fields in RECORD columns. Never a type change or a removal: a value that conflicts with its column
 * stays in `_unmapped`. Respects BigQuery's nesting and column-count limits.
 */
export function planEvolution(
  columns: readonly ColumnSpec[],
  document: Readonly<Record<string, unknown>>,
): Evolution {
  const budget = { remaining: MAX_COLUMNS - METADATA_COLUMN_NAMES.length - countColumns(columns) };
  const additions: ColumnAddition[] = [];
  const updated = evolveLevel(columns, document, [], 1, budget, additions, true);
  return { columns: additions.length === 0 ? columns : updated, additions };
}

function evolveLevel(
  columns: readonly ColumnSpec[],
  source: Readonly<Record<string, unknown>>,
  parent: readonly string[],
  depth: number,
  budget: { remaining: number },
  additions: ColumnAddition[],
  topLevel: boolean,
): ColumnSpec[] {
  // Which keys of `source` the existing columns read; a dotted path makes its first key "partly read".
  const wholeKeys = new Set<string>(topLevel ? ['_id'] : []);
  const partlyRead = new Set<string>();
  for (const c of columns) {
    const path = parseFieldPath(c.mongo_field ?? c.name);
    const first = path[0] ?? '';
    if (path.length === 1) wholeKeys.add(first);
    else partlyRead.add(first);
  }

  // New sub-fields inside existing RECORD columns that read one key.
  const result = columns.map((c) => {
    const path = parseFieldPath(c.mongo_field ?? c.name);
    const key = path[0] ?? '';
    if (c.type !== 'RECORD' || path.length !== 1 || !c.fields || depth >= MAX_NESTING_DEPTH) return c;
    const value = source[key];
    const documents =
      c.mode === 'REPEATED' ? (Array.isArray(value) ? value.filter(isDocument) : []) : [value];
    let fields = c.fields;
    for (const d of documents) {
      if (!isDocument(d)) continue;
      fields = evolveLevel(fields, d, [...parent, c.name], depth + 1, budget, additions, false);
    }
    return fields === c.fields ? c : { ...c, fields };
  });

  // Fields nothing reads become new columns.
  const fresh = new Map<string, ResolvedType>();
  for (const key of Object.keys(source)) {
    if (wholeKeys.has(key) || partlyRead.has(key)) continue;
    const node = emptyNode();
    observe(node, source[key]);
    const t = resolveType(node, depth);
    if (t) fresh.set(key, t);
  }
  if (fresh.size === 0) return result;
  const taken = [...result.map((c) => c.name), ...(topLevel ? RESERVED_TOP_LEVEL_NAMES : [])];
  const added = columnsFor(fresh, taken, budget);
  for (const column of added) additions.push({ parent, column });
  return [...result, ...added];
}
