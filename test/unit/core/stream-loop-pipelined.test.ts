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

const mapper = compileRowMapper(
  parseColumnSpecs([
    { name: '_id', type: 'STRING', mongo_field: '_id', primary_key: true },
    { name: 'v', type: 'INTEGER' },
  ]).columns,
);

const at = (i: number) => ({ t: 1_700_000_000, i });
const token = (i: number) => `tok${String(i).padStart(4, '0')}`;
const upsert = (i: number): ChangeEvent => ({
  kind: 'upsert',
  operationType: 'insert',
  token: token(i),
  clusterTime: at(i),
  documentId: i,
  document: { _id: i, v: i },
});
/** Pulls of one change each: with `maxRows: 1` every pull is one batch, batch k covering up to tok k. */
const onePerPull = (count: number, from = 1): ChangeBatch[] =>
  Array.from({ length: count }, (_, k) => ({ events: [upsert(from + k)], position: undefined }));

const start: StreamStart = { kind: 'startAt', clusterTime: at(0) };
/** Every change its own batch, and no linger: batches leave as they are read. */
const oneRow = { maxRows: 1, maxBytes: 1_000_000, maxRowBytes: 100_000, lingerMs: 60_000 };

/** Saves as they are made; `hold` keeps each save out until the test releases it. */
class Checkpoints implements CheckpointStore {
  readonly saved: (string | undefined)[] = [];
  savesOut = 0;
  maxSavesOut = 0;
  readonly #held: (() => void)[] = [];
  constructor(private readonly hold = false) {}
  load(): Promise<Checkpoint> {
    return Promise.resolve({ position: undefined });
  }
  save(checkpoint: Checkpoint): Promise<void> {
    this.savesOut++;
    this.maxSavesOut = Math.max(this.maxSavesOut, this.savesOut);
    const done = () => {
      this.saved.push(checkpoint.position?.token);
      this.savesOut--;
    };
    if (!this.hold) {
      done();
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      this.#held.push(() => {
        done();
        resolve();
      });
    });
  }
  /** Lets the oldest held save finish. */
  release(): void {
    this.#held.shift()?.();
  }
  get held(): number {
    return this.#held.length;
  }
}

/** Lets timers, I/O callbacks and every pending microtask run. */
const settle = async (rounds = 3): Promise<void> => {
  for (let i = 0; i < rounds; i++) await new Promise((resolve) => setImmediate(resolve));
};

function options(
  source: ScriptedChangeSource,
  sink: ManualSink,
  checkpoints: CheckpointStore,
  extra: Partial<StreamLoopOptions> = {},
): StreamLoopOptions {
  return { source, sink, checkpoints, mapper: () => mapper, limits: oneRow, ...extra };
}

/** The number k of `tok000k`. */
const index = (saved: string | undefined): number => Number(saved?.slice(3));

describe('stream loop, pipelined (issue 11)', () => {
  it('has several writes in flight at once, never more than maxRequests', async () => {
    const stop = new AbortController();
    const source = new ScriptedChangeSource(onePerPull(10));
    const sink = new ManualSink();
    const checkpoints = new Checkpoints();
    const run = runStreamLoop(
      options(source, sink, checkpoints, { window: { maxRequests: 3, maxBytes: 1_000_000_000 } }),
      start,
      stop.signal,
    );
    await Promise.race([sink.written(3), settle(20)]);
    expect(sink.maxInFlight).toBe(3);
    await settle();
    // The window is full: the fourth batch waits for room.
    expect(sink.writes).toHaveLength(3);
    sink.call(2).ack();
    await sink.written(4);
    await settle();
    expect(sink.writes).toHaveLength(4);
    sink.auto = (write) => {
      write.ack();
    };
    sink.ackAll();
    await sink.written(10);
    stop.abort();
    await run;
    expect(sink.maxInFlight).toBe(3);
    expect(checkpoints.saved.at(-1)).toBe(token(10));
  });

  it('pulls the change stream while a write is out (read-ahead), but not while a batch waits for room', async () => {
    const stop = new AbortController();
    const inFlightAtPull: number[] = [];
    const sink = new ManualSink();
    const source = new ScriptedChangeSource(onePerPull(6), undefined, () => {
      inFlightAtPull.push(sink.inFlight);
    });
    const run = runStreamLoop(
      options(source, sink, new Checkpoints(), { window: { maxRequests: 2, maxBytes: 1_000_000_000 } }),
      start,
      stop.signal,
    );
    await Promise.race([sink.written(2), settle(20)]);
    await settle(10);
    // Pull 2 came while write 1 was out; pull 3's batch waits for room, so there is no pull 4.
    expect(inFlightAtPull).toEqual([0, 1, 2]);
    expect(sink.writes).toHaveLength(2);
    sink.call(1).ack();
    await sink.written(3);
    await settle();
    expect(inFlightAtPull).toEqual([0, 1, 2, 2]);
    sink.auto = (write) => {
      write.ack();
    };
    sink.ackAll();
    stop.abort();
    await run;
  });

  it('issue 11 must-show 3: a later batch acknowledged before an earlier one fails never moves the checkpoint past the failed batch', async () => {
    const stop = new AbortController();
    const source = new ScriptedChangeSource(onePerPull(3));
    const sink = new ManualSink();
    const checkpoints = new Checkpoints();
    const run = runStreamLoop(options(source, sink, checkpoints), start, stop.signal);
    const outcome = run.then(
      () => 'resolved',
      (error: unknown) => error,
    );
    await Promise.race([sink.written(3), settle(20)]);
    expect(sink.writes).toHaveLength(3);
    sink.call(2).ack();
    sink.call(3).ack();
    await settle();
    // Batches 2 and 3 are in BigQuery, but batch 1 is still out: nothing may be saved.
    expect(checkpoints.saved).toEqual([]);
    const refused = new Error('batch 1 refused');
    sink.call(1).fail(refused);
    expect(await outcome).toBe(refused);
    expect(checkpoints.saved).toEqual([]);
    expect(source.closed).toBe(1);
  });

  it('after a failure, stops pulling, waits for what is out, saves the acknowledged prefix and throws the first error', async () => {
    const stop = new AbortController();
    const source = new ScriptedChangeSource(onePerPull(4));
    const sink = new ManualSink();
    const checkpoints = new Checkpoints();
    const run = runStreamLoop(options(source, sink, checkpoints), start, stop.signal);
    let ended = false;
    const outcome = run.then(
      () => 'resolved',
      (error: unknown) => error,
    );
    void outcome.then(() => (ended = true));
    await Promise.race([sink.written(4), settle(20)]);
    sink.call(1).ack();
    sink.call(3).ack();
    const first = new Error('batch 2 refused');
    sink.call(2).fail(first);
    await settle();
    const pullsAtFailure = source.pulls;
    // Batch 4 is still out: the loop waits for it before it ends.
    expect(ended).toBe(false);
    // A stop and a later failure do not hide the first error.
    stop.abort();
    sink.call(4).fail(new Error('batch 4 failed later'));
    expect(await outcome).toBe(first);
    expect(source.pulls).toBe(pullsAtFailure);
    expect(checkpoints.saved).toEqual([token(1)]);
  });

  it('saves one checkpoint at a time, then the newest position reached meanwhile (coalesced)', async () => {
    const stop = new AbortController();
    const source = new ScriptedChangeSource(onePerPull(5));
    const sink = new ManualSink();
    const checkpoints = new Checkpoints(true);
    const run = runStreamLoop(options(source, sink, checkpoints), start, stop.signal);
    await Promise.race([sink.written(5), settle(20)]);
    sink.call(1).ack();
    await settle();
    expect(checkpoints.held).toBe(1);
    for (const call of [2, 3, 4, 5]) sink.call(call).ack();
    await settle();
    // The first save is still out: no second one starts beside it.
    expect(checkpoints.held).toBe(1);
    checkpoints.release();
    await settle();
    checkpoints.release();
    await settle();
    expect(checkpoints.saved).toEqual([token(1), token(5)]);
    expect(checkpoints.maxSavesOut).toBe(1);
    stop.abort();
    await run;
    expect(checkpoints.saved).toEqual([token(1), token(5)]);
  });

  it('advances an idle checkpoint only once the batches before it are acknowledged', async () => {
    const stop = new AbortController();
    const idle: Position = { token: token(9), clusterTime: at(9) };
    const source = new ScriptedChangeSource([
      { events: [upsert(1)], position: undefined },
      { events: [], position: idle },
    ]);
    const sink = new ManualSink();
    const checkpoints = new Checkpoints();
    const run = runStreamLoop(options(source, sink, checkpoints), start, stop.signal);
    await Promise.race([sink.written(1), settle(20)]);
    await settle(5);
    expect(source.pulls).toBeGreaterThanOrEqual(2);
    expect(checkpoints.saved).toEqual([]);
    sink.call(1).ack();
    await settle();
    expect(checkpoints.saved.at(-1)).toBe(token(9));
    stop.abort();
    await run;
    expect(checkpoints.saved.at(-1)).toBe(token(9));
  });

  it('on a stop, sends what it read, waits for every write out and saves the last position', async () => {
    const stop = new AbortController();
    // Batches of two rows with a long linger: the fifth change is still in hand when the stop comes.
    const source = new ScriptedChangeSource(onePerPull(5));
    const sink = new ManualSink();
    const checkpoints = new Checkpoints();
    const run = runStreamLoop(
      options(source, sink, checkpoints, { limits: { ...oneRow, maxRows: 2 } }),
      start,
      stop.signal,
    );
    let ended = false;
    void run.then(() => (ended = true));
    await Promise.race([sink.written(2), settle(20)]);
    await settle(5);
    expect(sink.writes.map((w) => w.records.length)).toEqual([2, 2]);
    stop.abort();
    await sink.written(3);
    expect(sink.writes.map((w) => w.records.length)).toEqual([2, 2, 1]);
    await settle();
    expect(ended).toBe(false);
    sink.call(3).ack();
    sink.call(1).ack();
    await settle();
    expect(ended).toBe(false);
    sink.call(2).ack();
    await run;
    expect(checkpoints.saved.at(-1)).toBe(token(5));
    // The writes were not told to give up: the stop bounds them only through the final flush's deadline.
    expect(sink.writes.every((w) => w.signal?.aborted !== true)).toBe(true);
  });

  it('bounds the wait for the writes out at a stop by the final flush deadline, saving only what was acknowledged', async () => {
    const stop = new AbortController();
    const source = new ScriptedChangeSource(onePerPull(3));
    // Honours its signal as BigQuerySink does: the deadline ends a write that is out.
    const sink = new ManualSink((write) => {
      write.signal?.addEventListener('abort', () => {
        write.fail(write.signal?.reason);
      });
    });
    const checkpoints = new Checkpoints();
    const run = runStreamLoop(
      options(source, sink, checkpoints, { finalFlushTimeoutMs: 50 }),
      start,
      stop.signal,
    );
    await Promise.race([sink.written(3), settle(20)]);
    sink.call(1).ack();
    await settle();
    const started = Date.now();
    stop.abort();
    await expect(run).rejects.toThrow(/did not finish within 50 ms/);
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(checkpoints.saved).toEqual([token(1)]);
  });

  it('does not wait past the final flush deadline for a checkpoint save that ignores its signal', async () => {
    const stop = new AbortController();
    const source = new ScriptedChangeSource(onePerPull(1));
    const sink = new ManualSink();
    const checkpoints = new Checkpoints(true);
    const run = runStreamLoop(
      options(source, sink, checkpoints, { finalFlushTimeoutMs: 50 }),
      start,
      stop.signal,
    );
    await Promise.race([sink.written(1), settle(20)]);
    sink.call(1).ack();
    await settle();
    // The save of tok0001 is out and never ends.
    expect(checkpoints.held).toBe(1);
    const started = Date.now();
    stop.abort();
    await expect(run).rejects.toThrow(/did not finish within 50 ms/);
    expect(Date.now() - started).toBeLessThan(5_000);
  });

  it('a dropped collection: sends what is in hand, waits for every write out, saves, then ends with the position', async () => {
    const stop = new AbortController();
    const drop: ChangeEvent = {
      kind: 'collection-gone',
      operationType: 'drop',
      token: token(3),
      clusterTime: at(3),
    };
    const source = new ScriptedChangeSource([
      { events: [upsert(1)], position: undefined },
      { events: [upsert(2), drop], position: undefined },
    ]);
    const sink = new ManualSink();
    const checkpoints = new Checkpoints();
    const run = runStreamLoop(
      options(source, sink, checkpoints, { limits: { ...oneRow, maxRows: 2 } }),
      start,
      stop.signal,
    );
    let ended = false;
    void run.then(() => (ended = true));
    await Promise.race([sink.written(2), settle(20)]);
    await settle();
    expect(sink.writes.map((w) => w.records.map((r) => r.row().operationType))).toEqual([
      ['insert', 'insert'],
      ['drop'],
    ]);
    sink.call(2).ack();
    await settle();
    expect(ended).toBe(false);
    expect(checkpoints.saved).toEqual([]);
    sink.call(1).ack();
    expect(await run).toEqual({ kind: 'collection-gone', position: { token: token(3), clusterTime: at(3) } });
    expect(checkpoints.saved.at(-1)).toBe(token(3));
    expect(source.pulls).toBe(2);
  });

  it('a checkpoint save that fails ends the loop with its error once the writes out have settled', async () => {
    const stop = new AbortController();
    const source = new ScriptedChangeSource(onePerPull(3));
    const sink = new ManualSink();
    const down = new Error('checkpoint store down');
    const checkpoints = new Checkpoints();
    checkpoints.save = () => Promise.reject(down);
    const run = runStreamLoop(options(source, sink, checkpoints), start, stop.signal);
    const outcome = run.then(
      () => 'resolved',
      (error: unknown) => error,
    );
    await Promise.race([sink.written(3), settle(20)]);
    sink.call(1).ack();
    await settle();
    const pulls = source.pulls;
    sink.call(2).ack();
    sink.call(3).ack();
    expect(await outcome).toBe(down);
    expect(source.pulls).toBe(pulls);
  });

  it('lets a full window of writes listen to the signal it gives them without a leak warning', async () => {
    const warnings: string[] = [];
    const onWarning = (warning: Error) => warnings.push(warning.name);
    process.on('warning', onWarning);
    try {
      const stop = new AbortController();
      const source = new ScriptedChangeSource(onePerPull(16));
      // Each write listens as BigQuerySink and its writer do: a backoff, a request, a deadline.
      const sink = new ManualSink((write) => {
        for (let i = 0; i < 3; i++) write.signal?.addEventListener('abort', () => undefined);
      });
      const run = runStreamLoop(
        options(source, sink, new Checkpoints(), { window: { maxRequests: 16, maxBytes: 1_000_000_000 } }),
        start,
        stop.signal,
      );
      await Promise.race([sink.written(16), settle(40)]);
      await settle();
      expect(sink.inFlight).toBe(16);
      sink.auto = (write) => {
        write.ack();
      };
      sink.ackAll();
      stop.abort();
      await run;
      await settle();
      expect(warnings).not.toContain('MaxListenersExceededWarning');
    } finally {
      process.off('warning', onWarning);
    }
  });

  it('saves, in order, only ends of acknowledged prefixes, whatever the order of answers and failures (property)', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 10 }),
        fc.integer({ min: 1, max: 4 }),
        fc.array(fc.nat(), { minLength: 40, maxLength: 40 }),
        fc.array(fc.boolean(), { minLength: 10, maxLength: 10 }),
        async (count, maxRequests, choices, failing) => {
          const stop = new AbortController();
          const source = new ScriptedChangeSource(onePerPull(count), stop);
          const sink = new ManualSink();
          const checkpoints = new Checkpoints();
          const acked = new Set<number>();
          const failures: Error[] = [];
          const run = { ended: false };
          const outcome = runStreamLoop(
            options(source, sink, checkpoints, { window: { maxRequests, maxBytes: 1_000_000_000 } }),
            start,
            stop.signal,
          ).then(
            () => undefined,
            (error: unknown) => error,
          );
          void outcome.then(() => (run.ended = true));
          let step = 0;
          while (!run.ended) {
            await settle(2);
            const open = sink.writes.filter((w) => !w.settled);
            const write = open[(choices[step % choices.length] ?? 0) % Math.max(1, open.length)];
            step++;
            if (!write) continue;
            if (failing[write.call - 1] === true) {
              const error = new Error(`batch ${write.call} failed`);
              failures.push(error);
              write.fail(error);
            } else {
              acked.add(write.call);
              write.ack();
            }
          }
          const error = await outcome;
          let previous = 0;
          for (const saved of checkpoints.saved) {
            const k = index(saved);
            expect(k).toBeGreaterThan(previous);
            previous = k;
            for (let call = 1; call <= k; call++) expect(acked.has(call)).toBe(true);
          }
          if (failures.length > 0) expect(error).toBe(failures[0]);
          else {
            expect(error).toBeUndefined();
            expect(checkpoints.saved.at(-1)).toBe(token(count));
          }
          expect(sink.maxInFlight).toBeLessThanOrEqual(maxRequests);
        },
      ),
      { numRuns: 60 },
    );
  });
});

describe('stream loop, a change that cannot be mapped (issue 11 review)', () => {
  it('issue 11: with writes in flight, the loop drains them before it throws, and saves nothing afterwards', async () => {
    const source = new ScriptedChangeSource(onePerPull(5));
    const sink = new ManualSink();
    const checkpoints = new Checkpoints();
    const broken = new Error('the mapper cannot map change 4');
    const run = runStreamLoop(
      options(source, sink, checkpoints, {
        mapper: () => ({
          ...mapper,
          map: (document: Readonly<Record<string, unknown>>) => {
            if (document.v === 4) throw broken;
            return mapper.map(document);
          },
        }),
      }),
      start,
      new AbortController().signal,
    );
    let ended = false;
    const outcome = run.then(
      () => 'resolved',
      (error: unknown) => {
        ended = true;
        return error;
      },
    );
    await Promise.race([sink.written(3), settle(20)]);
    await settle();
    // Three writes are out; the fourth change failed to map. The loop must not end under them.
    expect(sink.inFlight).toBe(3);
    expect(ended).toBe(false);
    sink.ackAll();
    expect(await outcome).toBe(broken);
    const saves = [...checkpoints.saved];
    expect(saves.at(-1)).toBe(token(3));
    await settle(10);
    expect(checkpoints.saved).toEqual(saves);
  });
});
