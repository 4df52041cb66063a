import { describe, expect, it } from 'vitest';
import { estimateBackfill, formatDuration } from '../../../src/core/progress.js';

describe('backfill progress estimate (issue 11)', () => {
  it('issue 11: percent, rate and ETA from copied, estimated and elapsed', () => {
    expect(estimateBackfill({ copied: 25_000, estimated: 100_000, elapsedSeconds: 50 })).toEqual({
      percent: 25,
      rate: 500,
      etaSeconds: 150,
    });
  });

  it('issue 11: a resumed backfill counts only what this run copied in its own time', () => {
    // 60,000 were copied before a restart; this run copied 10,000 in 20 s.
    const estimate = estimateBackfill({
      copied: 70_000,
      estimated: 100_000,
      elapsedSeconds: 20,
      copiedAtStart: 60_000,
    });
    expect(estimate).toEqual({ percent: 70, rate: 500, etaSeconds: 60 });
  });

  it('issue 11: the ETA is rounded up to whole seconds', () => {
    expect(estimateBackfill({ copied: 3, estimated: 10, elapsedSeconds: 2 }).etaSeconds).toBe(5);
  });

  it('issue 11: nothing copied yet, or no time elapsed: no rate and no ETA, but a percent', () => {
    expect(estimateBackfill({ copied: 0, estimated: 1_000, elapsedSeconds: 30 })).toEqual({
      percent: 0,
      rate: undefined,
      etaSeconds: undefined,
    });
    expect(estimateBackfill({ copied: 10, estimated: 1_000, elapsedSeconds: 0 })).toEqual({
      percent: 1,
      rate: undefined,
      etaSeconds: undefined,
    });
  });

  it('issue 11: without an estimate (or an empty collection at the start) there is a rate but no percent or ETA', () => {
    for (const estimated of [undefined, 0])
      expect(estimateBackfill({ copied: 100, estimated, elapsedSeconds: 10 })).toEqual({
        percent: undefined,
        rate: 10,
        etaSeconds: undefined,
      });
  });

  it('issue 11: a copy past its estimate (documents inserted since the start) shows 100% and no ETA, never a negative one', () => {
    expect(estimateBackfill({ copied: 1_200, estimated: 1_000, elapsedSeconds: 10 })).toEqual({
      percent: 100,
      rate: 120,
      etaSeconds: undefined,
    });
  });
});

describe('durations for people', () => {
  it('issue 11: seconds, minutes, hours and days, two fields each', () => {
    expect(formatDuration(0)).toBe('0s');
    expect(formatDuration(44.2)).toBe('45s');
    expect(formatDuration(725)).toBe('12m05s');
    expect(formatDuration(3 * 3_600 + 7 * 60 + 59)).toBe('3h07m');
    expect(formatDuration(2 * 86_400 + 4 * 3_600)).toBe('2d04h');
  });
});
