import { bsonKind, isDocument } from '../base/bson-kind.js';
import { DEFAULT_BATCH_LIMITS, MAX_REQUEST_BYTES } from '../core/batcher.js';
import { backfillRecord } from '../core/history-rows.js';
import { rowBytes } from '../core/stream-loop.js';
import { parseFieldPath } from '../schema/field-path.js';
import { MAX_NESTING_DEPTH, type ColumnSpec } from '../schema/types.js';
import { compileRowMapper } from '../transform/row-mapper.js';
import { docIdString } from '../transform/values.js';

/** Fields of the sample that land in `_unmapped`, at most this many listed (the rest are counted). */
export const MAX_PLAN_UNMAPPED_FIELDS = 50;
/** Rows over a limit, at most this many listed. */
export const MAX_PLAN_OVER_LIMITS = 20;

/** A document path whose values land in `_unmapped` in the sample, and why. */
export interface UnmappedField {
  /** Dotted document path (`a.b`). */
  readonly path: string;
  /** `no-column`: no column reads it; `does-not-fit`: a column reads it but the value does not fit its type. */
  readonly reason: 'no-column' | 'does-not-fit';
  /** The column that reads it (its name path and type), for `does-not-fit`. */
  readonly column?: string;
  /** Sampled documents with such a value. */
  readonly documents: number;
  /** BSON kinds of those values (`string`, `double`, `document`, ...). */
  readonly kinds: readonly string[];
}

/** A sampled document whose row BigQuery would not take as it is. */
export interface OverLimit {
  /** `_doc_id` of the document. */
  readonly docId: string;
  readonly limit: 'row-size' | 'request-size' | 'nesting';
  readonly detail: string;
}

export interface SampleFindings {
  readonly documents: number;
  readonly unmapped: readonly UnmappedField[];
  /** Further paths not listed (over MAX_PLAN_UNMAPPED_FIELDS). */
  readonly unmappedNotListed: number;
  readonly overLimits: readonly OverLimit[];
  readonly overLimitsNotListed: number;
  /** Mean size of the sampled rows as insertAll JSON (bytes), undefined for an empty sample. */
  readonly averageRowBytes: number | undefined;
}

/** Which document paths the columns read, and the column at each end. */
interface Cover {
  column: string | undefined;
  readonly children: Map<string, Cover>;
}

/**
 * What the sample shows before anything is written: the fields that would land in `_unmapped` (mapped with
 * the pipeline's own mapper, so exactly those), and the rows over BigQuery's limits (row size as the sink
 * measures it, request size, nesting depth). Pure.
 */
export function analyseSample(
  columns: readonly ColumnSpec[],
  documents: readonly Readonly<Record<string, unknown>>[],
  captureUnmapped: boolean,
): SampleFindings {
  const mapper = compileRowMapper(columns, { captureUnmapped });
  const cover = coverOf(columns, '', true);
  const found = new Map<
    string,
    { reason: UnmappedField['reason']; column?: string; docs: number; kinds: Set<string> }
  >();
  const overLimits: OverLimit[] = [];
  let totalBytes = 0;
  const now = new Date(0);
  for (const document of documents) {
    const docId = docIdString(document._id);
    const row = backfillRecord(mapper, document, { t: 0, i: 0 }, now).row();
    const bytes = rowBytes(row);
    totalBytes += bytes;
    if (bytes > MAX_REQUEST_BYTES) {
      overLimits.push({
        docId,
        limit: 'request-size',
        detail: `row of ${String(bytes)} bytes is over BigQuery's ${String(MAX_REQUEST_BYTES)}-byte request limit: it goes to the dead-letter table`,
      });
    } else if (bytes > DEFAULT_BATCH_LIMITS.maxRowBytes) {
      overLimits.push({
        docId,
        limit: 'row-size',
        detail: `row of ${String(bytes)} bytes is over the ${String(DEFAULT_BATCH_LIMITS.maxRowBytes)}-byte row cap kept under BigQuery's request limit: it goes to the dead-letter table`,
      });
    }
    const depth = nesting(document);
    if (depth > MAX_NESTING_DEPTH) {
      overLimits.push({
        docId,
        limit: 'nesting',
        detail: `nested ${String(depth)} levels deep, BigQuery allows ${String(MAX_NESTING_DEPTH)}: the deeper parts can never become columns`,
      });
    }
    const text = row._unmapped;
    if (typeof text !== 'string') continue;
    const seen = new Set<string>();
    walk(JSON.parse(text) as Record<string, unknown>, document, cover, '', (path, reason, column, value) => {
      if (seen.has(path)) return;
      seen.add(path);
      const entry = found.get(path) ?? {
        reason,
        ...(column !== undefined && { column }),
        docs: 0,
        kinds: new Set(),
      };
      entry.docs++;
      entry.kinds.add(bsonKind(value));
      found.set(path, entry);
    });
  }
  const unmapped = [...found.entries()]
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([path, e]) => ({
      path,
      reason: e.reason,
      ...(e.column !== undefined && { column: e.column }),
      documents: e.docs,
      kinds: [...e.kinds].sort(),
    }));
  return {
    documents: documents.length,
    unmapped: unmapped.slice(0, MAX_PLAN_UNMAPPED_FIELDS),
    unmappedNotListed: Math.max(0, unmapped.length - MAX_PLAN_UNMAPPED_FIELDS),
    overLimits: overLimits.slice(0, MAX_PLAN_OVER_LIMITS),
    overLimitsNotListed: Math.max(0, overLimits.length - MAX_PLAN_OVER_LIMITS),
    averageRowBytes: documents.length === 0 ? undefined : Math.round(totalBytes / documents.length),
  };
}

function coverOf(columns: readonly ColumnSpec[], prefix: string, topLevel: boolean): Cover {
  const root: Cover = { column: undefined, children: new Map() };
  // The document id always has a home: the `_doc_id` metadata column.
  if (topLevel) root.children.set('_id', { column: '_doc_id STRING', children: new Map() });
  for (const c of columns) {
    let node = root;
    for (const key of parseFieldPath(c.mongo_field ?? c.name)) {
      let child = node.children.get(key);
      if (!child) {
        child = { column: undefined, children: new Map() };
        node.children.set(key, child);
      }
      node = child;
    }
    const name = `${prefix}${c.name}`;
    node.column = `${name} ${c.mode === 'REPEATED' ? 'REPEATED ' : ''}${c.type}`;
    if (c.type === 'RECORD' && c.mode !== 'REPEATED' && c.fields) {
      for (const [key, sub] of coverOf(c.fields, `${name}.`, false).children) node.children.set(key, sub);
    }
  }
  return root;
}

/**
 * Walks the `_unmapped` object beside the document it came from: a key no column reaches has no column; a
 * key a column reads (or a path under one whose value is no document) did not fit. The document's value
 * decides whether to go deeper, since `_unmapped` spells BSON values as Extended JSON objects.
 */
function walk(
  unmapped: Readonly<Record<string, unknown>>,
  document: unknown,
  cover: Cover,
  prefix: string,
  report: (path: string, reason: UnmappedField['reason'], column: string | undefined, value: unknown) => void,
): void {
  for (const key of Object.keys(unmapped)) {
    const value = isDocument(document) && Object.hasOwn(document, key) ? document[key] : undefined;
    const path = `${prefix}${key}`;
    const child = cover.children.get(key);
    const below = unmapped[key];
    if (!child) report(path, 'no-column', undefined, value);
    else if (child.children.size > 0 && isDocument(value) && typeof below === 'object' && below !== null) {
      walk(below as Record<string, unknown>, value, child, `${path}.`, report);
    } else report(path, 'does-not-fit', child.column ?? columnsUnder(child).join(', '), value);
  }
}

function columnsUnder(cover: Cover): string[] {
  return [...cover.children.values()].flatMap((c) => [
    ...(c.column === undefined ? [] : [c.column]),
    ...columnsUnder(c),
  ]);
}

/** Levels of documents (in arrays too) under the top one: `{a: {b: 1}}` is 2. */
function nesting(value: unknown): number {
  if (Array.isArray(value)) return Math.max(0, ...value.map(nesting));
  if (!isDocument(value)) return 0;
  return 1 + Math.max(0, ...Object.values(value).map(nesting));
}
