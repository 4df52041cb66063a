// Issue 12 build item 3: the FIFO semaphore that bounds the mappings preparing tables or backfilling at once.
import { describe, expect, it } from 'vitest';
import { Slots, type Slot } from '../../../src/core/slots.js';

const tick = () => new Promise((resolve) => setImmediate(resolve));

/** The order in which callers got their slot. */
function track(slots: Slots, name: string, order: string[], signal = new AbortController().signal) {
  return slots.acquire(signal).then((slot) => {
    order.push(name);
    return slot;
  });
}

describe('Slots', () => {
  it('hands out at most `capacity` slots; the others wait', async () => {
    const slots = new Slots(2);
    const order: string[] = [];
    const a = track(slots, 'a', order);
    const b = track(slots, 'b', order);
    void track(slots, 'c', order);
    await tick();
    expect(order).toEqual(['a', 'b']);
    expect(slots.held).toBe(2);
    expect(slots.waiting).toBe(1);
    (await a).release();
    await tick();
    expect(order).toEqual(['a', 'b', 'c']);
    expect(slots.held).toBe(2);
    (await b).release();
    expect(slots.held).toBe(1);
  });

  it('serves the waiting callers in the order they came, and a later tryAcquire does not overtake them', async () => {
    const slots = new Slots(1);
    const order: string[] = [];
    const first = await slots.acquire(new AbortController().signal);
    const waiting = ['w1', 'w2', 'w3'].map((name) => track(slots, name, order));
    await tick();
    expect(slots.tryAcquire()).toBeUndefined();
    first.release();
    for (const slot of waiting) {
      (await slot).release();
    }
    expect(order).toEqual(['w1', 'w2', 'w3']);
    expect(slots.held).toBe(0);
    expect(slots.tryAcquire()).toBeDefined();
  });

  it('a caller aborted while waiting leaves the line: its place goes to the next, and no slot is lost', async () => {
    const slots = new Slots(1);
    const order: string[] = [];
    const first = await slots.acquire(new AbortController().signal);
    const controller = new AbortController();
    const aborted = track(slots, 'aborted', order, controller.signal);
    const next = track(slots, 'next', order);
    await tick();
    expect(slots.waiting).toBe(2);
    controller.abort(new Error('stopped'));
    await expect(aborted).rejects.toThrow('stopped');
    expect(slots.waiting).toBe(1);
    first.release();
    (await next).release();
    expect(order).toEqual(['next']);
    expect(slots.held).toBe(0);
    expect(slots.waiting).toBe(0);
  });

  it('refuses at once a signal already aborted', async () => {
    const slots = new Slots(1);
    await expect(slots.acquire(AbortSignal.abort(new Error('gone')))).rejects.toThrow('gone');
    expect(slots.held).toBe(0);
  });

  it('a slot released twice frees one place, not two', async () => {
    const slots = new Slots(1);
    const order: string[] = [];
    const held: Slot = await slots.acquire(new AbortController().signal);
    void track(slots, 'b', order);
    void track(slots, 'c', order);
    await tick();
    held.release();
    held.release();
    await tick();
    expect(order).toEqual(['b']);
    expect(slots.held).toBe(1);
    expect(slots.waiting).toBe(1);
  });

  it('tells its observer how many slots are held and how many callers wait', async () => {
    const states: string[] = [];
    const slots = new Slots(1, ({ held, waiting }) => states.push(`${held}/${waiting}`));
    const first = await slots.acquire(new AbortController().signal);
    const second = slots.acquire(new AbortController().signal);
    first.release();
    (await second).release();
    expect(states).toEqual(['1/0', '1/1', '1/0', '0/0']);
  });

  it('refuses a capacity below 1', () => {
    expect(() => new Slots(0)).toThrow(RangeError);
  });
});
