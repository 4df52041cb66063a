import {
  comparePositions,
  sharedPosition,
  type ClusterTime,
  type Position,
} from '../../../src/core/model.js';
import {
  type ChangeCursor,
  type ChangeSource,
  type PullShape,
  type SharedStreamSource,
  type StreamStart,
} from '../../../src/core/ports.js';

/** One change of a scripted database: its sequence number (1, 2, ...) orders it and makes its position. */
export interface LoggedChange {
  readonly seq: number;
  readonly collection: string;
  readonly position: Position;
}

/** What a cursor over the log returns: changes in log order and the post-batch position. */
export interface LogPull {
  readonly changes: readonly LoggedChange[];
  readonly position: Position | undefined;
}

const EPOCH_SECONDS = 1_700_000_000;

/**
 * The position after the change `seq` (0: before the first). Every change has a cluster time of its own, so
 * positions compare exactly (no two changes share a cluster time here).
 */
export function positionAt(seq: number): Position {
  return {
    token: seq.toString(16).toUpperCase().padStart(8, '0'),
    clusterTime: { t: EPOCH_SECONDS, i: seq },
  };
}

/**
 * A post-batch position after the change `seq` that the cursor scanned without returning it: MongoDB's
 * high-water-mark token, which any stream resumes from (the `H` sorts it after the change's own token).
 */
export function scannedTo(seq: number): Position {
  return { token: `${positionAt(seq).token}H`, clusterTime: positionAt(seq).clusterTime };
}

/** The place of a position (token and cluster time), without how it is resumed from. */
export function placeOf(position: Position | undefined): Position | undefined {
  return position && { token: position.token, clusterTime: position.clusterTime };
}

export function seqOf(position: Position): number {
  return position.clusterTime.i;
}

/** Reads the fakes' pulls: split by collection, trimmed after a position, exactly (positions never tie). */
export const LOG_PULL_SHAPE: PullShape<LogPull> = {
  split(pull, collections) {
    const parts = new Map<string, LoggedChange[]>();
    for (const change of pull.changes) {
      if (!collections.has(change.collection)) continue;
      const part = parts.get(change.collection) ?? [];
      part.push(change);
      parts.set(change.collection, part);
    }
    // A part's position is the pull's: resumable after its token only by a stream holding that change.
    const positionOf = (changes: readonly LoggedChange[]): Position | undefined =>
      pull.position === undefined || changes.at(-1)?.position.token === pull.position.token
        ? pull.position
        : sharedPosition(pull.position);
    return new Map(
      [...parts].map(([collection, changes]) => [collection, { changes, position: positionOf(changes) }]),
    );
  },
  after: (pull, position) => ({
    changes: pull.changes.filter((change) => comparePositions(change.position, position) > 0),
    position: pull.position,
  }),
  empty: (position) => ({ changes: [], position }),
  position: (pull) => pull.position,
  count: (pull) => pull.changes.length,
};

/** A cursor's opening as a test sees it. */
export interface Opening {
  readonly start: StreamStart;
  /** The shared stream's filter (undefined for a collection's own stream). */
  readonly collections: readonly string[] | undefined;
}

/**
 * The change log of one database, appended to by the test, with change streams over it that behave as
 * MongoDB's do where the fan-out can tell: a cursor resumes after a position (or at a cluster time), returns
 * the changes of its collections in order, at most `maxEvents`, and the position after what it scanned (the
 * newest of the log when it scanned to the end, as a post-batch resume token). With `idle: 'wait'` a pull
 * with nothing new waits for an append or its signal, and with `awaitMs` too no longer than that (then it
 * returns nothing, at the newest position), as a quiet server does for its await time.
 */
export class DatabaseLog {
  readonly changes: LoggedChange[] = [];
  readonly openings: Opening[] = [];
  /** Cursors opened and not closed. */
  openCursors = 0;
  /** Pulls made and not settled. */
  pendingPulls = 0;
  readonly #idle: 'return' | 'wait';
  readonly #awaitMs: number | undefined;
  readonly #appended = new Set<() => void>();
  #failNext: Error | undefined;

  constructor(options: { readonly idle?: 'return' | 'wait'; readonly awaitMs?: number } = {}) {
    this.#idle = options.idle ?? 'return';
    this.#awaitMs = options.awaitMs;
  }

  /** Appends `count` changes of `collection`. */
  append(collection: string, count = 1): void {
    for (let i = 0; i < count; i++) {
      const seq = this.changes.length + 1;
      this.changes.push({ seq, collection, position: positionAt(seq) });
    }
    for (const wake of [...this.#appended]) wake();
  }

  /** The position after the newest change. */
  get newest(): Position {
    return positionAt(this.changes.length);
  }

  /** The changes of `collection` after `seq`, up to `upTo` (inclusive). */
  changesOf(collection: string, after = 0, upTo = this.changes.length): readonly number[] {
    return this.changes
      .filter((change) => change.collection === collection && change.seq > after && change.seq <= upTo)
      .map((change) => change.seq);
  }

  /** The next pull of any shared cursor fails with `error` (once). */
  failNextSharedPull(error: Error): void {
    this.#failNext = error;
  }

  /** The database's stream (what the fan-out shares). */
  shared(): SharedStreamSource<LogPull> & { readonly openings: Opening[] } {
    const openings: Opening[] = [];
    return {
      openings,
      open: (start, collections) => {
        const opening = { start, collections: [...collections] };
        openings.push(opening);
        return Promise.resolve(this.#cursor(opening, new Set(collections), true));
      },
    };
  }

  /** One collection's own stream. */
  own(collection: string): ChangeSource<LogPull> & { readonly openings: Opening[] } {
    const openings: Opening[] = [];
    return {
      openings,
      open: (start) => {
        const opening = { start, collections: undefined };
        openings.push(opening);
        return Promise.resolve(this.#cursor(opening, new Set([collection]), false));
      },
      currentTime: (): Promise<ClusterTime> => Promise.resolve(this.newest.clusterTime),
    };
  }

  #cursor(opening: Opening, collections: ReadonlySet<string>, shared: boolean): ChangeCursor<LogPull> {
    this.openings.push(opening);
    this.openCursors++;
    const start = opening.start;
    let after = start.kind === 'startAt' ? Math.max(0, start.clusterTime.i - 1) : seqOf(start.position);
    // As MongoDB: a stream resumes after a change's token only when it holds that change (a high-water mark
    // resumes any stream); otherwise its pulls fail with ChangeStreamFatalError 280.
    let refused: Error | undefined;
    if (start.kind !== 'startAt' && !start.position.token.endsWith('H') && after > 0) {
      const change = this.changes[after - 1];
      if (change === undefined || !collections.has(change.collection)) {
        refused = Object.assign(new Error('cannot resume stream; the resume token was not found'), {
          code: 280,
        });
      }
    }
    let closed = false;
    const pull = (maxEvents: number): LogPull => {
      const changes: LoggedChange[] = [];
      let scanned = after;
      for (const change of this.changes.slice(after)) {
        if (changes.length >= maxEvents) break;
        scanned = change.seq;
        if (collections.has(change.collection)) changes.push(change);
      }
      after = scanned;
      const returnedLast = scanned === 0 || changes.at(-1)?.seq === scanned;
      return { changes, position: returnedLast ? positionAt(scanned) : scannedTo(scanned) };
    };
    return {
      next: async (maxEvents, signal) => {
        if (closed) throw new Error('cursor closed');
        // A server's answer comes in a later turn: code that pulls in a loop without waiting for anyone lets
        // timers run (a test's bound on a pull fails it) rather than spinning.
        await new Promise((resolve) => setImmediate(resolve));
        signal.throwIfAborted();
        if (refused !== undefined) throw refused;
        const failure = shared ? this.#failNext : undefined;
        if (failure !== undefined) {
          this.#failNext = undefined;
          throw failure;
        }
        if (this.#idle === 'wait' && after === this.changes.length) {
          this.pendingPulls++;
          try {
            await this.#appendOr(signal);
          } finally {
            this.pendingPulls--;
          }
        }
        return pull(maxEvents);
      },
      close: () => {
        if (!closed) this.openCursors--;
        closed = true;
        return Promise.resolve();
      },
    };
  }

  #appendOr(signal: AbortSignal): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const awaited =
        this.#awaitMs === undefined
          ? undefined
          : setTimeout(() => {
              done();
            }, this.#awaitMs);
      const done = (): void => {
        clearTimeout(awaited);
        this.#appended.delete(done);
        signal.removeEventListener('abort', aborted);
        resolve();
      };
      const aborted = (): void => {
        clearTimeout(awaited);
        this.#appended.delete(done);
        reject(signal.reason as Error);
      };
      this.#appended.add(done);
      signal.addEventListener('abort', aborted, { once: true });
    });
  }
}
