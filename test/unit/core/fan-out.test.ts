import fc from 'fast-check';
import { describe, expect, it, vi } from 'vitest';
import { FanOut, type FanOutBounds } from '../../../src/core/fan-out.js';
import { sharedPosition, type Position } from '../../../src/core/model.js';
import { type ChangeCursor, type ChangeSource } from '../../../src/core/ports.js';
import { prepareInThread, resumeFrom, runPreparedStreamLoop } from '../../../src/core/stream-loop.js';
import { parseColumnSpecs } from '../../../src/schema/column-spec.js';
import { compileRowMapper } from '../../../src/transform/row-mapper.js';
import { MemoryCheckpointStore } from '../../support/fakes/checkpoint-store.js';
import { ManualSink } from '../../support/fakes/sink.js';
import {
  DatabaseLog,
  LOG_PULL_SHAPE,
  positionAt,
  seqOf,
  type LogPull,
} from '../../support/fakes/database-log.js';

/** A pull that does not settle within this long is a hang (the fakes answer at once). */
const HANG_MS = 2_000;

function settle<T>(promise: Promise<T>, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const hang = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      reject(new Error(`${what} did not settle within ${String(HANG_MS)} ms`));
    }, HANG_MS);
  });
  return Promise.race([promise, hang]).finally(() => {
    clearTimeout(timer);
  });
}

/** The setImmediate turn: what can settle now has. */
function turn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/**
 * One mapping as its stream loop reads the source: opens at its saved position, pulls, and saves the
 * position of every pull at once (as if BigQuery acknowledged each pull before the next). Records every run
 * (open to close): where it started, the changes it got and the positions it went through.
 */
class Mapping {
  /**
   * `shared`: the run started at a shared position (see Position), resumed at its cluster time: the change
   * at that very time comes again when it is of this collection.
   */
  readonly runs: { start: number; shared: boolean; received: number[]; positions: number[] }[] = [];
  saved: Position;
  #cursor: ChangeCursor<LogPull> | undefined;
  #stop = new AbortController();

  constructor(
    readonly collection: string,
    readonly source: ChangeSource<LogPull>,
    start: Position,
  ) {
    this.saved = start;
  }

  get running(): boolean {
    return this.#cursor !== undefined;
  }

  get run(): { start: number; shared: boolean; received: number[]; positions: number[] } {
    const run = this.runs.at(-1);
    if (run === undefined) throw new Error('never started');
    return run;
  }

  /** Changes received in the last run. */
  get received(): number[] {
    return this.run.received;
  }

  async start(at: Position = this.saved): Promise<void> {
    this.saved = at;
    this.#stop = new AbortController();
    this.runs.push({ start: seqOf(at), shared: at.shared === true, received: [], positions: [] });
    this.#cursor = await this.source.open(resumeFrom(at), this.#stop.signal);
  }

  async pull(maxEvents = 100, signal: AbortSignal = this.#stop.signal): Promise<LogPull> {
    if (this.#cursor === undefined) throw new Error('not started');
    const pull = await settle(this.#cursor.next(maxEvents, signal), `a pull of ${this.collection}`);
    this.#record(this.run, pull);
    return pull;
  }

  /** A pull left running (as the loop's read-ahead does) while other things happen. */
  outstanding: Promise<void> | undefined;
  /** The failure of the last outstanding pull (the loop would end and restart). */
  failure: unknown;

  begin(maxEvents: number): void {
    const cursor = this.#cursor;
    if (cursor === undefined || this.outstanding !== undefined || this.failure !== undefined) return;
    const run = this.run;
    const signal = this.#stop.signal;
    this.outstanding = cursor
      .next(maxEvents, signal)
      .then(
        (pull) => {
          this.#record(run, pull);
        },
        (error: unknown) => {
          if (!signal.aborted) this.failure = error;
        },
      )
      .finally(() => {
        this.outstanding = undefined;
      });
  }

  #record(run: { received: number[]; positions: number[] }, pull: LogPull): void {
    for (const change of pull.changes) {
      // Another collection's change would show as a wrong sequence; recorded as it came.
      run.received.push(change.collection === this.collection ? change.seq : -change.seq);
    }
    if (pull.position !== undefined) {
      run.positions.push(seqOf(pull.position));
      this.saved = pull.position;
    }
  }

  async stop(): Promise<void> {
    this.#stop.abort();
    if (this.outstanding !== undefined)
      await settle(this.outstanding, `the aborted pull of ${this.collection}`);
    this.failure = undefined;
    const cursor = this.#cursor;
    this.#cursor = undefined;
    await cursor?.close();
  }
}

/**
 * A position a mapping of `collection` may have saved at change `seq`: the change's token when it is the
 * collection's own, else marked as another stream's (a share of a shared pull), resumed at its cluster time.
 */
function savedAt(log: DatabaseLog, seq: number, collection: string): Position {
  const at = positionAt(Math.max(0, seq));
  return seq <= 0 || log.changes[seq - 1]?.collection === collection ? at : sharedPosition(at);
}

function fanOut(log: DatabaseLog, bounds: FanOutBounds = {}) {
  const shared = log.shared();
  const fan = new FanOut<LogPull>({ shared, shape: LOG_PULL_SHAPE, ...bounds });
  const mapping = (collection: string, start: Position = positionAt(0)) => {
    const own = log.own(collection);
    return { mapping: new Mapping(collection, fan.source(collection, own), start), own };
  };
  return { fan, shared, mapping };
}

describe('FanOut', () => {
  it('issue 12 review: a mapping that joins takes its shares at once, while its own cursor is still closing', async () => {
    const log = new DatabaseLog();
    log.append('b', 2);
    const shared = log.shared();
    const fan = new FanOut<LogPull>({ shared, shape: LOG_PULL_SHAPE, queuePulls: 1, slowAfterMs: 50 });
    // a's own stream answers a killCursors late (a slow server).
    let release: () => void = () => undefined;
    const released = new Promise<void>((resolve) => {
      release = resolve;
    });
    const ownA = log.own('a');
    const slowClose: ChangeSource<LogPull> = {
      open: async (start, signal) => {
        const cursor = await ownA.open(start, signal);
        return { next: (max, s) => cursor.next(max, s), close: () => released.then(() => cursor.close()) };
      },
      currentTime: (signal) => ownA.currentTime(signal),
    };
    const b = new Mapping('b', fan.source('b', log.own('b')), positionAt(0));
    await b.start();
    await b.pull();
    log.append('b', 2);
    await b.pull();
    // a starts behind the shared stream (before b's changes were kept), reads its own stream once, and joins.
    const a = new Mapping('a', fan.source('a', slowClose), sharedPosition(positionAt(1)));
    await a.start();
    await a.pull();
    log.append('a');
    // Its first share comes although its own cursor has not closed yet.
    const share = await a.pull();
    expect(share.changes.map((change) => change.seq)).toEqual([5]);
    release();
    await a.stop();
    await b.stop();
    expect(log.openCursors).toBe(0);
  });

  it("issue 12 must-show 3: an idle mapping's position advances with the pulls of the others", async () => {
    const log = new DatabaseLog();
    log.append('a', 3);
    const { shared, mapping } = fanOut(log);
    const a = mapping('a');
    const b = mapping('b');
    await a.mapping.start();
    await b.mapping.start();
    expect((await a.mapping.pull()).changes.map((c) => c.seq)).toEqual([1, 2, 3]);
    // Its share of a pull of a's changes: at the pull's position, marked as another stream's (resumed at its
    // cluster time: b's own stream holds no change 3).
    expect(await b.mapping.pull()).toEqual({ changes: [], position: sharedPosition(positionAt(3)) });
    log.append('a', 2);
    await a.mapping.pull();
    expect(await b.mapping.pull()).toEqual({ changes: [], position: sharedPosition(positionAt(5)) });
    expect(a.mapping.received).toEqual([1, 2, 3, 4, 5]);
    // One stream for both, opened where the first mapping stood; no own stream was needed.
    expect(shared.openings).toEqual([
      { start: { kind: 'resumeAfter', position: positionAt(0) }, collections: ['a', 'b'] },
    ]);
    expect(a.own.openings).toEqual([]);
    expect(b.own.openings).toEqual([]);
    await a.mapping.stop();
    await b.mapping.stop();
    expect(log.openCursors).toBe(0);
  });

  it('issue 12 must-show 3: restarted at their saved positions (the slowest one older), the mappings lose nothing', async () => {
    for (const first of ['fast', 'slow'] as const) {
      const log = new DatabaseLog();
      const before = fanOut(log);
      const fast = before.mapping('a');
      const slow = before.mapping('b');
      await fast.mapping.start();
      await slow.mapping.start();
      log.append('b', 2);
      log.append('a', 2);
      await slow.mapping.pull();
      log.append('b', 2);
      log.append('a', 2);
      for (let i = 0; i < 3; i++) await fast.mapping.pull();
      // The slow one saved an older position than the fast one (the database's stream is saved at it).
      expect(seqOf(slow.mapping.saved)).toBeLessThan(seqOf(fast.mapping.saved));
      await fast.mapping.stop();
      await slow.mapping.stop();
      expect(log.openCursors).toBe(0);

      // A new process: each mapping opens at its own saved position, in either order.
      log.append('b', 1);
      log.append('a', 1);
      const after = fanOut(log);
      const fast2 = after.mapping('a', fast.mapping.saved);
      const slow2 = after.mapping('b', slow.mapping.saved);
      const order = first === 'fast' ? [fast2, slow2] : [slow2, fast2];
      for (const { mapping } of order) await mapping.start();
      log.append('b', 1);
      log.append('a', 1);
      for (let i = 0; i < 5; i++) {
        await fast2.mapping.pull(2);
        await slow2.mapping.pull(2);
      }
      for (const { mapping } of [fast, slow]) {
        const got = [...(mapping.runs[0]?.received ?? [])];
        const restarted = mapping === fast.mapping ? fast2.mapping : slow2.mapping;
        got.push(...restarted.received);
        // Every change, in order, once; but for a restart at a shared position (resumed at its cluster time),
        // which gets the change of that very time again when it is its collection's.
        const run = restarted.runs[0];
        const again = run?.shared ? log.changesOf(mapping.collection, run.start - 1, run.start) : [];
        const expected = log.changesOf(mapping.collection);
        const cut = expected.filter((seq) => seq <= (run?.start ?? 0)).length;
        expect(got, `${mapping.collection}, ${first} first`).toEqual([
          ...expected.slice(0, cut),
          ...again,
          ...expected.slice(cut),
        ]);
        expect(seqOf(restarted.saved)).toBe(log.changes.length);
      }
      await fast2.mapping.stop();
      await slow2.mapping.stop();
      expect(log.openCursors).toBe(0);
    }
  });

  it('issue 12 must-show 3: a mapping behind (after a backfill) reads its own stream, then joins with no gap and no duplicate', async () => {
    const log = new DatabaseLog();
    for (let i = 0; i < 5; i++) {
      log.append('b');
      log.append('a');
    }
    const { shared, mapping } = fanOut(log, { retainedPulls: 4 });
    const a = mapping('a', log.newest);
    await a.mapping.start();
    log.append('a');
    await a.mapping.pull();
    // The backfill recorded its start at change 2; its stream starts there.
    const b = mapping('b', sharedPosition(positionAt(2)));
    await b.mapping.start();
    expect(b.own.openings).toEqual([
      { start: { kind: 'startAt', clusterTime: positionAt(2).clusterTime }, collections: undefined },
    ]);
    expect(log.openCursors).toBe(2);
    log.append('b');
    log.append('a');
    // The shared stream goes on (opened again with b in its filter) while b reads its own.
    await a.mapping.pull();
    expect(shared.openings.at(-1)).toEqual({
      start: { kind: 'startAt', clusterTime: positionAt(11).clusterTime },
      collections: ['a', 'b'],
    });
    await b.mapping.pull(2);
    expect(log.openCursors).toBe(2);
    log.append('b');
    await a.mapping.pull();
    // Its own stream reaches what the shared one can replay: it joins and closes its own cursor.
    await b.mapping.pull(100);
    expect(log.openCursors).toBe(1);
    log.append('b', 2);
    log.append('a');
    await a.mapping.pull();
    await b.mapping.pull();
    await b.mapping.pull();
    expect(b.mapping.received).toEqual(log.changesOf('b', 2));
    expect(a.mapping.received).toEqual(log.changesOf('a', 10));
    expect(b.own.openings).toHaveLength(1);
    await a.mapping.stop();
    await b.mapping.stop();
    expect(log.openCursors).toBe(0);
  });

  it('issue 12 must-show 3: a mapping added to a running stream: the filter is opened again at the newest position, the others lose nothing', async () => {
    const log = new DatabaseLog();
    log.append('a', 3);
    const { shared, mapping } = fanOut(log);
    const a = mapping('a');
    await a.mapping.start();
    await a.mapping.pull();
    log.append('a');
    log.append('b');
    // Added at the newest position: ahead of the shared stream, it joins at once.
    const b = mapping('b', log.newest);
    await b.mapping.start();
    await a.mapping.pull();
    expect(shared.openings).toEqual([
      { start: { kind: 'resumeAfter', position: positionAt(0) }, collections: ['a'] },
      { start: { kind: 'startAt', clusterTime: positionAt(3).clusterTime }, collections: ['a', 'b'] },
    ]);
    // The shared pull that reached it brought nothing after its position: an empty pull where it stands.
    expect(await b.mapping.pull()).toEqual({ changes: [], position: positionAt(5) });
    log.append('b');
    log.append('a');
    await b.mapping.pull();
    await a.mapping.pull();
    expect(a.mapping.received).toEqual([1, 2, 3, 4, 7]);
    expect(b.mapping.received).toEqual([6]);
    expect(b.own.openings).toEqual([]);
    await a.mapping.stop();
    await b.mapping.stop();
    expect(log.openCursors).toBe(0);
  });

  it('a mapping cannot be served from pulls read without its collection: it reads its own stream up to where its collection came in', async () => {
    const log = new DatabaseLog();
    log.append('a');
    log.append('b');
    const { shared, mapping } = fanOut(log);
    // At b's change 2: a resumes at its cluster time.
    const a = mapping('a', sharedPosition(positionAt(2)));
    await a.mapping.start();
    log.append('b');
    log.append('a');
    await a.mapping.pull();
    expect(shared.openings.map((opening) => opening.collections)).toEqual([['a']]);
    // Within the kept pull's range, but that pull was read for a alone.
    const b = mapping('b', positionAt(2));
    await b.mapping.start();
    expect(b.own.openings).toHaveLength(1);
    await b.mapping.pull();
    expect(b.mapping.received).toEqual([3]);
    log.append('b');
    await a.mapping.pull();
    await b.mapping.pull();
    expect(b.mapping.received).toEqual([3, 5]);
    expect(log.openCursors).toBe(1);
    await a.mapping.stop();
    await b.mapping.stop();
  });

  it('a mapping whose collection the shared pull in flight was not asked for does not join before that pull is in', async () => {
    const log = new DatabaseLog({ idle: 'wait' });
    log.append('a');
    const { mapping } = fanOut(log);
    const a = mapping('a');
    await a.mapping.start();
    await a.mapping.pull();
    const aWaits = a.mapping.pull();
    await vi.waitFor(() => {
      expect(log.pendingPulls).toBe(1);
    });
    // At the shared stream's newest position, but the pull out is filtered to a alone.
    // (a's change 1: b resumes at its cluster time)
    const b = mapping('b', sharedPosition(positionAt(1)));
    await b.mapping.start();
    expect(b.own.openings).toHaveLength(1);
    log.append('b');
    log.append('a');
    expect((await aWaits).changes.map((change) => change.seq)).toEqual([3]);
    await b.mapping.pull();
    expect(b.mapping.received).toEqual([2]);
    await a.mapping.stop();
    await b.mapping.stop();
    expect(log.openCursors).toBe(0);
  });

  it('issue 12 must-show 3: a mapping removed: the filter shrinks and the others go on', async () => {
    const log = new DatabaseLog();
    const { shared, mapping } = fanOut(log);
    const a = mapping('a');
    const b = mapping('b');
    await a.mapping.start();
    await b.mapping.start();
    log.append('a');
    log.append('b');
    await a.mapping.pull();
    await b.mapping.stop();
    log.append('b');
    log.append('a');
    await a.mapping.pull();
    expect(shared.openings.map((opening) => opening.collections)).toEqual([['a', 'b'], ['a']]);
    expect(shared.openings.at(-1)?.start).toEqual({
      kind: 'startAt',
      clusterTime: positionAt(2).clusterTime,
    });
    expect(a.mapping.received).toEqual([1, 4]);
    expect(log.openCursors).toBe(1);
    await a.mapping.stop();
    expect(log.openCursors).toBe(0);
  });

  it('issue 12 must-show 3: a slow mapping holds the others back no longer than the bound, reads its own stream, then joins again', async () => {
    const log = new DatabaseLog();
    const slowAfterMs = 40;
    const { mapping } = fanOut(log, { queuePulls: 1, slowAfterMs });
    const a = mapping('a');
    const b = mapping('b');
    await a.mapping.start();
    await b.mapping.start();
    log.append('a');
    log.append('b');
    await a.mapping.pull();
    // b does not read (its BigQuery table is slow): its queue is full, the shared stream waits for it...
    log.append('a');
    log.append('b');
    const began = performance.now();
    await a.mapping.pull();
    // ...until the bound, then b is detached and a goes on.
    expect(performance.now() - began).toBeGreaterThanOrEqual(slowAfterMs - 5);
    expect(a.mapping.received).toEqual([1, 3]);
    // b reads its own stream from the last pull it took (none: its start), then joins again.
    await b.mapping.pull();
    expect(b.own.openings).toEqual([
      { start: { kind: 'resumeAfter', position: positionAt(0) }, collections: undefined },
    ]);
    expect(log.openCursors).toBe(1);
    log.append('b');
    log.append('a');
    await a.mapping.pull();
    await b.mapping.pull();
    expect(b.mapping.received).toEqual([2, 4, 5]);
    expect(a.mapping.received).toEqual([1, 3, 6]);
    await a.mapping.stop();
    await b.mapping.stop();
    expect(log.openCursors).toBe(0);
  });

  it("issue 12 must-show 3: an error of the shared cursor reaches each joined mapping's next pull; a mapping on its own stream goes on", async () => {
    const log = new DatabaseLog();
    log.append('c', 3);
    const { shared, mapping } = fanOut(log, { retainedPulls: 0 });
    // At c's change 3: a and b resume at its cluster time.
    const a = mapping('a', sharedPosition(log.newest));
    const b = mapping('b', sharedPosition(log.newest));
    await a.mapping.start();
    await b.mapping.start();
    await a.mapping.pull();
    // b takes its share of that pull (past c's change 3, which comes again at that cluster time: not b's).
    expect((await b.mapping.pull()).changes).toEqual([]);
    const c = mapping('c', positionAt(1));
    await c.mapping.start();
    expect(c.own.openings).toHaveLength(1);
    const lost = new Error('history lost');
    log.failNextSharedPull(lost);
    log.append('a');
    await expect(a.mapping.pull()).rejects.toBe(lost);
    await expect(b.mapping.pull()).rejects.toBe(lost);
    // The shared cursor is closed; c's own stream is untouched.
    expect(log.openCursors).toBe(1);
    await c.mapping.pull(1);
    expect(c.mapping.received).toEqual([2]);
    // With no shared cursor left, c is caught up wherever it stands: the next to join, it opens the shared
    // stream again at its own position (when a mapping next waits for a pull); a and b restart from their
    // saved positions and join it.
    expect(log.openCursors).toBe(0);
    await a.mapping.stop();
    await b.mapping.stop();
    await a.mapping.start();
    await b.mapping.start();
    await a.mapping.pull();
    expect(shared.openings.at(-1)).toEqual({
      start: { kind: 'resumeAfter', position: positionAt(2) },
      collections: ['a', 'b', 'c'],
    });
    await c.mapping.pull();
    expect(c.mapping.received).toEqual([2, 3]);
    expect(a.mapping.received).toEqual([4]);
    await a.mapping.stop();
    await b.mapping.stop();
    await c.mapping.stop();
    expect(log.openCursors).toBe(0);
  });

  it('issue 13: a failure of the shared cursor is logged with the error itself under err', async () => {
    const log = new DatabaseLog();
    log.append('a');
    const warnings: { message: string; context?: Record<string, unknown> }[] = [];
    const fan = new FanOut<LogPull>({
      shared: log.shared(),
      shape: LOG_PULL_SHAPE,
      retainedPulls: 0,
      log: {
        info: () => undefined,
        warn: (message, context) => warnings.push({ message, ...(context && { context }) }),
      },
    });
    const a = new Mapping('a', fan.source('a', log.own('a')), sharedPosition(log.newest));
    await a.start();
    const lost = new Error('history lost');
    log.failNextSharedPull(lost);
    log.append('a');
    await expect(a.pull()).rejects.toBe(lost);
    expect(warnings).toContainEqual({
      message: 'the shared change stream failed; its mappings restart',
      context: { mappings: 1, err: lost },
    });
    await a.stop();
  });

  it('an aborted pull rejects with its reason and leaves the others going; closing the last mapping ends the pull in flight', async () => {
    const log = new DatabaseLog({ idle: 'wait' });
    const { mapping } = fanOut(log);
    const a = mapping('a');
    const b = mapping('b');
    await a.mapping.start();
    await b.mapping.start();
    const stop = new AbortController();
    const waiting = a.mapping.pull(100, stop.signal);
    await vi.waitFor(() => {
      expect(log.pendingPulls).toBe(1);
    });
    stop.abort(new Error('stopping a'));
    await expect(waiting).rejects.toThrow('stopping a');
    // b waits for the shared pull still out, which an append answers.
    const bWaits = b.mapping.pull();
    await turn();
    log.append('b');
    expect((await bWaits).changes.map((change) => change.seq)).toEqual([1]);
    // A shared pull is out again for b's next pull; closing every mapping aborts it and closes the cursor.
    const bAgain = b.mapping.pull().catch((error: unknown) => error);
    await vi.waitFor(() => {
      expect(log.pendingPulls).toBe(1);
    });
    await a.mapping.stop();
    await b.mapping.stop();
    expect(await bAgain).toBeInstanceOf(Error);
    expect(log.pendingPulls).toBe(0);
    expect(log.openCursors).toBe(0);
  });

  it('the first mapping opens the shared stream where it starts: after an invalidate with startAfter, or at a cluster time', async () => {
    const log = new DatabaseLog();
    log.append('a', 4);
    const afterDrop = { ...positionAt(2), invalidate: true as const };
    const first = fanOut(log);
    const a = first.mapping('a');
    await a.mapping.start(afterDrop);
    await a.mapping.pull();
    expect(first.shared.openings).toEqual([
      { start: { kind: 'startAfter', position: afterDrop }, collections: ['a'] },
    ]);
    expect(a.mapping.received).toEqual([3, 4]);
    await a.mapping.stop();

    const second = fanOut(log);
    const cursor = await second.fan
      .source('a', log.own('a'))
      .open({ kind: 'startAt', clusterTime: positionAt(2).clusterTime }, AbortSignal.timeout(1_000));
    const pull = await cursor.next(100, AbortSignal.timeout(1_000));
    expect(second.shared.openings[0]?.start).toEqual({
      kind: 'startAt',
      clusterTime: positionAt(2).clusterTime,
    });
    expect(pull.changes.map((change) => change.seq)).toEqual([2, 3, 4]);
    await cursor.close();
    expect(log.openCursors).toBe(0);
  });

  it('refuses bounds that would stall it (a queue of no pull) or make no sense (negative)', () => {
    const log = new DatabaseLog();
    const options = { shared: log.shared(), shape: LOG_PULL_SHAPE };
    expect(() => new FanOut({ ...options, queuePulls: 0 })).toThrow(/queuePulls 0 \(at least 1\)/);
    expect(() => new FanOut({ ...options, slowAfterMs: -1 })).toThrow(/out of range/);
    expect(() => new FanOut({ ...options, retainedPulls: 0, retainedChanges: 0 })).not.toThrow();
  });

  it("stream loops over one shared stream: the busy mapping's rows are written, the idle one's checkpoint moves with it, and a stop leaves nothing open", async () => {
    // A quiet server answers a pull with nothing after its await time: the empty pull sends what lingers.
    const log = new DatabaseLog({ idle: 'wait', awaitMs: 20 });
    const { fan, shared } = fanOut(log);
    const mapper = compileRowMapper(
      parseColumnSpecs([{ name: '_id', type: 'INTEGER', mongo_field: '_id', primary_key: true }]).columns,
    );
    const inThread = prepareInThread({ mapper: () => mapper });
    // The fake's changes as inserts of one document each.
    const prepare = (pull: LogPull, now: Date, signal: AbortSignal) =>
      inThread(
        {
          events: pull.changes.map((change) => ({
            kind: 'upsert' as const,
            operationType: 'insert' as const,
            token: change.position.token,
            clusterTime: change.position.clusterTime,
            documentId: change.seq,
            document: { _id: change.seq },
          })),
          position: pull.position,
        },
        now,
        signal,
      );
    const stop = new AbortController();
    const loop = (collection: string) => {
      const sink = new ManualSink((write) => {
        write.ack();
      });
      const checkpoints = new MemoryCheckpointStore();
      const done = runPreparedStreamLoop(
        {
          source: fan.source(collection, log.own(collection)),
          prepare,
          sink,
          checkpoints,
          limits: { maxRows: 2, maxBytes: 1_000_000, maxRowBytes: 100_000, lingerMs: 60_000 },
          readAhead: 2,
          // Idle positions saved at once here (the daemon waits IDLE_CHECKPOINT_INTERVAL_MS between them).
          idleCheckpointIntervalMs: 0,
        },
        { kind: 'resumeAfter', position: positionAt(0) },
        stop.signal,
      );
      return { sink, checkpoints, done };
    };
    const busy = loop('a');
    const idle = loop('b');
    log.append('a', 5);
    await vi.waitFor(() => {
      // Both at change 5: the busy one's own change (or a quiet pull's mark after it), the idle one's marked
      // as another collection's.
      expect(seqOf(busy.checkpoints.checkpoint.position ?? positionAt(0))).toBe(5);
      expect(seqOf(idle.checkpoints.checkpoint.position ?? positionAt(0))).toBe(5);
      expect(idle.checkpoints.checkpoint.position?.shared).toBe(true);
    });
    expect(busy.sink.writes.flatMap((write) => write.records.map((record) => record.eventId))).toEqual(
      log.changes.map((change) => change.position.token),
    );
    expect(idle.sink.writes).toEqual([]);
    expect(shared.openings).toHaveLength(1);
    stop.abort();
    await expect(busy.done).resolves.toBeUndefined();
    await expect(idle.done).resolves.toBeUndefined();
    expect(log.openCursors).toBe(0);
    expect(log.pendingPulls).toBe(0);
  });

  it("the source's current time is its own stream's", async () => {
    const log = new DatabaseLog();
    log.append('a', 7);
    const { fan } = fanOut(log);
    const own = log.own('a');
    await expect(fan.source('a', own).currentTime(AbortSignal.timeout(1_000))).resolves.toEqual(
      positionAt(7).clusterTime,
    );
  });

  it('issue 12 must-show 3 (property): over random pulls, joins, leaves, errors and slow mappings, each run of a mapping gets every change of its collection after its start, in order, once', async () => {
    const COLLECTIONS = ['c0', 'c1', 'c2'];
    const MAPPINGS = 4;
    const mappingIndex = fc.integer({ min: 0, max: MAPPINGS - 1 });
    const action = fc.oneof(
      {
        arbitrary: fc.record({
          kind: fc.constant('append' as const),
          collection: fc.integer({ min: 0, max: 2 }),
          count: fc.integer({ min: 1, max: 3 }),
        }),
        weight: 3,
      },
      {
        arbitrary: fc.record({
          kind: fc.constant('pull' as const),
          mapping: mappingIndex,
          max: fc.integer({ min: 1, max: 4 }),
        }),
        weight: 6,
      },
      { arbitrary: fc.record({ kind: fc.constant('stop' as const), mapping: mappingIndex }), weight: 2 },
      // Started again at its saved position (back 0), or, as a new mapping after a backfill, further back.
      {
        arbitrary: fc.record({
          kind: fc.constant('start' as const),
          mapping: mappingIndex,
          back: fc.integer({ min: 0, max: 8 }),
        }),
        weight: 3,
      },
      { arbitrary: fc.record({ kind: fc.constant('fail' as const) }), weight: 1 },
    );
    const bounds = fc.record({
      queuePulls: fc.integer({ min: 1, max: 3 }),
      retainedPulls: fc.integer({ min: 0, max: 4 }),
      retainedChanges: fc.integer({ min: 0, max: 20 }),
    });
    const injected = new Error('injected: the shared cursor could not resume');

    await fc.assert(
      fc.asyncProperty(bounds, fc.array(action, { maxLength: 60 }), async (limits, actions) => {
        const log = new DatabaseLog();
        const { mapping } = fanOut(log, { ...limits, slowAfterMs: 0 });
        const mappings = Array.from(
          { length: MAPPINGS },
          (_, i) => mapping(COLLECTIONS[i % COLLECTIONS.length] ?? 'c0').mapping,
        );
        for (const m of mappings) await m.start();
        /** A pull as the stream loop makes it: a failure ends the run, which restarts at the saved position. */
        const pull = async (m: Mapping, max: number): Promise<void> => {
          try {
            await m.pull(max);
          } catch (error) {
            if (error !== injected) throw error;
            await m.stop();
            await m.start();
          }
        };
        for (const step of actions) {
          switch (step.kind) {
            case 'append':
              log.append(COLLECTIONS[step.collection] ?? 'c0', step.count);
              break;
            case 'pull': {
              const m = mappings[step.mapping];
              if (m?.running) await pull(m, step.max);
              break;
            }
            case 'stop':
              await mappings[step.mapping]?.stop();
              break;
            case 'start': {
              const m = mappings[step.mapping];
              if (m === undefined || m.running) break;
              await m.start(
                step.back === 0 ? m.saved : savedAt(log, log.changes.length - step.back, m.collection),
              );
              break;
            }
            case 'fail':
              log.failNextSharedPull(injected);
              break;
            default:
              step satisfies never;
          }
        }
        // Every running mapping reads on until it has reached the newest change.
        for (let round = 0; round < 100; round++) {
          const behind = mappings.filter((m) => m.running && seqOf(m.saved) < log.changes.length);
          if (behind.length === 0) break;
          for (const m of behind) await pull(m, 4);
        }
        for (const m of mappings) {
          if (m.running)
            expect(seqOf(m.saved), `${m.collection} reached the newest change`).toBe(log.changes.length);
          for (const run of m.runs) {
            const end = run.positions.at(-1) ?? run.start;
            expect(run.positions, 'positions never go back').toEqual(
              [...run.positions].sort((x, y) => x - y),
            );
            expect(run.received, `${m.collection} from ${String(run.start)} to ${String(end)}`).toEqual(
              log.changesOf(m.collection, run.shared ? run.start - 1 : run.start, end),
            );
          }
        }
        for (const m of mappings) await m.stop();
        expect(log.openCursors).toBe(0);
        expect(log.pendingPulls).toBe(0);
      }),
      { numRuns: 300 },
    );
  });

  it('issue 12 must-show 3 (property, concurrent): with pulls left waiting while mappings join, leave, fail and fall behind, each run gets every change of its collection after its start, in order, once', async () => {
    const COLLECTIONS = ['c0', 'c1', 'c2'];
    const MAPPINGS = 4;
    const mappingIndex = fc.integer({ min: 0, max: MAPPINGS - 1 });
    const action = fc.oneof(
      {
        arbitrary: fc.record({
          kind: fc.constant('append' as const),
          collection: fc.integer({ min: 0, max: 2 }),
          count: fc.integer({ min: 1, max: 3 }),
        }),
        weight: 3,
      },
      {
        arbitrary: fc.record({
          kind: fc.constant('pull' as const),
          mapping: mappingIndex,
          max: fc.integer({ min: 1, max: 4 }),
        }),
        weight: 6,
      },
      { arbitrary: fc.record({ kind: fc.constant('turn' as const) }), weight: 3 },
      { arbitrary: fc.record({ kind: fc.constant('stop' as const), mapping: mappingIndex }), weight: 2 },
      {
        arbitrary: fc.record({
          kind: fc.constant('start' as const),
          mapping: mappingIndex,
          back: fc.integer({ min: 0, max: 8 }),
        }),
        weight: 3,
      },
      { arbitrary: fc.record({ kind: fc.constant('fail' as const) }), weight: 1 },
    );
    const bounds = fc.record({
      queuePulls: fc.integer({ min: 1, max: 3 }),
      retainedPulls: fc.integer({ min: 0, max: 4 }),
      retainedChanges: fc.integer({ min: 0, max: 20 }),
    });
    const injected = new Error('injected: the shared cursor could not resume');

    await fc.assert(
      fc.asyncProperty(bounds, fc.array(action, { maxLength: 80 }), async (limits, actions) => {
        // A quiet stream waits for a change (or its signal), as a server does: pulls stay out.
        const log = new DatabaseLog({ idle: 'wait' });
        const { mapping } = fanOut(log, { ...limits, slowAfterMs: 0 });
        const mappings = Array.from(
          { length: MAPPINGS },
          (_, i) => mapping(COLLECTIONS[i % COLLECTIONS.length] ?? 'c0').mapping,
        );
        for (const m of mappings) await m.start();
        /** A failed pull ends the run; the loop starts again at the saved position. */
        const restartFailed = async (m: Mapping): Promise<void> => {
          if (m.failure === undefined) return;
          expect(m.failure).toBe(injected);
          await m.stop();
          await m.start();
        };
        for (const step of actions) {
          switch (step.kind) {
            case 'append':
              log.append(COLLECTIONS[step.collection] ?? 'c0', step.count);
              break;
            case 'pull': {
              const m = mappings[step.mapping];
              if (m === undefined) break;
              await restartFailed(m);
              m.begin(step.max);
              break;
            }
            case 'turn':
              await turn();
              break;
            case 'stop':
              await mappings[step.mapping]?.stop();
              break;
            case 'start': {
              const m = mappings[step.mapping];
              if (m === undefined || m.running) break;
              await m.start(
                step.back === 0 ? m.saved : savedAt(log, log.changes.length - step.back, m.collection),
              );
              break;
            }
            case 'fail':
              log.failNextSharedPull(injected);
              break;
            default:
              step satisfies never;
          }
        }
        // Every running mapping reads on until it has reached the newest change; a pull of a mapping behind
        // never waits for long.
        for (let round = 0; round < 200; round++) {
          const behind = mappings.filter((m) => m.running && seqOf(m.saved) < log.changes.length);
          if (behind.length === 0) break;
          for (const m of behind) {
            await restartFailed(m);
            m.begin(4);
          }
          await settle(Promise.race(behind.map((m) => m.outstanding ?? Promise.resolve())), 'a pull behind');
          await turn();
        }
        for (const m of mappings) {
          if (m.running)
            expect(seqOf(m.saved), `${m.collection} reached the newest change`).toBe(log.changes.length);
        }
        for (const m of mappings) await m.stop();
        for (const m of mappings) {
          for (const run of m.runs) {
            const end = run.positions.at(-1) ?? run.start;
            expect(run.positions, 'positions never go back').toEqual(
              [...run.positions].sort((x, y) => x - y),
            );
            expect(run.received, `${m.collection} from ${String(run.start)} to ${String(end)}`).toEqual(
              log.changesOf(m.collection, run.shared ? run.start - 1 : run.start, end),
            );
          }
        }
        expect(log.openCursors).toBe(0);
        expect(log.pendingPulls).toBe(0);
      }),
      { numRuns: 200 },
    );
  });
});
