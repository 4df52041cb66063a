// Finding 15 of the issue 14 review: `status --watch` computed the lag rate over one 2 s redraw, while the
// lag moves in steps (an oplog no-op every 10 s, a checkpoint about every 30 s): "history lost in ~X" flapped.
import { describe, expect, it } from 'vitest';
import { lagRate } from '../../../src/core/oplog-headroom.js';
import {
  keepLagSamples,
  lagBaseline,
  MIN_LAG_RATE_WINDOW_MS,
  type LagSample,
} from '../../../src/cli/status-view.js';

/** A mapping that stands still, read every 2 s: its lag, as the checkpoint shows it, jumps 10 s every 10 s. */
function lagAt(atMs: number): number {
  return 100 + Math.floor(atMs / 10_000) * 10;
}

describe('the lag rate of status --watch', () => {
  it('is measured over at least a minute once there is one, so steps of the lag do not make it flap', () => {
    let kept: LagSample[] = [];
    const rates: number[] = [];
    for (let atMs = 0; atMs <= 300_000; atMs += 2_000) {
      const now = { lagSeconds: lagAt(atMs), atMs };
      const base = lagBaseline(kept, atMs);
      const rate = lagRate(base, now);
      if (atMs >= MIN_LAG_RATE_WINDOW_MS && rate !== undefined) rates.push(rate);
      kept = keepLagSamples(kept, now);
    }
    expect(rates.length).toBeGreaterThan(100);
    for (const rate of rates) {
      expect(rate).toBeGreaterThanOrEqual(0.8);
      expect(rate).toBeLessThanOrEqual(1.2);
    }
    // Bounded: only what a minute's baseline needs is kept.
    expect(kept.length).toBeLessThanOrEqual(MIN_LAG_RATE_WINDOW_MS / 2_000 + 2);
  });

  it('is measured from the first sample until a minute has passed', () => {
    const kept = keepLagSamples(keepLagSamples([], { lagSeconds: 100, atMs: 0 }), {
      lagSeconds: 100,
      atMs: 2_000,
    });
    expect(lagBaseline(kept, 4_000)).toEqual({ lagSeconds: 100, atMs: 0 });
    expect(lagBaseline([], 4_000)).toBeUndefined();
  });
});
