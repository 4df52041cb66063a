import { ReadPreference, type Collection, type Document, type FindOptions } from 'mongodb';
import { describe, expect, it } from 'vitest';
import { MongoExistingIds } from '../../../src/mongodb/existing-ids.js';

/** A collection that holds `ids` and records the options of every find (what the driver would send). */
function collectionOf(ids: readonly number[]) {
  const finds: FindOptions[] = [];
  const collection = {
    find(filter: Document, options: FindOptions) {
      finds.push(options);
      const wanted = (filter as { _id: { $in: unknown[] } })._id.$in;
      const docs = ids.filter((id) => wanted.includes(id)).map((id) => ({ _id: id }));
      // A cursor is async iterable; an array's iterator serves `for await` as well.
      return docs[Symbol.iterator]();
    },
  };
  return { collection: collection as unknown as Collection, finds };
}

describe('MongoExistingIds', () => {
  it('answers in canonical _doc_id form, in batches', async () => {
    const { collection, finds } = collectionOf([1, 2, 5]);
    const existing = new MongoExistingIds(collection, { batch: 2 });

    const found = await existing.existing(
      ['{"$numberInt":"1"}', '{"$numberInt":"3"}', '{"$numberInt":"5"}'],
      new AbortController().signal,
    );

    expect([...found].sort()).toEqual(['{"$numberInt":"1"}', '{"$numberInt":"5"}']);
    expect(finds).toHaveLength(2);
  });

  it('reads the primary with read concern majority, whatever the connection string says (finding 3)', async () => {
    // A lagging secondary lacks a document inserted before the repair's snapshot start (the primary's
    // majority time): read there, it would be taken for gone and get a delete row.
    const { collection, finds } = collectionOf([1]);

    await new MongoExistingIds(collection).existing(['{"$numberInt":"1"}'], new AbortController().signal);

    const [options] = finds;
    expect(ReadPreference.fromOptions(options)?.mode).toBe('primary');
    expect(options?.readConcern).toEqual({ level: 'majority' });
  });
});
