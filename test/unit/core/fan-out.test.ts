import { describe, expect, it } from 'vitest';
import { FanOut, type FanOutBounds } from '../../../src/core/fan-out.js';
import { type Position } from '../../../src/core/model.js';
import { type ChangeCursor, type ChangeSource } from '../../../src/core/ports.js';
import { resumeFrom } from '../../../src/core/stream-loop.js';
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

/**
 * One mapping as its stream loop reads the source: opens at its saved position, pulls, and saves the
 * position of every pull at once (as if BigQuery acknowledged each pull before the next). Records every run
 * (open to close): where it started, the changes it got and the positions it went through.
 */
class Mapping {
  readonly runs: { start: number; received: number[]; positions: number[] }[] = [];
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

  get run(): { start: number; received: number[]; positions: number[] } {
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
    this.runs.push({ start: seqOf(at), received: [], positions: [] });
    this.#cursor = await this.source.open(resumeFrom(at), this.#stop.signal);
  }

  async pull(maxEvents = 100, signal: AbortSignal = this.#stop.signal): Promise<LogPull> {
    if (this.#cursor === undefined) throw new Error('not started');
    const pull = await settle(this.#cursor.next(maxEvents, signal), `a pull of ${this.collection}`);
    const run = this.run;
    for (const change of pull.changes) {
      expect(change.collection).toBe(this.collection);
      run.received.push(change.seq);
    }
    if (pull.position !== undefined) {
      run.positions.push(seqOf(pull.position));
      this.saved = pull.position;
    }
    return pull;
  }

  async stop(): Promise<void> {
    this.#stop.abort();
    const cursor = this.#cursor;
    this.#cursor = undefined;
    await cursor?.close();
  }
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
  it("issue 12 must-show 3: an idle mapping's position advances with the pulls of the others", async () => {
    const log = new DatabaseLog();
    log.append('a', 3);
    const { shared, mapping } = fanOut(log);
    const a = mapping('a');
    const b = mapping('b');
    await a.mapping.start();
    await b.mapping.start();
    expect((await a.mapping.pull()).changes.map((c) => c.seq)).toEqual([1, 2, 3]);
    expect(await b.mapping.pull()).toEqual({ changes: [], position: positionAt(3) });
    log.append('a', 2);
    await a.mapping.pull();
    expect(await b.mapping.pull()).toEqual({ changes: [], position: positionAt(5) });
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
});
