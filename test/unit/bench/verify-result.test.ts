import { describe, expect, it } from 'vitest';
import { verifyBenchLine } from '../../../bench/verify-result.js';

describe('the verify benchmark line', () => {
  it('is one JSON document with both rates, their ratio and whether it meets 0.5', () => {
    const result = { source: 'in-process', shape: 'nested-1KB', documents: 10, floorPerSecond: 1_000 };
    expect(JSON.parse(verifyBenchLine({ ...result, valuePerSecond: 600.4 }))).toEqual({
      bench: 'verify',
      side: 'mongodb',
      source: 'in-process',
      shape: 'nested-1KB',
      documents: 10,
      floor_per_s: 1_000,
      value_per_s: 600,
      ratio: 0.6,
      ok: true,
    });
    expect(JSON.parse(verifyBenchLine({ ...result, valuePerSecond: 400 }))).toMatchObject({
      ratio: 0.4,
      ok: false,
    });
  });

  it('reports the ratio measured pass by pass when given, and judges by it', () => {
    const result = { source: 'in-process', shape: 'nested-1KB', documents: 10, floorPerSecond: 1_000 };
    expect(JSON.parse(verifyBenchLine({ ...result, valuePerSecond: 600, ratio: 0.45 }))).toMatchObject({
      value_per_s: 600,
      ratio: 0.45,
      ok: false,
    });
  });
});
