import { bsonKind, isDocument } from '../base/bson-kind.js';
import { type Binary } from 'bson';
import { formatFieldPath } from './field-path.js';
import { assignColumnNames, METADATA_COLUMN_NAMES, RESERVED_TOP_LEVEL_NAMES } from './names.js';
import { MAX_COLUMNS, MAX_NESTING_DEPTH, type ColumnSpec, type ColumnType } from './types.js';

/** What one document path held across the samples; a join-semilattice, so the sample order cannot matter. */
export interface TypeNode {
  readonly kinds: Set<ObservedKind>;
  readonly fields: Map<string, TypeNode>;
  element: TypeNode | undefined;
}

type ObservedKind =
  | 'INT'
  | 'FLOAT'
  | 'DECIMAL'
  | 'BOOL'
  | 'STRING'
  | 'OBJECTID'
  | 'UUID'
  | 'BYTES'
  | 'DATE'
  | 'JSON'
  | 'RECORD'
  | 'ARRAY';

const UUID_SUBTYPE = 4;
const GENERIC_BINARY_SUBTYPES = new Set([0, 2]);
const NUMERIC_KINDS = new Set<ObservedKind>(['INT', 'FLOAT', 'DECIMAL']);
const STRING_KINDS = new Set<ObservedKind>(['STRING', 'OBJECTID', 'UUID']);

export function emptyNode(): TypeNode {
  return { kinds: new Set(), fields: new Map(), element: undefined };
}

function scalarKind(value: unknown): ObservedKind | undefined {
  switch (bsonKind(value)) {
    case 'null':
      return undefined;
    case 'number':
      // Promoted doubles that hold whole numbers look like integers; decode with promoteValues: false to tell.
      return Number.isInteger(value) && !Object.is(value, -0) ? 'INT' : 'FLOAT';
    case 'Int32':
    case 'Long':
    case 'bigint':
      return 'INT';
    case 'Double':
      return 'FLOAT';
    case 'Decimal128':
      return 'DECIMAL';
    case 'boolean':
      return 'BOOL';
    // A string that is not valid UTF-8 is still a string: its column is STRING, the value itself goes to `_unmapped`.
    case 'string':
    case 'BSONSymbol':
    case 'invalidUtf8':
      return 'STRING';
    case 'ObjectId':
      return 'OBJECTID';
    case 'Binary': {
      const binary = value as Binary;
      if (binary.sub_type === UUID_SUBTYPE && binary.position === 16) return 'UUID';
      return GENERIC_BINARY_SUBTYPES.has(binary.sub_type) ? 'BYTES' : 'JSON';
    }
    case 'bytes':
      return 'BYTES';
    case 'date':
      return 'DATE';
    case 'document':
      return 'RECORD';
    case 'array':
      return 'ARRAY';
    // Types with no BigQuery counterpart keep every detail as Extended JSON.
    case 'regexp':
    case 'BSONRegExp':
    case 'Code':
    case 'Timestamp':
    case 'MinKey':
    case 'MaxKey':
    case 'DBRef':
    case 'unknown':
      return 'JSON';
  }
}

/** Adds one observed value at `node`. */
export function observe(node: TypeNode, value: unknown): void {
  const kind = scalarKind(value);
  if (kind === undefined) return;
  node.kinds.add(kind);
  if (kind === 'RECORD') {
    observeDocument(node, value as Record<string, unknown>);
  } else if (kind === 'ARRAY') {
    node.element ??= emptyNode();
    for (const item of value as unknown[]) observe(node.element, item);
  }
}

export function observeDocument(node: TypeNode, document: Readonly<Record<string, unknown>>): void {
  for (const key of Object.keys(document)) {
    let child = node.fields.get(key);
    if (!child) {
      child = emptyNode();
      node.fields.set(key, child);
    }
    observe(child, document[key]);
  }
}

export interface ResolvedType {
  readonly type: ColumnType;
  readonly repeated: boolean;
  /** For RECORD: sub-document key -> resolved type. */
  readonly fields?: ReadonlyMap<string, ResolvedType>;
}

const JSON_TYPE: ResolvedType = { type: 'JSON', repeated: false };

function scalarType(kinds: ReadonlySet<ObservedKind>): ColumnType {
  const all = [...kinds];
  if (all.every((k) => NUMERIC_KINDS.has(k))) {
    if (kinds.has('DECIMAL')) return 'BIGNUMERIC';
    return kinds.has('FLOAT') ? 'FLOAT' : 'INTEGER';
  }
  if (all.every((k) => STRING_KINDS.has(k))) return 'STRING';
  if (kinds.size > 1) return 'JSON';
  switch (all[0]) {
    case 'BOOL':
      return 'BOOLEAN';
    case 'BYTES':
      return 'BYTES';
    case 'DATE':
      return 'TIMESTAMP';
    default:
      return 'JSON';
  }
}

/**
 * The column type for what was observed at a path `depth` levels deep (top level = 1), or undefined when
 * nothing but nulls, empty arrays or empty sub-documents was seen (the field then waits in `_unmapped` until
 * a value shows its type).
 */
export function resolveType(node: TypeNode, depth: number): ResolvedType | undefined {
  const { kinds } = node;
  if (kinds.size === 0) return undefined;
  if (kinds.has('ARRAY')) {
    if (kinds.size > 1) return JSON_TYPE;
    const element = node.element ? resolveType(node.element, depth) : undefined;
    if (element === undefined) return undefined;
    // BigQuery has no arrays of arrays.
    if (element.repeated) return JSON_TYPE;
    return { ...element, repeated: true };
  }
  if (kinds.has('RECORD')) {
    if (kinds.size > 1) return JSON_TYPE;
    if (depth >= MAX_NESTING_DEPTH) return JSON_TYPE;
    const fields = new Map<string, ResolvedType>();
    for (const [key, child] of node.fields) {
      const resolved = resolveType(child, depth + 1);
      if (resolved) fields.set(key, resolved);
    }
    if (fields.size === 0) return undefined;
    return { type: 'RECORD', repeated: false, fields };
  }
  return { type: scalarType(kinds), repeated: false };
}

function resolvedCount(t: ResolvedType): number {
  let n = 1;
  if (t.fields) for (const f of t.fields.values()) n += resolvedCount(f);
  return n;
}

/**
 * Column specs for resolved sub-document keys, named legally and uniquely (against `taken` as well),
 * within a budget of columns: a RECORD that does not fit becomes one JSON column; a column that does not
 * fit at all is left out and its values stay in `_unmapped`. Keys are handled in code-unit order.
 */
export function columnsFor(
  entries: ReadonlyMap<string, ResolvedType>,
  taken: readonly string[],
  budget: { remaining: number },
): ColumnSpec[] {
  const names = assignColumnNames(entries.keys(), taken);
  const keys = [...entries.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const columns: ColumnSpec[] = [];
  for (const key of keys) {
    const resolved = entries.get(key);
    const name = names.get(key);
    if (!resolved || !name || budget.remaining < 1) continue;
    const t = resolvedCount(resolved) <= budget.remaining ? resolved : JSON_TYPE;
    columns.push(specFor(key, name, t, budget));
  }
  return columns;
}

function specFor(key: string, name: string, t: ResolvedType, budget: { remaining: number }): ColumnSpec {
  budget.remaining -= 1;
  const base = {
    name,
    type: t.type,
    mongo_field: formatFieldPath([key]),
    ...(t.repeated && { mode: 'REPEATED' as const }),
  };
  if (t.type !== 'RECORD' || !t.fields) return base;
  return { ...base, fields: columnsFor(t.fields, [], budget) };
}

export interface InferOptions {
  /** Upper bound on documents read from the samples (default 1,000). */
  readonly maxSamples?: number;
}

export const DEFAULT_INFER_SAMPLES = 1_000;

/** The `_id` column every inferred schema starts with: the document id as a string, the primary key. */
export const ID_COLUMN: ColumnSpec = Object.freeze({
  name: '_id',
  type: 'STRING',
  mongo_field: '_id',
  primary_key: true,
});

/** Column specs (original format) for the columns the documents hold, independent of their order. */
export async function inferColumns(
  samples: AsyncIterable<Readonly<Record<string, unknown>>> | Iterable<Readonly<Record<string, unknown>>>,
  options: InferOptions = {},
): Promise<ColumnSpec[]> {
  const max = options.maxSamples ?? DEFAULT_INFER_SAMPLES;
  const root = emptyNode();
  let seen = 0;
  for await (const document of samples) {
    if (seen++ >= max) break;
    if (isDocument(document)) observeDocument(root, document);
  }
  return columnsFromNode(root);
}

export function columnsFromNode(root: TypeNode): ColumnSpec[] {
  const resolved = new Map<string, ResolvedType>();
  for (const [key, child] of root.fields) {
    if (key === '_id') continue;
    const t = resolveType(child, 1);
    if (t) resolved.set(key, t);
  }
  const budget = { remaining: MAX_COLUMNS - METADATA_COLUMN_NAMES.length - 1 };
  return [ID_COLUMN, ...columnsFor(resolved, [...RESERVED_TOP_LEVEL_NAMES, ID_COLUMN.name], budget)];
}
