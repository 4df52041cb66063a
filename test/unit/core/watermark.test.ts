import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { Watermark } from '../../../src/core/watermark.js';

describe('Watermark', () => {
  it('issue 11 must-show 3: a later batch acknowledged before an earlier one fails never moves the watermark past the failed one', () => {
    const marks = new Watermark<string>('p0');
    const first = marks.issue('p1');
    const second = marks.issue('p2');
    const third = marks.issue('p3');
    expect(marks.done(third)).toBe(false);
    expect(marks.done(second)).toBe(false);
    expect(marks.position).toBe('p0');
    marks.fail(first);
    expect(marks.failed).toBe(true);
    expect(marks.position).toBe('p0');
    // Nothing issued later gets it past the failure either.
    marks.mark('p4');
    expect(marks.position).toBe('p0');
  });

  it('advances over the contiguous acknowledged prefix only', () => {
    const marks = new Watermark<number>();
    const a = marks.issue(1);
    const b = marks.issue(2);
    const c = marks.issue(3);
    expect(marks.done(b)).toBe(false);
    expect(marks.position).toBeUndefined();
    expect(marks.done(a)).toBe(true);
    expect(marks.position).toBe(2);
    expect(marks.outstanding).toBe(1);
    marks.done(c);
    expect(marks.position).toBe(3);
    expect(marks.outstanding).toBe(0);
  });

  it('positions reached without a batch wait for the batches before them', () => {
    const marks = new Watermark<number>(0);
    const sent = marks.issue(5);
    marks.mark(7);
    expect(marks.position).toBe(0);
    marks.done(sent);
    expect(marks.position).toBe(7);
  });

  it('a ticket without a position moves nothing but still holds the ones after it', () => {
    const marks = new Watermark<number>(0);
    const none = marks.issue(undefined);
    marks.mark(3);
    expect(marks.position).toBe(0);
    marks.done(none);
    expect(marks.position).toBe(3);
  });

  it('refuses to settle a ticket twice', () => {
    const marks = new Watermark<number>();
    const t = marks.issue(1);
    marks.done(t);
    expect(() => marks.done(t)).toThrow(/not outstanding/);
  });

  it('equals the last position of the longest done prefix, in any acknowledgement order (property)', () => {
    fc.assert(
      fc.property(
        fc
          .integer({ min: 1, max: 30 })
          .chain((n) =>
            fc.tuple(
              fc.constant(n),
              fc.shuffledSubarray([...Array(n).keys()], { minLength: 0, maxLength: n }),
            ),
          ),
        ([n, order]) => {
          const marks = new Watermark<number>(-1);
          const tickets = [...Array(n).keys()].map((i) => marks.issue(i));
          const done = new Set<number>();
          for (const i of order) {
            marks.done(tickets[i] ?? -1);
            done.add(i);
            let prefix = -1;
            while (done.has(prefix + 1)) prefix++;
            expect(marks.position).toBe(prefix);
          }
        },
      ),
    );
  });
});
