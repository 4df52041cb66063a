import { parseFieldPath } from '../schema/field-path.js';
import { type ColumnSpec } from '../schema/types.js';
import { isDocument } from '../base/bson-kind.js';
import { defineDataProperty, relaxedEjsonText } from './ejson.js';
import { docIdString, NO_FIT, scalarConverter } from './values.js';

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

/**
 * The document path of a value, known when the mapper is compiled; null inside arrays, where positions are
 * not static (a misfit there sends the whole array to `_unmapped`).
 */
type StaticPath = readonly string[] | null;

type Source = Readonly<Record<string, unknown>>;
type FieldWriter = (source: Source, target: Row, ctx: Context) => void;
type Setter = (target: Row, value: unknown) => void;

const PROTOTYPE_KEYS = new Set(Object.getOwnPropertyNames(Object.prototype));

function compileGetter(segments: readonly string[]): (source: Source) => unknown {
  const safe = (key: string) => !PROTOTYPE_KEYS.has(key);
  // Keys like `constructor` would otherwise be read from Object.prototype when the document lacks them.
  const read = (obj: Source, key: string): unknown =>
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

function compileSetter(name: string): Setter {
  // `__proto__` as a column or key name must stay data, never become the prototype.
  if (name === '__proto__')
    return (target, value) => {
      defineDataProperty(target, name, value);
    };
  return (target, value) => {
    target[name] = value;
  };
}

function setData(target: Record<string, unknown>, key: string, value: unknown): void {
  if (key === '__proto__') defineDataProperty(target, key, value);
  else target[key] = value;
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

/** Records a value that did not fit: at its path when the path is static, else marks the enclosing array. */
function reject(ctx: Context, path: StaticPath, value: unknown): void {
  if (path === null) ctx.dirty = true;
  else setUnmapped(ctx, path, value);
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
function collectUncovered(source: Source, coverage: Coverage, ctx: Context, base: StaticPath): void {
  for (const key of Object.keys(source)) {
    const child = coverage.children.get(key);
    if (child?.whole) continue;
    const value = source[key];
    const path = base === null ? null : [...base, key];
    if (child && isDocument(value)) collectUncovered(value, child, ctx, path);
    else reject(ctx, path, value);
  }
}

interface RecordPlan {
  readonly writers: readonly FieldWriter[];
  readonly coverage: Coverage;
  readonly capture: boolean;
  readonly base: StaticPath;
}

function compileRecord(
  fields: readonly ColumnSpec[],
  capture: boolean,
  base: StaticPath,
  topLevel: boolean,
): RecordPlan {
  const coverage: Coverage = { whole: false, children: new Map() };
  // The document id always has a home: the `_doc_id` metadata column.
  if (topLevel) addCoverage(coverage, ['_id']);
  const writers = fields.map((column) => {
    const segments = parseFieldPath(column.mongo_field ?? column.name);
    addCoverage(coverage, segments);
    return compileField(column, segments, capture, base === null ? null : [...base, ...segments], topLevel);
  });
  return { writers, coverage, capture, base };
}

function convertRecord(plan: RecordPlan, source: Source, ctx: Context): Row {
  const out: Row = {};
  for (const write of plan.writers) write(source, out, ctx);
  if (plan.capture) collectUncovered(source, plan.coverage, ctx, plan.base);
  return out;
}

/** Converts one non-null value of the column's (element) type; NO_FIT when it does not fit. */
type ElementConverter = (value: unknown, ctx: Context) => unknown;

function compileElement(column: ColumnSpec, capture: boolean, path: StaticPath): ElementConverter {
  if (column.type === 'RECORD') {
    const plan = compileRecord(column.fields ?? [], capture, path, false);
    return (value, ctx) => (isDocument(value) ? convertRecord(plan, value, ctx) : NO_FIT);
  }
  return scalarConverter(column.type);
}

function compileField(
  column: ColumnSpec,
  segments: readonly string[],
  capture: boolean,
  path: StaticPath,
  topLevel: boolean,
): FieldWriter {
  const get = compileGetter(segments);
  const set = compileSetter(column.name);

  if (
    topLevel &&
    column.type === 'STRING' &&
    column.mode !== 'REPEATED' &&
    segments.length === 1 &&
    segments[0] === '_id'
  ) {
    return (source, target) => {
      const id = source._id;
      set(target, id === undefined || id === null ? null : docIdString(id));
    };
  }

  if (column.mode === 'REPEATED') {
    const element = compileElement(column, capture, null);
    return (source, target, ctx) => {
      const value = get(source);
      if (value === undefined) {
        set(target, []);
        return;
      }
      // A BigQuery array cannot be NULL: an explicit null (unlike a missing field) is kept in `_unmapped`.
      if (!Array.isArray(value)) {
        reject(ctx, path, value);
        set(target, []);
        return;
      }
      const outer = ctx.dirty;
      ctx.dirty = false;
      const out: unknown[] = [];
      for (const item of value as unknown[]) {
        // BigQuery arrays cannot hold NULL: such an element is kept through `_unmapped` like any misfit.
        const converted = item === null || item === undefined ? NO_FIT : element(item, ctx);
        if (converted === NO_FIT) ctx.dirty = true;
        else out.push(converted);
      }
      const dirty = ctx.dirty;
      ctx.dirty = outer;
      if (dirty) reject(ctx, path, value);
      set(target, out);
    };
  }

  const element = compileElement(column, capture, path);
  const required = column.mode === 'REQUIRED';
  const where = path === null ? column.name : path.join('.');
  const [key = ''] = segments;
  const name = column.name;
  if (segments.length === 1 && !PROTOTYPE_KEYS.has(key) && !PROTOTYPE_KEYS.has(name)) {
    // The common case, inlined: a plain key read into a plain column.
    return (source, target, ctx) => {
      const value = source[key];
      if (value === undefined || value === null) {
        if (required) (ctx.missingRequired ??= []).push(where);
        target[name] = null;
        return;
      }
      const converted = element(value, ctx);
      if (converted === NO_FIT) {
        reject(ctx, path, value);
        target[name] = null;
      } else {
        target[name] = converted;
      }
    };
  }
  return (source, target, ctx) => {
    const value = get(source);
    if (value === undefined || value === null) {
      if (required) (ctx.missingRequired ??= []).push(where);
      set(target, null);
      return;
    }
    const converted = element(value, ctx);
    if (converted === NO_FIT) {
      reject(ctx, path, value);
      set(target, null);
    } else {
      set(target, converted);
    }
  };
}

/**
 * Compiles column specs once into a mapper from documents to rows. Nothing is dropped: a field no column
 * reads, or a value that does not fit its column without loss, is kept in `_unmapped` as relaxed Extended
 * JSON (fields no column reads only while `captureUnmapped` is on); the column then holds NULL (REPEATED:
 * an empty array).
 */
export function compileRowMapper(columns: readonly ColumnSpec[], options: RowMapperOptions = {}): RowMapper {
  const plan = compileRecord(columns, options.captureUnmapped ?? true, [], true);
  return {
    columns,
    map(document) {
      const ctx: Context = { unmapped: undefined, dirty: false, missingRequired: undefined };
      const row = convertRecord(plan, document, ctx);
      row._unmapped = ctx.unmapped === undefined ? null : relaxedEjsonText(ctx.unmapped);
      return { row, missingRequired: ctx.missingRequired };
    },
  };
}
