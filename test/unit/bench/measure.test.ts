import { describe, expect, it } from 'vitest';
import { RssSampler, rssBound } from '../../../bench/measure.js';

describe('bench measure', () => {
  it('issue 11 must-show 2: the RSS bound follows from the window: baseline, young generation, and wire bytes held times the factor', () => {
    const inputs = {
      baselineBytes: 100,
      youngGenerationBytes: 50,
      window: { maxRequests: 4, maxBytes: 1_000 },
      batchBytes: 10,
      readAheadBytes: 30,
      perWireByte: 2,
    };
    // The window's requests bound it first: 4 × 10 bytes in flight, 30 read ahead.
    expect(rssBound(inputs)).toBe(100 + 50 + (40 + 30) * 2);
    // Then its bytes.
    expect(rssBound({ ...inputs, window: { maxRequests: 400, maxBytes: 1_000 } })).toBe(
      100 + 50 + (1_000 + 30) * 2,
    );
  });

  it('issue 11 must-show 2: the sampler keeps the peak, the last sample included', () => {
    const readings = [10, 40, 20, 30];
    let next = 0;
    const sampler = new RssSampler(60_000, () => readings[next++] ?? 0);
    sampler.sample();
    sampler.sample();
    expect(sampler.stop()).toBe(40);
    const last = new RssSampler(60_000, () => (next++ === 4 ? 1 : 99));
    expect(last.stop()).toBe(99);
  });
});
