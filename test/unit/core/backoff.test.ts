import { describe, expect, it } from 'vitest';
import { backoffDelay, retry } from '../../../src/core/backoff.js';

const policy = { initialMs: 100, maxMs: 1_000, multiplier: 2, maxAttempts: 4 };

describe('backoff', () => {
  it('grows exponentially up to the cap, with full jitter', () => {
    expect([0, 1, 2, 3, 4, 10].map((a) => backoffDelay(a, policy, () => 0.999_999))).toEqual([
      99, 199, 399, 799, 999, 999,
    ]);
    expect(backoffDelay(3, policy, () => 0)).toBe(0);
  });

  it('retries retryable errors with the same request, up to the attempt limit', async () => {
    const waits: number[] = [];
    let calls = 0;
    const result = retry(
      () => {
        calls++;
        return Promise.reject(new Error(`try ${calls}`));
      },
      () => true,
      { policy, sleep: (ms) => (waits.push(ms), Promise.resolve()), random: () => 0.5 },
    );
    await expect(result).rejects.toThrow('try 4');
    expect(calls).toBe(4);
    expect(waits).toEqual([50, 100, 200]);
  });

  it('gives up at once on an error that is not retryable', async () => {
    let calls = 0;
    await expect(
      retry(
        () => {
          calls++;
          return Promise.reject(new Error('fatal'));
        },
        () => false,
        { policy, sleep: () => Promise.resolve() },
      ),
    ).rejects.toThrow('fatal');
    expect(calls).toBe(1);
  });

  it('returns the first success', async () => {
    let calls = 0;
    const value = await retry(
      () => (++calls < 3 ? Promise.reject(new Error('x')) : Promise.resolve('ok')),
      () => true,
      { policy, sleep: () => Promise.resolve() },
    );
    expect([value, calls]).toEqual(['ok', 3]);
  });
});
