import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { type ChangeEvent, type Position } from '../../../src/core/model.js';
import {
  type ChangeBatch,
  type Checkpoint,
  type CheckpointStore,
  type StreamStart,
} from '../../../src/core/ports.js';
import { runStreamLoop, type StreamLoopOptions } from '../../../src/core/stream-loop.js';
import { parseColumnSpecs } from '../../../src/schema/column-spec.js';
import { compileRowMapper } from '../../../src/transform/row-mapper.js';
import { ScriptedChangeSource } from '../../support/fakes/change-cursor.js';
import { ManualSink } from '../../support/fakes/sink.js';

// Issue 12: an idle stream saved its checkpoint after every pull whose post-batch token moved, which on a
// real replica set is every pull (about one a second per mapping), each save also writing the settings
// document. These tests pin the interval between idle saves, and that nothing else waits for it.

const mapper = compileRowMapper(
  parseColumnSpecs([
    { name: '_id', type: 'STRING', mongo_field: '_id', primary_key: true },
    { name: 'v', type: 'INTEGER' },
  ]).columns,
);

const at = (i: number) => ({ t: 1_700_000_000, i });
const token = (i: number) => `tok${String(i).padStart(4, '0')}`;
const position = (i: number): Position => ({ token: token(i), clusterTime: at(i) });
const upsert = (i: number): ChangeEvent => ({
  kind: 'upsert',
  operationType: 'insert',
  token: token(i),
  clusterTime: at(i),
  documentId: i,
  document: { _id: i, v: i },
});
/** A pull that returned nothing, with the post-batch position `i` (an idle stream on a replica set). */
const idlePull = (i: number): ChangeBatch => ({ events: [], position: position(i) });
const rowPull = (i: number): ChangeBatch => ({ events: [upsert(i)], position: undefined });

const start: StreamStart = { kind: 'startAt', clusterTime: at(0) };
/** Every change its own batch, and no linger: batches leave as they are read. */
const oneRow = { maxRows: 1, maxBytes: 1_000_000, maxRowBytes: 100_000, lingerMs: 60_000 };
const INTERVAL_MS = 30_000;
/** What the daemon's change source waits on an idle server before a pull returns empty. */
const PULL_MS = 1_000;

class FakeClock {
  nowMs = 0;
  now(): number {
    return this.nowMs;
  }
}

/** Every save with the fake clock's time, as it was asked for. */
class TimedCheckpoints implements CheckpointStore {
  readonly saved: { readonly token: string | undefined; readonly idle: boolean; readonly atMs: number }[] =
    [];
  constructor(private readonly clock: FakeClock) {}
  load(): Promise<Checkpoint> {
    return Promise.resolve({ position: undefined });
  }
  save(checkpoint: Checkpoint): Promise<void> {
    this.saved.push({
      token: checkpoint.position?.token,
      idle: checkpoint.idle === true,
      atMs: this.clock.now(),
    });
    return Promise.resolve();
  }
  get tokens(): (string | undefined)[] {
    return this.saved.map((s) => s.token);
  }
}

/** Lets timers, I/O callbacks and every pending microtask run. */
const settle = async (rounds = 5): Promise<void> => {
  for (let i = 0; i < rounds; i++) await new Promise((resolve) => setImmediate(resolve));
};

/**
 * A cursor serving `batches`, each pull taking `pullMs` of the fake clock; after them it idles (the clock
 * stands still) or, with `stop`, stops the loop.
 */
function timedSource(
  batches: ChangeBatch[],
  clock: FakeClock,
  stop?: AbortController,
  pullMs: (pull: number) => number = () => PULL_MS,
): ScriptedChangeSource {
  const served = batches.length;
  return new ScriptedChangeSource(batches, stop, (pull) => {
    if (pull <= served) clock.nowMs += pullMs(pull);
  });
}

function options(
  source: ScriptedChangeSource,
  sink: ManualSink,
  checkpoints: CheckpointStore,
  clock: FakeClock,
  extra: Partial<StreamLoopOptions> = {},
): StreamLoopOptions {
  return {
    source,
    sink,
    checkpoints,
    clock,
    mapper: () => mapper,
    limits: oneRow,
    idleCheckpointIntervalMs: INTERVAL_MS,
    ...extra,
  };
}

describe('stream loop, idle checkpoints (issue 12)', () => {
  it('saves the position of an idle stream at most once per interval over many empty pulls, and the newest at the stop', async () => {
    const clock = new FakeClock();
    const stop = new AbortController();
    // 100 empty pulls, one a second, each with a new post-batch token; the script's end stops the loop.
    const source = timedSource(
      Array.from({ length: 100 }, (_, k) => idlePull(k + 1)),
      clock,
      stop,
    );
    const checkpoints = new TimedCheckpoints(clock);
    await runStreamLoop(options(source, new ManualSink(), checkpoints, clock), start, stop.signal);
    // Before issue 12: 100 saves (one per pull). Now one per 30 s, then the newest one as the loop stops.
    expect(checkpoints.tokens).toEqual([token(30), token(60), token(90), token(100)]);
    expect(checkpoints.saved.map((s) => s.atMs)).toEqual([30_000, 60_000, 90_000, 100_000]);
    expect(checkpoints.saved.every((s) => s.idle)).toBe(true);
  });

  it('saves an idle position once the interval has passed even when the post-batch token stands still', async () => {
    const clock = new FakeClock();
    // The same post-batch token on every idle pull (a quiet replica set between its periodic no-op writes).
    const source = timedSource(
      Array.from({ length: 40 }, () => idlePull(1)),
      clock,
    );
    const checkpoints = new TimedCheckpoints(clock);
    const stop = new AbortController();
    const run = runStreamLoop(options(source, new ManualSink(), checkpoints, clock), start, stop.signal);
    while (source.remaining > 0) await settle(1);
    await settle();
    expect(checkpoints.saved).toEqual([{ token: token(1), idle: true, atMs: 30_000 }]);
    stop.abort();
    await run;
    // Nothing new to save at the stop.
    expect(checkpoints.tokens).toEqual([token(1)]);
  });

  it('saves a position that covers rows as soon as they are acknowledged, carrying the idle positions around them, and not as idle', async () => {
    const clock = new FakeClock();
    const source = timedSource([idlePull(1), idlePull(2), rowPull(3), idlePull(4)], clock);
    const sink = new ManualSink();
    const checkpoints = new TimedCheckpoints(clock);
    const stop = new AbortController();
    const run = runStreamLoop(options(source, sink, checkpoints, clock), start, stop.signal);
    while (source.remaining > 0) await settle(1);
    await settle();
    // The idle positions before the row wait for the interval, the one after it for the row.
    expect(checkpoints.saved).toEqual([]);
    sink.call(1).ack();
    await settle();
    // At once, 4 s into a 30 s interval: one save, up to the idle position read after the row.
    expect(checkpoints.saved).toEqual([{ token: token(4), idle: false, atMs: 4_000 }]);
    stop.abort();
    await run;
    // Nothing new to save at the stop.
    expect(checkpoints.tokens).toEqual([token(4)]);
  });

  it('saves rows at once right after an idle save, and the next idle position an interval after the rows', async () => {
    const clock = new FakeClock();
    // Idle for 30 s (saved at 30 s), a row at 31 s (saved at once), idle again until 70 s.
    const batches = [
      ...Array.from({ length: 30 }, (_, k) => idlePull(k + 1)),
      rowPull(31),
      ...Array.from({ length: 39 }, (_, k) => idlePull(k + 32)),
    ];
    const stop = new AbortController();
    const source = timedSource(batches, clock, stop);
    const sink = new ManualSink((w) => {
      w.ack();
    });
    const checkpoints = new TimedCheckpoints(clock);
    await runStreamLoop(options(source, sink, checkpoints, clock), start, stop.signal);
    expect(checkpoints.saved).toEqual([
      { token: token(30), idle: true, atMs: 30_000 },
      { token: token(31), idle: false, atMs: 31_000 },
      { token: token(61), idle: true, atMs: 61_000 },
      // The stop's.
      { token: token(70), idle: true, atMs: 70_000 },
    ]);
  });

  it('a stop saves the newest idle position at once, whatever the interval', async () => {
    const clock = new FakeClock();
    const source = timedSource([idlePull(1), idlePull(2), idlePull(3)], clock);
    const checkpoints = new TimedCheckpoints(clock);
    const stop = new AbortController();
    const run = runStreamLoop(options(source, new ManualSink(), checkpoints, clock), start, stop.signal);
    while (source.remaining > 0) await settle(1);
    await settle();
    expect(checkpoints.saved).toEqual([]);
    stop.abort();
    await run;
    expect(checkpoints.saved).toEqual([{ token: token(3), idle: true, atMs: 3_000 }]);
  });

  it('an idle position after rows waits for their acknowledgement, however long the interval has passed', async () => {
    const clock = new FakeClock();
    // One row, then a minute of idle pulls while its write is out.
    const source = timedSource([rowPull(1), ...Array.from({ length: 60 }, (_, k) => idlePull(k + 2))], clock);
    const sink = new ManualSink();
    const checkpoints = new TimedCheckpoints(clock);
    const stop = new AbortController();
    const run = runStreamLoop(options(source, sink, checkpoints, clock), start, stop.signal);
    while (source.remaining > 0) await settle(1);
    await settle();
    expect(clock.now()).toBeGreaterThan(INTERVAL_MS);
    // Nothing passes the write out: no idle save went before it.
    expect(checkpoints.saved).toEqual([]);
    sink.call(1).ack();
    await settle();
    // The acknowledgement saves the newest position at once, as a save covering rows.
    expect(checkpoints.saved).toEqual([{ token: token(61), idle: false, atMs: clock.now() }]);
    stop.abort();
    await run;
    expect(checkpoints.tokens).toEqual([token(61)]);
  });

  it('a stop with a write out saves, once it is acknowledged, the newest position whatever the interval', async () => {
    const clock = new FakeClock();
    const source = timedSource([idlePull(1), rowPull(2), idlePull(3)], clock);
    const sink = new ManualSink();
    const checkpoints = new TimedCheckpoints(clock);
    const stop = new AbortController();
    const run = runStreamLoop(options(source, sink, checkpoints, clock), start, stop.signal);
    while (source.remaining > 0) await settle(1);
    await settle();
    stop.abort();
    await settle();
    expect(checkpoints.saved).toEqual([]);
    sink.call(1).ack();
    await run;
    expect(checkpoints.tokens.at(-1)).toBe(token(3));
  });

  it('idle saves are never closer than the interval, rows never wait for it, and the stop saves the newest position (property)', async () => {
    await fc.assert(
      fc.asyncProperty(
        // Each pull: rows or idle, and how long it took (an idle server answers within a second or so).
        fc.array(fc.record({ rows: fc.boolean(), ms: fc.integer({ min: 0, max: 5_000 }) }), {
          minLength: 1,
          maxLength: 60,
        }),
        async (script) => {
          const clock = new FakeClock();
          const stop = new AbortController();
          const batches = script.map((p, k) => (p.rows ? rowPull(k + 1) : idlePull(k + 1)));
          const source = timedSource(batches, clock, stop, (pull) => script[pull - 1]?.ms ?? 0);
          const sink = new ManualSink((w) => {
            w.ack();
          });
          const checkpoints = new TimedCheckpoints(clock);
          await runStreamLoop(options(source, sink, checkpoints, clock), start, stop.signal);
          const saved = checkpoints.saved;
          // The stop saved the newest position.
          expect(saved.at(-1)?.token).toBe(token(script.length));
          // A save is idle when no rows were read since the save before it; it says so, and every one but
          // the last (the stop's) came an interval or more after the save before it.
          let last = { index: 0, atMs: 0 };
          for (const [i, save] of saved.entries()) {
            const index = Number(save.token?.slice(3));
            const idle = !script.slice(last.index, index).some((p) => p.rows);
            expect(save.idle).toBe(idle);
            if (idle && i < saved.length - 1)
              expect(save.atMs - last.atMs).toBeGreaterThanOrEqual(INTERVAL_MS);
            last = { index, atMs: save.atMs };
          }
          // Saves only move forward.
          const order = saved.map((s) => Number(s.token?.slice(3)));
          expect(order).toEqual([...order].sort((a, b) => a - b));
          // Each pull's rows are saved, as rows, before the next pull: the interval never holds them.
          let pulledAt = 0;
          for (const [k, pull] of script.entries()) {
            pulledAt += pull.ms;
            if (!pull.rows) continue;
            const covering = saved.find((s) => Number(s.token?.slice(3)) >= k + 1);
            expect(covering).toMatchObject({ idle: false, atMs: pulledAt });
          }
        },
      ),
      { numRuns: 100 },
    );
  });
});
