import { describe, expect, it } from 'vitest';
import { bracketedRatio, RssSampler, rssBound } from '../../../bench/measure.js';

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

describe('bracketedRatio', () => {
  it('sets each value against the mean of the floor rounds either side of it and takes the median', () => {
    // Ratios 100/100 = 1, 150/150 = 1, 60/125 = 0.48: the median is 1, where the ratio of the medians
    // (median values 100, median floors 100) would pair rounds of different speeds.
    expect(bracketedRatio([100, 100, 200, 50], [100, 150, 60])).toBe(1);
    expect(bracketedRatio([10, 30], [10])).toBe(0.5);
  });

  it('refuses rounds that do not alternate floor, value, …, floor', () => {
    expect(() => bracketedRatio([1, 2], [1, 2])).toThrow(/3 floor rounds/);
    expect(() => bracketedRatio([1], [])).toThrow(/floor rounds/);
  });
});
