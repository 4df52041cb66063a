import { parseFieldPath } from '../schema/field-path.js';
import { type ColumnSpec } from '../schema/types.js';
import { isDocument } from './bson-kind.js';
import { defineDataProperty, relaxedEjsonText } from './ejson.js';
import { docIdString, NO_FIT, scalarConverter, type ScalarConverter } from './values.js';

/** A history-table row before the metadata columns are added: user columns plus `_unmapped`. */
export type Row = Record<string, unknown>;

export interface MappedDocument {
  readonly row: Row;
  /** REQUIRED columns that had no value: BigQuery would reject the row, so it belongs in the dead-letter table. */
  readonly missingRequired: readonly string[] | undefined;
}

export interface RowMapperOptions {
  /**
   * Keep the fields no column reads in `_unmapped` (default true). Values that do not fit their column are
   * kept there either way: they belong to a declared column and dropping them would lose data.
   */
  readonly captureUnmapped?: boolean;
}

export interface RowMapper {
  readonly columns: readonly ColumnSpec[];
  map(document: Readonly<Record<string, unknown>>): MappedDocument;
}

/** Per-document scratch state. */
interface Context {
  unmapped: Record<string, unknown> | undefined;
  /** Set when something inside an array did not fit (the whole array then goes to `_unmapped`). */
  dirty: boolean;
  missingRequired: string[] | undefined;
}

/** Which document paths the columns read: `whole` when a column takes the subtree, else per child key. */
interface Coverage {
  whole: boolean;
  readonly children: Map<string, Coverage>;
}

type FieldWriter = (source: Readonly<Record<string, unknown>>, target: Row, ctx: Context, base: Path) => void;
/** The static document path of the container being read, or null inside arrays (positions are not static). */
type Path = readonly string[] | null;

const PROTOTYPE_KEYS = new Set(Object.getOwnPropertyNames(Object.prototype));

function compileGetter(segments: readonly string[]): (source: Readonly<Record<string, unknown>>) => unknown {
  const safe = (key: string) => !PROTOTYPE_KEYS.has(key);
  const read = (obj: Readonly<Record<string, unknown>>, key: string): unknown =>
    safe(key) || Object.hasOwn(obj, key) ? obj[key] : undefined;
  if (segments.length === 1) {
    const [key = ''] = segments;
    return safe(key) ? (obj) => obj[key] : (obj) => read(obj, key);
  }
  return (obj) => {
    let current: unknown = obj;
    for (const key of segments) {
      if (!isDocument(current)) return undefined;
      current = read(current, key);
    }
    return current;
  };
}

function setUnmapped(ctx: Context, path: readonly string[], value: unknown): void {
  ctx.unmapped ??= {};
  let node: Record<string, unknown> = ctx.unmapped;
  for (let i = 0; i < path.length - 1; i++) {
    const key = path[i] ?? '';
    let next = Object.hasOwn(node, key) ? node[key] : undefined;
    if (!isDocument(next)) {
      next = {};
      setData(node, key, next);
    }
    node = next as Record<string, unknown>;
  }
  setData(node, path[path.length - 1] ?? '', value);
}

function setData(target: Record<string, unknown>, key: string, value: unknown): void {
  if (key === '__proto__') defineDataProperty(target, key, value);
  else target[key] = value;
}

/** Records a value that did not fit: at its path when the path is static, else marks the enclosing array. */
function reject(ctx: Context, base: Path, segments: readonly string[], value: unknown): void {
  if (base === null) ctx.dirty = true;
  else setUnmapped(ctx, [...base, ...segments], value);
}

function addCoverage(root: Coverage, segments: readonly string[]): void {
  let node = root;
  for (const key of segments) {
    if (node.whole) return;
    let child = node.children.get(key);
    if (!child) {
      child = { whole: false, children: new Map() };
      node.children.set(key, child);
    }
    node = child;
  }
  node.whole = true;
  node.children.clear();
}

/** Puts every part of `source` that `coverage` does not read into `_unmapped` (or marks the array dirty). */
function collectUncovered(
  source: Readonly<Record<string, unknown>>,
  coverage: Coverage,
  ctx: Context,
  base: Path,
): void {
  for (const key of Object.keys(source)) {
    const child = coverage.children.get(key);
    if (child?.whole) continue;
    const value = source[key];
    if (child && isDocument(value)) {
      collectUncovered(value, child, ctx, base === null ? null : [...base, key]);
    } else {
      reject(ctx, base, [key], value);
    }
  }
}

interface RecordPlan {
  readonly writers: readonly FieldWriter[];
  readonly coverage: Coverage;
  readonly capture: boolean;
}

function compileRecord(fields: readonly ColumnSpec[], capture: boolean, topLevel: boolean): RecordPlan {
  const coverage: Coverage = { whole: false, children: new Map() };
  // The document id always has a home: the `_doc_id` metadata column.
  if (topLevel) addCoverage(coverage, ['_id']);
  const writers = fields.map((column) => {
    const segments = parseFieldPath(column.mongo_field ?? column.name);
    addCoverage(coverage, segments);
    return compileField(column, segments, capture, topLevel);
  });
  return { writers, coverage, capture };
}

function convertRecord(
  plan: RecordPlan,
  source: Readonly<Record<string, unknown>>,
  ctx: Context,
  base: Path,
): Row {
  const out: Row = {};
  for (const write of plan.writers) write(source, out, ctx, base);
  if (plan.capture) collectUncovered(source, plan.coverage, ctx, base);
  return out;
}

/** Converts one value of the column's element type; NO_FIT when it does not fit. */
type ElementConverter = (value: unknown, ctx: Context, base: Path) => unknown;

function compileElement(column: ColumnSpec, capture: boolean): ElementConverter {
  if (column.type === 'RECORD') {
    const plan = compileRecord(column.fields ?? [], capture, false);
    return (value, ctx, base) => (isDocument(value) ? convertRecord(plan, value, ctx, base) : NO_FIT);
  }
  const convert: ScalarConverter = scalarConverter(column.type);
  return (value) => convert(value);
}

function compileField(
  column: ColumnSpec,
  segments: string[],
  capture: boolean,
  topLevel: boolean,
): FieldWriter {
  const name = column.name;
  const get = compileGetter(segments);
  const required = column.mode === 'REQUIRED';
  const record = (target: Row, value: unknown) => {
    setData(target, name, value);
  };

  if (
    topLevel &&
    column.type === 'STRING' &&
    column.mode !== 'REPEATED' &&
    segments.length === 1 &&
    segments[0] === '_id'
  ) {
    return (source, target) => {
      const id = source._id;
      record(target, id === undefined || id === null ? null : docIdString(id));
    };
  }

  const element = compileElement(column, capture);

  if (column.mode === 'REPEATED') {
    return (source, target, ctx, base) => {
      const value = get(source);
      if (value === undefined) {
        record(target, []);
        return;
      }
      // A BigQuery array cannot be NULL: an explicit null (unlike a missing field) is kept in `_unmapped`.
      if (!Array.isArray(value)) {
        reject(ctx, base, segments, value);
        record(target, []);
        return;
      }
      const outer = ctx.dirty;
      ctx.dirty = false;
      const out: unknown[] = [];
      for (const item of value as unknown[]) {
        // BigQuery arrays cannot hold NULL: such an element is kept through `_unmapped` like any misfit.
        const converted = item === null || item === undefined ? NO_FIT : element(item, ctx, null);
        if (converted === NO_FIT) ctx.dirty = true;
        else out.push(converted);
      }
      if (ctx.dirty) {
        ctx.dirty = outer;
        reject(ctx, base, segments, value);
      } else {
        ctx.dirty = outer;
      }
      record(target, out);
    };
  }

  return (source, target, ctx, base) => {
    const value = get(source);
    if (value === undefined || value === null) {
      if (required)
        (ctx.missingRequired ??= []).push(base === null ? name : [...base, ...segments].join('.'));
      record(target, null);
      return;
    }
    const converted = element(value, ctx, base === null ? null : [...base, ...segments]);
    if (converted === NO_FIT) {
      reject(ctx, base, segments, value);
      record(target, null);
    } else {
      record(target, converted);
    }
  };
}

/**
 * Compiles column specs once into a mapper from documents to rows. Nothing is dropped: a field no column
 * reads, or a value that does not fit its column without loss, is kept in `_unmapped` as relaxed Extended
 * JSON (unless `captureUnmapped` is false); the column then holds NULL (REPEATED: an empty array).
 */
export function compileRowMapper(columns: readonly ColumnSpec[], options: RowMapperOptions = {}): RowMapper {
  const capture = options.captureUnmapped ?? true;
  const plan = compileRecord(columns, capture, true);
  const root: readonly string[] = [];
  return {
    columns,
    map(document) {
      const ctx: Context = { unmapped: undefined, dirty: false, missingRequired: undefined };
      const row = convertRecord(plan, document, ctx, root);
      row._unmapped = ctx.unmapped === undefined ? null : relaxedEjsonText(ctx.unmapped);
      return { row, missingRequired: ctx.missingRequired };
    },
  };
}
