import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { Batcher, DEFAULT_BATCH_LIMITS, splitIntoBatches } from '../../../src/core/batcher.js';

const limits = { maxRows: 3, maxBytes: 100, maxRowBytes: 80, lingerMs: 1_000 };

describe('splitIntoBatches', () => {
  it('keeps order, respects rows and bytes, and sets rows too large for any request apart', () => {
    const items = [10, 50, 45, 5, 90, 1, 1, 1, 1].map((bytes, item) => ({ item, bytes }));
    const { batches, oversized } = splitIntoBatches(items, limits);
    expect(batches.map((b) => b.map((e) => e.item))).toEqual([
      [0, 1],
      [2, 3, 5],
      [6, 7, 8],
    ]);
    expect(oversized.map((e) => e.item)).toEqual([4]);
  });

  it('never exceeds the limits and loses no item (property)', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 120 })), (sizes) => {
        const items = sizes.map((bytes, item) => ({ item, bytes }));
        const { batches, oversized } = splitIntoBatches(items, limits);
        for (const b of batches) {
          expect(b.length).toBeGreaterThan(0);
          expect(b.length).toBeLessThanOrEqual(limits.maxRows);
          expect(b.reduce((n, e) => n + e.bytes, 0)).toBeLessThanOrEqual(limits.maxBytes);
        }
        const seen = [...batches.flat(), ...oversized].map((e) => e.item).sort((a, b) => a - b);
        expect(seen).toEqual(items.map((e) => e.item));
      }),
    );
  });

  it('defaults keep every request well under 10 MB', () => {
    expect(DEFAULT_BATCH_LIMITS.maxBytes + DEFAULT_BATCH_LIMITS.maxRowBytes).toBeLessThan(15_000_000);
    expect(DEFAULT_BATCH_LIMITS.maxRowBytes).toBeLessThan(10_000_000);
  });
});

describe('Batcher', () => {
  it('is due when full by rows, by bytes, or after the linger time', () => {
    const b = new Batcher<string>(limits);
    expect(b.due(0)).toBe(false);
    expect(b.msUntilDue(0)).toBeUndefined();
    b.add('a', 10, 100);
    expect(b.due(500)).toBe(false);
    expect(b.msUntilDue(500)).toBe(600);
    expect(b.due(1_100)).toBe(true);
    b.add('b', 10, 1_100);
    b.add('c', 10, 1_100);
    expect(b.take().map((e) => e.item)).toEqual(['a', 'b', 'c']);
    expect(b.size).toBe(0);
    b.add('big', 100, 2_000);
    expect(b.due(2_000)).toBe(true);
  });

  it('says whether one more item keeps the batch within its rows and bytes (an empty batch takes any)', () => {
    const b = new Batcher<string>({ ...limits, maxRows: 2, maxBytes: 50 });
    expect(b.fits(1_000)).toBe(true);
    b.add('a', 30, 0);
    expect(b.fits(20)).toBe(true);
    expect(b.fits(21)).toBe(false);
    b.add('b', 10, 0);
    expect(b.fits(1)).toBe(false);
  });
});
