import { describe, expect, it } from 'vitest';
import { AT_RISK, OplogGuard } from '../../../src/app/oplog-guard.js';
import { type OplogWindowReading } from '../../../src/core/oplog-headroom.js';
import { createLogger } from '../../../src/observability/logger.js';
import { Metrics } from '../../../src/observability/metrics.js';
import { parsePrometheusText } from '../../support/prometheus-text.js';

/** A day's window ending at T0, as the recorded replica set's (test/fixtures/oplog). */
const T0 = 1_705_180_000;
const DAY = 86_400;
const never = new AbortController().signal;

/**
 * A guard over a window and resume points the test moves by hand, with the real Metrics and a logger
 * whose lines are kept. The clock follows the oplog's newest entry, as on a busy replica set.
 */
function guarded(initial: { window: OplogWindowReading; points: Record<string, number> }) {
  const world = { reading: initial.window, points: new Map(Object.entries(initial.points)), fail: false };
  const lines: Record<string, unknown>[] = [];
  const metrics = new Metrics({ processMetrics: false });
  const clock = { nowMs: T0 * 1_000 };
  const guard = new OplogGuard({
    readWindow: () =>
      world.fail ? Promise.reject(new Error('connection closed')) : Promise.resolve(world.reading),
    mappings: () => [...world.points.keys()],
    resumePoints: (ids) => Promise.resolve(new Map([...world.points].filter(([id]) => ids.includes(id)))),
    warnRatio: 0.25,
    intervalMs: 60_000,
    metrics,
    logger: createLogger({
      level: 'info',
      destination: { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) },
    }),
    now: () => clock.nowMs,
  });
  /** Moves the clock and the oplog's newest entry on by `seconds` (the window keeps its length). */
  const advance = (seconds: number): void => {
    clock.nowMs += seconds * 1_000;
    if (world.reading.kind === 'window') {
      const { window } = world.reading;
      world.reading = {
        kind: 'window',
        window: {
          ...window,
          firstSeconds: window.firstSeconds + seconds,
          lastSeconds: window.lastSeconds + seconds,
        },
      };
    }
  };
  const samples = async (name: string) =>
    parsePrometheusText(await metrics.render()).filter((sample) => sample.name === name);
  return { guard, world, lines, metrics, advance, samples };
}

const dayWindow: OplogWindowReading = {
  kind: 'window',
  window: { source: 'rs0', firstSeconds: T0 - DAY, lastSeconds: T0 },
};

describe('issue 14 must-show 2: the oplog headroom guard on a faked window', () => {
  it('exports the window per source and each mapping’s headroom (window minus lag)', async () => {
    // orders is 1 h behind, legacy's backfill started 20 h ago and saved no position yet.
    const { guard, samples } = guarded({
      window: dayWindow,
      points: { orders: T0 - 3_600, legacy: T0 - 20 * 3_600 },
    });
    await guard.poll(never);
    expect(await samples('mba_oplog_window_seconds')).toEqual([
      { name: 'mba_oplog_window_seconds', labels: { source: 'rs0' }, value: DAY },
    ]);
    const headroom = await samples('mba_oplog_headroom_seconds');
    expect(headroom).toContainEqual({
      name: 'mba_oplog_headroom_seconds',
      labels: { mapping: 'orders' },
      value: DAY - 3_600,
    });
    expect(headroom).toContainEqual({
      name: 'mba_oplog_headroom_seconds',
      labels: { mapping: 'legacy' },
      value: 4 * 3_600,
    });
  });

  it('warns once when a mapping crosses below 25% of the window, not at every poll, and says when it recovers', async () => {
    // 17 h behind: 7 h of headroom, above 6 h (25% of a day).
    const { guard, world, lines, advance } = guarded({
      window: dayWindow,
      points: { orders: T0 - 17 * 3_600 },
    });
    await guard.poll(never);
    expect(lines.filter((line) => line.level === 'warn')).toEqual([]);
    // Stuck for 90 minutes, one poll a minute: it crosses once, after an hour.
    for (let minute = 0; minute < 90; minute++) {
      advance(60);
      await guard.poll(never);
    }
    const warnings = lines.filter((line) => line.level === 'warn');
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatchObject({ mapping: 'orders', windowSeconds: DAY });
    // It stood still: its lag grows a second per second, so the history goes when the headroom runs out.
    expect(String(warnings[0]?.msg)).toMatch(
      /below 25% of the 1d00h window: history lost in ~5h5\dm at the current rate/,
    );
    expect(warnings[0]?.lostInSeconds).toBe(warnings[0]?.headroomSeconds);
    // It catches up: one info line, and no new warning.
    world.points.set('orders', T0 + 90 * 60 - 60);
    advance(60);
    await guard.poll(never);
    expect(lines.filter((line) => line.level === 'warn')).toHaveLength(1);
    expect(lines.filter((line) => line.msg === 'oplog headroom back above the threshold')).toHaveLength(1);
  });

  it('turns the mapping’s /readyz detail to at-risk and leaves readiness and the other mappings alone', async () => {
    const { guard } = guarded({ window: dayWindow, points: { orders: T0 - 20 * 3_600, users: T0 - 60 } });
    const before = { ready: true, detail: { orders: 'streaming', users: 'streaming', legacy: 'invalid' } };
    expect(guard.annotate(before)).toBe(before);
    await guard.poll(never);
    expect(guard.annotate(before)).toEqual({
      ready: true,
      detail: { orders: AT_RISK, users: 'streaming', legacy: 'invalid' },
    });
    // The supervisor's own answer is not touched.
    expect(before.detail.orders).toBe('streaming');
  });

  it('says the headroom only when the lag is not growing (first poll, or catching up)', async () => {
    const { guard, lines } = guarded({ window: dayWindow, points: { orders: T0 - 20 * 3_600 } });
    await guard.poll(never);
    const [warning] = lines.filter((line) => line.level === 'warn');
    expect(String(warning?.msg)).toMatch(/holds its resume point for another 4h00m if it stops now/);
    expect(warning?.lostInSeconds).toBeUndefined();
  });

  it('says once that the guard is off on a server without the information, exports no window, and keeps nothing at risk', async () => {
    const { guard, world, lines, samples } = guarded({
      window: dayWindow,
      points: { orders: T0 - 20 * 3_600 },
    });
    await guard.poll(never);
    world.reading = {
      kind: 'unavailable',
      reason: 'no-oplog',
      message: 'the server is not a replica set member (hello reports no setName): it has no oplog to watch',
    };
    await guard.poll(never);
    await guard.poll(never);
    const off = lines.filter((line) => String(line.msg).startsWith('oplog headroom guard off'));
    expect(off).toHaveLength(1);
    expect(off[0]).toMatchObject({ level: 'info', reason: 'no-oplog' });
    expect(await samples('mba_oplog_window_seconds')).toEqual([]);
    expect(await samples('mba_oplog_headroom_seconds')).toEqual([]);
    const readiness = { ready: true, detail: { orders: 'streaming' } };
    expect(guard.annotate(readiness)).toBe(readiness);
  });

  it('warns (rather than informs) when the guard is off for want of a privilege, which the operator can grant', async () => {
    const { guard, lines } = guarded({
      window: { kind: 'unavailable', reason: 'unauthorized', message: 'grant it the read role on local' },
      points: {},
    });
    await guard.poll(never);
    await guard.poll(never);
    expect(lines.filter((line) => String(line.msg).startsWith('oplog headroom guard off'))).toEqual([
      expect.objectContaining({ level: 'warn', reason: 'unauthorized' }),
    ]);
  });

  it('logs a failed read once per run of failures and keeps the last values', async () => {
    const { guard, world, lines, samples } = guarded({ window: dayWindow, points: { orders: T0 - 3_600 } });
    await guard.poll(never);
    world.fail = true;
    await guard.poll(never);
    await guard.poll(never);
    expect(lines.filter((line) => line.level === 'warn')).toHaveLength(1);
    expect(await samples('mba_oplog_window_seconds')).toHaveLength(1);
  });

  it('on an oplog still filling: the window, but no headroom and no warning (nothing is dropped yet)', async () => {
    const young: OplogWindowReading = {
      kind: 'window',
      window: { ...dayWindow.window, size: { bytes: 100_000_000, maxBytes: 1_000_000_000 } },
    };
    const { guard, lines, samples } = guarded({ window: young, points: { orders: T0 - 20 * 3_600 } });
    await guard.poll(never);
    expect(await samples('mba_oplog_window_seconds')).toHaveLength(1);
    expect(await samples('mba_oplog_headroom_seconds')).toEqual([]);
    expect(lines.filter((line) => line.level === 'warn')).toEqual([]);
    const readiness = { ready: true, detail: { orders: 'streaming' } };
    expect(guard.annotate(readiness)).toBe(readiness);
  });

  it('drops the headroom of a mapping this instance no longer runs', async () => {
    const { guard, world, samples } = guarded({
      window: dayWindow,
      points: { orders: T0 - 3_600, users: T0 },
    });
    await guard.poll(never);
    world.points.delete('users');
    await guard.poll(never);
    expect((await samples('mba_oplog_headroom_seconds')).map((s) => s.labels.mapping)).toEqual(['orders']);
  });
});
