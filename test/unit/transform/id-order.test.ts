import { Int32, Long, ObjectId } from 'bson';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { encodeId } from '../../../src/mongodb/checkpoint-store.js';
import { docIdKey, inRange, rangeBounds } from '../../../src/transform/id-order.js';
import { docIdString } from '../../../src/transform/values.js';

/** MongoDB's order of the ids verify places: numbers < strings < ObjectIds; strings by UTF-8 bytes. */
function bsonCompare(a: unknown, b: unknown): number {
  const rank = (x: unknown) => (x instanceof ObjectId ? 7 : typeof x === 'string' ? 3 : 2);
  const byRank = rank(a) - rank(b);
  if (byRank !== 0) return byRank;
  if (a instanceof ObjectId && b instanceof ObjectId) return Buffer.compare(a.id, b.id);
  if (typeof a === 'string' && typeof b === 'string') return Buffer.compare(Buffer.from(a), Buffer.from(b));
  const n = (x: unknown) => BigInt(x instanceof Long ? x.toString() : String((x as Int32).value));
  const d = n(a) - n(b);
  return d < 0n ? -1 : d > 0n ? 1 : 0;
}

const arbId: fc.Arbitrary<unknown> = fc.oneof(
  fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }).map((n) => new Int32(n)),
  fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }).map((n) => Long.fromBigInt(n)),
  fc.string({ unit: 'grapheme', maxLength: 6 }),
  fc.string({ unit: 'binary', maxLength: 4 }),
  fc.uint8Array({ minLength: 12, maxLength: 12 }).map((bytes) => new ObjectId(bytes)),
);

describe('id ranges in BSON order from _doc_id', () => {
  it('puts every id in the range MongoDB puts it in, across types, over random splits', () => {
    fc.assert(
      fc.property(
        fc.array(arbId, { minLength: 1, maxLength: 40 }),
        fc.array(fc.nat(), { maxLength: 5 }),
        (ids, cuts) => {
          // Ids MongoDB would hold once (1 and 1L are one key): deduplicated by _doc_id.
          const unique = [...new Map(ids.map((id) => [docIdString(id), id])).values()].sort(bsonCompare);
          const points = [...new Set(cuts.map((c) => c % unique.length))].sort((a, b) => a - b);
          const bounds = [undefined, ...points.map((p) => encodeId(unique[p])), undefined];
          const ranges = bounds.slice(1).map((upTo, i) => ({ after: bounds[i], upTo }));
          for (const [position, id] of unique.entries()) {
            const key = docIdKey(docIdString(id));
            expect(key).toBeDefined();
            if (key === undefined) return;
            const expected = points.filter((p) => p < position).length;
            const found = ranges.map((range) => inRange(key, rangeBounds(range)));
            expect(found.indexOf(true)).toBe(expected);
            expect(found.filter(Boolean)).toHaveLength(1);
          }
        },
      ),
    );
  });

  it('does not place ids of other types (a double with a fraction, a date, a sub-document)', () => {
    for (const id of [1.5, new Date(0), { a: 1 }]) expect(docIdKey(docIdString(id))).toBeUndefined();
  });

  it('compares a double bound between integers numerically', () => {
    const range = rangeBounds({ after: encodeId(1.5), upTo: encodeId(3.5) });
    expect([1, 2, 3, 4].map((n) => inRange({ rank: 2, value: BigInt(n) }, range))).toEqual([
      false,
      true,
      true,
      false,
    ]);
  });
});
