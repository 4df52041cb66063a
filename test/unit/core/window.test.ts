import { describe, expect, it } from 'vitest';
import { InFlightWindow } from '../../../src/core/window.js';

describe('InFlightWindow', () => {
  it('admits up to maxRequests, then makes the next wait for a release', async () => {
    const window = new InFlightWindow({ maxRequests: 2, maxBytes: 1_000 });
    await window.acquire(10);
    await window.acquire(10);
    let admitted = false;
    const third = window.acquire(10).then(() => (admitted = true));
    await Promise.resolve();
    expect(admitted).toBe(false);
    expect(window.full()).toBe(true);
    window.release(10);
    await third;
    expect(admitted).toBe(true);
    expect(window.requests).toBe(2);
  });

  it('bounds bytes, but a batch larger than the window still goes alone', async () => {
    const window = new InFlightWindow({ maxRequests: 10, maxBytes: 100 });
    await window.acquire(500);
    let admitted = false;
    const next = window.acquire(1).then(() => (admitted = true));
    await Promise.resolve();
    expect(admitted).toBe(false);
    window.release(500);
    await next;
    expect(window.bytes).toBe(1);
  });

  it('serves waiters first come first served', async () => {
    const window = new InFlightWindow({ maxRequests: 1, maxBytes: 100 });
    await window.acquire(1);
    const order: string[] = [];
    const a = window.acquire(1).then(() => order.push('a'));
    const b = window.acquire(1).then(() => order.push('b'));
    window.release(1);
    await a;
    window.release(1);
    await b;
    expect(order).toEqual(['a', 'b']);
  });

  it('an abort takes a waiter out of the queue with the signal reason', async () => {
    const window = new InFlightWindow({ maxRequests: 1, maxBytes: 100 });
    await window.acquire(1);
    const controller = new AbortController();
    const waiting = window.acquire(1, controller.signal);
    controller.abort(new Error('stop'));
    await expect(waiting).rejects.toThrow('stop');
    window.release(1);
    expect(window.requests).toBe(0);
    await window.acquire(1);
    expect(window.requests).toBe(1);
  });
});
