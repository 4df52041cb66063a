import { type Collection, type Document } from 'mongodb';
import { driverDecode } from './raw-bson.js';

interface ReadOptions {
  readonly raw?: boolean;
  readonly enableUtf8Validation?: boolean;
  readonly sort?: Document;
  readonly skip?: number;
  readonly limit?: number;
}

/**
 * A collection of numeric-id documents held as BSON bytes, read the way the driver reads: each document is
 * decoded when the cursor hands it out (so one that is not valid UTF-8 throws the driver's BSONError), or
 * handed out as its bytes with `raw: true`. Filters: `{}` and `{_id: {$gt | $gte: n}}`; sort by `_id`.
 */
export class RawCollection {
  readonly reads: ReadOptions[] = [];

  constructor(private readonly documents: readonly { readonly id: number; readonly bytes: Uint8Array }[]) {}

  find(filter: Document = {}, options: ReadOptions = {}) {
    this.reads.push(options);
    const range = (filter as { _id?: { $gt?: unknown; $gte?: unknown } })._id;
    let selected = [...this.documents].sort((a, b) => a.id - b.id);
    if (typeof range?.$gt === 'number') selected = selected.filter((d) => d.id > (range.$gt as number));
    if (typeof range?.$gte === 'number') selected = selected.filter((d) => d.id >= (range.$gte as number));
    let limit = options.limit ?? Number.POSITIVE_INFINITY;
    let order = (options.sort?._id as number | undefined) ?? 1;
    const skip = options.skip ?? 0;
    const cursor = {
      sort: (spec: Document) => {
        order = (spec._id as number | undefined) ?? 1;
        return cursor;
      },
      limit: (n: number) => {
        limit = n;
        return cursor;
      },
      toArray: () => {
        const docs = (order < 0 ? selected.reverse() : selected).slice(skip, skip + limit);
        return Promise.resolve(
          docs.map((d) => (options.raw ? Buffer.from(d.bytes) : driverDecode(d.bytes, options))),
        );
      },
    };
    return cursor;
  }

  aggregate() {
    return { toArray: () => Promise.resolve([]) };
  }

  estimatedDocumentCount(): Promise<number> {
    return Promise.resolve(this.documents.length);
  }

  /** This fake as the driver's type, for the code under test. */
  asCollection(): Collection {
    return this as unknown as Collection;
  }
}
