import { describe, expect, it } from 'vitest';
import { CoalescedTask } from '../../../src/core/coalesced.js';

describe('CoalescedTask', () => {
  it('runs one at a time and serves the requests made during a run with one more run', async () => {
    const releases: (() => void)[] = [];
    let runs = 0;
    let out = 0;
    let most = 0;
    const task = new CoalescedTask(
      () => {
        runs++;
        out++;
        most = Math.max(most, out);
        return new Promise<void>((resolve) =>
          releases.push(() => {
            out--;
            resolve();
          }),
        );
      },
      () => undefined,
    );
    task.request();
    task.request();
    task.request();
    expect(runs).toBe(1);
    releases.shift()?.();
    await new Promise((resolve) => setImmediate(resolve));
    expect(runs).toBe(2);
    releases.shift()?.();
    await task.settled();
    expect(runs).toBe(2);
    expect(most).toBe(1);
  });

  it('serves a request made as the last run ends', async () => {
    let runs = 0;
    const task = new CoalescedTask(
      async () => {
        runs++;
        await Promise.resolve();
      },
      () => undefined,
    );
    task.request();
    // Queued behind the run's end: the run is then over or about to be, and the request must not be lost.
    void Promise.resolve()
      .then(() => Promise.resolve())
      .then(() => {
        task.request();
      });
    await new Promise((resolve) => setImmediate(resolve));
    await task.settled();
    expect(runs).toBe(2);
  });

  it('reports a failure once and runs no more after it', async () => {
    const errors: unknown[] = [];
    let runs = 0;
    const task = new CoalescedTask(
      () => {
        runs++;
        return Promise.reject(new Error('store down'));
      },
      (error) => errors.push(error),
    );
    task.request();
    await task.settled();
    task.request();
    await task.settled();
    expect(runs).toBe(1);
    expect(errors).toHaveLength(1);
  });
});
