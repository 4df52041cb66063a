import { type Collection, type Document } from 'mongodb';
import { driverDecode } from './raw-bson.js';

interface ReadOptions {
  readonly raw?: boolean;
  readonly enableUtf8Validation?: boolean;
  readonly sort?: Document;
  readonly skip?: number;
  readonly limit?: number;
}

/** A document id of the fake: a number, a string as its stored bytes (valid UTF-8 or not), or a sub-document. */
export type FakeId = number | Uint8Array | Readonly<Record<string, number>>;

/** BSON sort order across types (numbers, strings, objects) and, within strings, by bytes as MongoDB does. */
function compareIds(a: FakeId, b: FakeId): number {
  const rank = (id: FakeId) => (typeof id === 'number' ? 1 : id instanceof Uint8Array ? 2 : 3);
  if (rank(a) !== rank(b)) return rank(a) - rank(b);
  if (typeof a === 'number' && typeof b === 'number') return a - b;
  if (a instanceof Uint8Array && b instanceof Uint8Array) return Buffer.compare(a, b);
  return JSON.stringify(a).localeCompare(JSON.stringify(b));
}

/** A query value as the fake's id (a JavaScript string is sent as its UTF-8 bytes). */
function idOf(value: unknown): FakeId {
  if (typeof value === 'string') return Buffer.from(value, 'utf8');
  if (typeof value === 'number') return value;
  return value as Readonly<Record<string, number>>;
}

/**
 * The snapshot reader's `$expr` on `_id` (`$gt` or `$lte` against a `$literal`, or an `$and` of them),
 * compared across types in BSON order as MongoDB evaluates aggregation comparisons.
 */
function matchesExpr(id: FakeId, expr: unknown): boolean {
  const e = expr as {
    $gt?: [string, { $literal: unknown }];
    $lte?: [string, { $literal: unknown }];
    $and?: unknown[];
  };
  if (e.$and) return e.$and.every((part) => matchesExpr(id, part));
  if (e.$gt) return compareIds(id, idOf(e.$gt[1].$literal)) > 0;
  if (e.$lte) return compareIds(id, idOf(e.$lte[1].$literal)) <= 0;
  throw new Error(`the fake does not evaluate ${JSON.stringify(expr)}`);
}

/**
 * A collection held as BSON bytes, read the way the driver reads: each document is decoded when the cursor
 * hands it out (so one that is not valid UTF-8 throws the driver's BSONError), or handed out as its bytes
 * with `raw: true`. Filters: `{}` and `{_id: {$gt | $gte | $lte: v}}` (within v's BSON type, as MongoDB
 * brackets them), with or without the snapshot reader's `$expr`; aggregate: that `$expr`, optionally
 * `$not: {$type: 'string'}`, sorted, limited. Sort by `_id`.
 */
export class RawCollection {
  readonly reads: ReadOptions[] = [];
  readonly filters: Document[] = [];
  /** Documents handed out by every read so far (what the server would have sent). */
  documentsRead = 0;
  documents: readonly { readonly id: FakeId; readonly bytes: Uint8Array }[];
  /** What `estimatedDocumentCount` answers when set (a stale count); the true count otherwise. */
  estimate: number | undefined;

  constructor(documents: readonly { readonly id: FakeId; readonly bytes: Uint8Array }[]) {
    this.documents = [...documents].sort((a, b) => compareIds(a.id, b.id));
  }

  /** Documents inserted later (a collection that grows while it is copied). */
  insert(documents: readonly { readonly id: FakeId; readonly bytes: Uint8Array }[]): void {
    this.documents = [...this.documents, ...documents].sort((a, b) => compareIds(a.id, b.id));
  }

  #hand(docs: readonly { bytes: Uint8Array }[], options: ReadOptions): unknown[] {
    this.documentsRead += docs.length;
    return docs.map((d) => (options.raw ? Buffer.from(d.bytes) : driverDecode(d.bytes, options)));
  }

  find(filter: Document = {}, options: ReadOptions = {}) {
    this.reads.push(options);
    this.filters.push(filter);
    const range = (filter as { _id?: { $gt?: unknown; $gte?: unknown; $lte?: unknown } })._id;
    let selected = [...this.documents];
    const sameType = (a: FakeId, b: FakeId) =>
      typeof a === typeof b && a instanceof Uint8Array === b instanceof Uint8Array;
    if (range?.$gt !== undefined) {
      const v = idOf(range.$gt);
      selected = selected.filter((d) => compareIds(d.id, v) > 0 && sameType(d.id, v));
    }
    if (range?.$gte !== undefined) {
      const v = idOf(range.$gte);
      selected = selected.filter((d) => compareIds(d.id, v) >= 0 && sameType(d.id, v));
    }
    if (range?.$lte !== undefined) {
      const v = idOf(range.$lte);
      selected = selected.filter((d) => compareIds(d.id, v) <= 0 && sameType(d.id, v));
    }
    if (filter.$expr !== undefined) selected = selected.filter((d) => matchesExpr(d.id, filter.$expr));
    let limit = options.limit ?? Number.POSITIVE_INFINITY;
    let order = (options.sort?._id as number | undefined) ?? 1;
    const skip = options.skip ?? 0;
    const docs = () => (order < 0 ? [...selected].reverse() : selected).slice(skip, skip + limit);
    const cursor = {
      sort: (spec: Document) => {
        order = (spec._id as number | undefined) ?? 1;
        return cursor;
      },
      limit: (n: number) => {
        limit = n;
        return cursor;
      },
      batchSize: () => cursor,
      toArray: () => Promise.resolve(this.#hand(docs(), options)),
      close: () => Promise.resolve(),
      [Symbol.asyncIterator]: async function* (this: RawCollection) {
        // One at a time: a reader that stops early has been handed only what it took.
        for (const doc of docs()) yield await Promise.resolve(this.#hand([doc], options)[0]);
      }.bind(this),
    };
    return cursor;
  }

  /**
   * The snapshot reader's aggregations: a `$match` on `_id` sorted and limited, or a `$sample` (here the
   * documents at even steps through the collection, in `_id` order, so that tests are deterministic).
   */
  aggregate(pipeline: Document[], options: ReadOptions = {}) {
    const sample = (pipeline[0]?.$sample as { size?: number } | undefined)?.size;
    if (sample !== undefined) {
      const step = this.documents.length / Math.min(sample, this.documents.length);
      const drawn = this.documents.filter((_, i) => Math.floor(i % step) === 0).slice(0, sample);
      return { toArray: () => Promise.resolve(this.#hand(drawn, options)) };
    }
    const match = (pipeline[0]?.$match ?? {}) as Document;
    const notStrings = (match._id as { $not?: { $type?: string } } | undefined)?.$not?.$type === 'string';
    const limit = (pipeline.find((stage) => '$limit' in stage)?.$limit as number | undefined) ?? Infinity;
    let selected = [...this.documents];
    if (match.$expr !== undefined) selected = selected.filter((d) => matchesExpr(d.id, match.$expr));
    if (notStrings) selected = selected.filter((d) => !(d.id instanceof Uint8Array));
    return { toArray: () => Promise.resolve(this.#hand(selected.slice(0, limit), options)) };
  }

  estimatedDocumentCount(): Promise<number> {
    return Promise.resolve(this.estimate ?? this.documents.length);
  }

  /** This fake as the driver's type, for the code under test. */
  asCollection(): Collection {
    return this as unknown as Collection;
  }
}
