import { errorMessage } from '../errors.js';
import { comparePositions, sharedPosition, type Position } from './model.js';
import {
  SYSTEM_CLOCK,
  type ChangeCursor,
  type ChangeSource,
  type Clock,
  type PullShape,
  type SharedStreamSource,
  type StreamStart,
} from './ports.js';
import { resumeFrom } from './stream-loop.js';

/**
 * Pulls queued for one mapping before the shared stream waits for it. A few: enough that a mapping busy with
 * one write does not hold the others back, few enough that what a detached mapping drops (and reads again
 * from its own stream) stays small.
 */
export const DEFAULT_FAN_OUT_QUEUE_PULLS = 4;
/**
 * How long a mapping's full queue may hold the shared stream back before the mapping is detached (it reads
 * its own stream again until it has caught up). Longer than a healthy BigQuery write, short enough that one
 * slow table does not stall the archiving of the others for long.
 */
export const DEFAULT_FAN_OUT_SLOW_AFTER_MS = 5_000;
/**
 * Pulls of the shared stream kept for mappings that catch up on their own stream: a mapping joins once its
 * position is within them. An idle server answers a pull about once a second, so this is seconds of history.
 */
export const DEFAULT_FAN_OUT_RETAINED_PULLS = 8;
/** Changes those kept pulls may hold together (they hold the changes' bytes). */
export const DEFAULT_FAN_OUT_RETAINED_CHANGES = 10_000;

/** The bounds of a FanOut; each has a DEFAULT_FAN_OUT_* default. */
export interface FanOutBounds {
  /** Pulls queued per joined mapping (at least 1). */
  readonly queuePulls?: number;
  /** How long a full queue may hold the shared stream back before its mapping is detached (0: at once). */
  readonly slowAfterMs?: number;
  /** Pulls of the shared stream kept for mappings catching up (0: none; a mapping then joins at the newest). */
  readonly retainedPulls?: number;
  /** Changes the kept pulls may hold together. */
  readonly retainedChanges?: number;
}

/** Where the fan-out writes its lines; a failure goes under `err` as the thrown value (see `SupervisorLog`). */
export interface FanOutLog {
  info(message: string, context?: Record<string, unknown>): void;
  warn(message: string, context?: Record<string, unknown>): void;
}

export interface FanOutOptions<B> extends FanOutBounds {
  /** The database's change stream. */
  readonly shared: SharedStreamSource<B>;
  /** What the fan-out reads of a pull (split by collection, trimmed after a position). */
  readonly shape: PullShape<B>;
  readonly log?: FanOutLog;
  /** Time for the slow-mapping bound. */
  readonly clock?: Clock;
}

/** One pull of the shared cursor as kept for replay: where it started and ended, and what it was read for. */
interface Kept<B> {
  readonly from: Position | undefined;
  /** The pull's position; `from` when it has none (it moved nothing we can tell). */
  readonly to: Position | undefined;
  readonly pull: B;
  /** The collections the cursor was filtered to: only those can be served from this pull. */
  readonly filter: ReadonlySet<string>;
  readonly changes: number;
}

interface Waiter<B> {
  readonly maxEvents: number;
  readonly resolve: (pull: B) => void;
  readonly reject: (error: Error) => void;
}

type MemberMode = 'own' | 'joined' | 'failed' | 'closed';

/** One mapping's cursor. */
interface Member<B> {
  readonly collection: string;
  readonly own: ChangeSource<B>;
  /** Where its cursor was opened; used until a pull gives it a position. */
  readonly start: StreamStart;
  mode: MemberMode;
  ownCursor: ChangeCursor<B> | undefined;
  /** The position of the last pull its loop took (what it may save). */
  taken: Position | undefined;
  /** The position of the last pull queued for it (what the next share starts after). */
  queued: Position | undefined;
  queue: B[];
  /** When its queue became full (see slowAfterMs). */
  fullSince: number | undefined;
  waiter: Waiter<B> | undefined;
  /** The shared cursor's error that ended its share (thrown by its next pulls). */
  failure: Error | undefined;
}

/** The shared cursor and what it serves: one at a time, replaced after an error or when the last mapping leaves. */
interface Session<B> {
  /** Where the cursor opens again (after a filter change): at its newest position's cluster time. */
  resume: StreamStart;
  /**
   * Where the next pull begins, when the cursor was opened again at a cluster time: it may repeat changes
   * of that time, which each mapping's share leaves out again (see #deliver).
   */
  reopenedAt: Position | undefined;
  /** The newest position of the shared stream (the last pull's), or where it opened. */
  head: Position | undefined;
  cursor: ChangeCursor<B> | undefined;
  cursorFilter: ReadonlySet<string> | undefined;
  /** The filter of the pull in flight: a mapping of another collection cannot join until it is in. */
  readingWith: ReadonlySet<string> | undefined;
  reading: Promise<void> | undefined;
  readonly kept: Kept<B>[];
  keptChanges: number;
  readonly joined: Set<Member<B>>;
  /** Aborts the pull in flight when the session ends. */
  readonly stop: AbortController;
  timer: ReturnType<typeof setTimeout> | undefined;
}

/**
 * One change stream per source database, shared by the mappings of its collections (CHANGE_STREAM_SCOPE
 * `database`): each mapping's stream loop reads a `source(collection, own)` as it would its own stream.
 *
 * A mapping opens on its own per-collection stream and reads it until its position is within what the shared
 * stream can still replay (its last few pulls); it then closes its own cursor and takes its share of every
 * shared pull: its changes, or an empty pull at the shared position, so an idle mapping's position moves on
 * with the others'. The first mapping to join when no shared cursor is open opens it at its own position.
 * The shared cursor is filtered on the server to the collections of every open mapping; when that set
 * changes it is opened again at its newest position's cluster time (nothing lost; what a mapping had is left
 * out of its share). Each joined mapping has a bounded queue; the shared stream reads on only when every queue has room, and a mapping whose queue
 * stays full too long is detached back to its own stream from the last position it took. An error of the
 * shared cursor fails the next pull of every joined mapping (each restarts as after any error), and the
 * cursor is opened again by the next to join. Each mapping saves its own position: after a restart every
 * mapping opens at its own and joins again, so the database's stream is in effect saved at the slowest one.
 *
 * A pull's changes after a position are found by `PullShape.after`, which keeps changes it cannot order (the
 * same cluster time): a mapping joining may get such a change twice, never lose one.
 */
export class FanOut<B> {
  readonly #shared: SharedStreamSource<B>;
  readonly #shape: PullShape<B>;
  readonly #log: FanOutLog | undefined;
  readonly #clock: Clock;
  readonly #queuePulls: number;
  readonly #slowAfterMs: number;
  readonly #retainedPulls: number;
  readonly #retainedChanges: number;
  /** Open cursors by collection (own or joined): the shared cursor's filter. */
  readonly #open = new Map<string, number>();
  #session: Session<B> | undefined;
  /** Sessions being closed (awaited by every close, so nothing is left behind). */
  readonly #ending = new Set<Promise<void>>();

  constructor(options: FanOutOptions<B>) {
    this.#shared = options.shared;
    this.#shape = options.shape;
    this.#log = options.log;
    this.#clock = options.clock ?? SYSTEM_CLOCK;
    this.#queuePulls = options.queuePulls ?? DEFAULT_FAN_OUT_QUEUE_PULLS;
    this.#slowAfterMs = options.slowAfterMs ?? DEFAULT_FAN_OUT_SLOW_AFTER_MS;
    this.#retainedPulls = options.retainedPulls ?? DEFAULT_FAN_OUT_RETAINED_PULLS;
    this.#retainedChanges = options.retainedChanges ?? DEFAULT_FAN_OUT_RETAINED_CHANGES;
    if (
      !(this.#queuePulls >= 1) ||
      !(this.#slowAfterMs >= 0) ||
      !(this.#retainedPulls >= 0) ||
      !(this.#retainedChanges >= 0)
    ) {
      throw new Error(
        `fan-out bounds out of range: queuePulls ${String(this.#queuePulls)} (at least 1), slowAfterMs ${String(this.#slowAfterMs)}, retainedPulls ${String(this.#retainedPulls)}, retainedChanges ${String(this.#retainedChanges)} (at least 0)`,
      );
    }
  }

  /** The change source one mapping of `collection` reads; `own` is the collection's own stream. */
  source(collection: string, own: ChangeSource<B>): ChangeSource<B> {
    return {
      open: (start, signal) => this.#openMember(collection, own, start, signal),
      currentTime: (signal) => own.currentTime(signal),
    };
  }

  async #openMember(
    collection: string,
    own: ChangeSource<B>,
    start: StreamStart,
    signal: AbortSignal,
  ): Promise<ChangeCursor<B>> {
    signal.throwIfAborted();
    const position = startPosition(start);
    const member: Member<B> = {
      collection,
      own,
      start,
      mode: 'own',
      ownCursor: undefined,
      taken: position,
      queued: position,
      queue: [],
      fullSince: undefined,
      waiter: undefined,
      failure: undefined,
    };
    this.#open.set(collection, (this.#open.get(collection) ?? 0) + 1);
    // With no shared cursor, this mapping's start is where it opens (startAt included): nothing to catch up.
    if (this.#session === undefined) this.#join(member, start);
    else if (this.#caughtUp(member)) this.#join(member, start);
    else {
      try {
        member.ownCursor = await own.open(start, signal);
      } catch (error) {
        this.#leave(member);
        throw error;
      }
    }
    return {
      next: (maxEvents, pullSignal) => this.#next(member, maxEvents, pullSignal),
      close: () => this.#close(member),
    };
  }

  async #next(member: Member<B>, maxEvents: number, signal: AbortSignal): Promise<B> {
    signal.throwIfAborted();
    switch (member.mode) {
      case 'own':
        return this.#readOwn(member, maxEvents, signal);
      case 'joined': {
        const queued = member.queue.shift();
        if (queued !== undefined) {
          if (member.queue.length < this.#queuePulls) member.fullSince = undefined;
          this.#took(member, queued);
          // Room in its queue may be what the others wait for.
          this.#pump();
          return queued;
        }
        const pull = await this.#wait(member, maxEvents, signal);
        this.#took(member, pull);
        return pull;
      }
      case 'failed':
        throw member.failure ?? new Error('the shared change stream failed');
      case 'closed':
        throw new Error(`the change cursor of ${member.collection} is closed`);
      default:
        return member.mode satisfies never;
    }
  }

  /** A pull of the mapping's own stream; it joins the shared stream as soon as that pull caught it up. */
  async #readOwn(member: Member<B>, maxEvents: number, signal: AbortSignal): Promise<B> {
    if (member.ownCursor === undefined) {
      const start = member.taken === undefined ? member.start : resumeFrom(member.taken);
      const cursor = await member.own.open(start, signal);
      if (member.mode !== 'own') {
        // Closed while it opened.
        await cursor.close();
        throw new Error(`the change cursor of ${member.collection} is closed`);
      }
      member.ownCursor = cursor;
    }
    const pull = await member.ownCursor.next(maxEvents, signal);
    this.#took(member, pull);
    if (member.mode === 'own' && member.taken !== undefined && this.#caughtUp(member)) {
      const cursor = member.ownCursor;
      member.ownCursor = undefined;
      this.#join(member, resumeFrom(member.taken));
      // Not awaited: the mapping takes its shares from now on, and a close that is slow to answer (a
      // killCursors) must not leave its queue full until it counts as slow. A close of the fan-out waits for it.
      const ending = this.#closeQuietly(cursor, member.collection);
      this.#ending.add(ending);
      void ending.finally(() => this.#ending.delete(ending));
    }
    return pull;
  }

  #took(member: Member<B>, pull: B): void {
    const position = this.#shape.position(pull);
    if (position === undefined) return;
    member.taken = position;
    if (member.mode === 'own') member.queued = position;
  }

  /**
   * Whether the member's position is within what the shared stream can replay for its collection: at or
   * after the start of the newest run of kept pulls read with its collection in the filter. True when there
   * is no shared stream to catch up with.
   */
  #caughtUp(member: Member<B>): boolean {
    const session = this.#session;
    if (session === undefined) return member.taken !== undefined;
    const base = this.#replayableFrom(session, member.collection);
    return base !== undefined && member.taken !== undefined && comparePositions(member.taken, base) >= 0;
  }

  #replayableFrom(session: Session<B>, collection: string): Position | undefined {
    // The pull in flight was asked for without this collection: its changes are not in it.
    if (session.readingWith !== undefined && !session.readingWith.has(collection)) return undefined;
    // Otherwise the next pull is read with it (the cursor opens again first if need be), from the head on.
    let base = session.head;
    for (let i = session.kept.length - 1; i >= 0; i--) {
      const kept = session.kept[i];
      if (!kept?.filter.has(collection)) break;
      base = kept.from;
    }
    return base;
  }

  /** The member takes its share of the shared stream from now on, after the kept pulls past its position. */
  #join(member: Member<B>, start: StreamStart): void {
    const session = this.#session ?? this.#startSession(start);
    member.mode = 'joined';
    member.queue = [];
    member.fullSince = undefined;
    session.joined.add(member);
    const only = new Set([member.collection]);
    for (const kept of session.kept) {
      this.#deliver(member, kept, this.#shape.split(kept.pull, only).get(member.collection), true);
    }
    this.#pump();
  }

  #startSession(start: StreamStart): Session<B> {
    const session: Session<B> = {
      resume: start,
      reopenedAt: undefined,
      head: start.kind === 'startAt' ? undefined : start.position,
      cursor: undefined,
      cursorFilter: undefined,
      readingWith: undefined,
      reading: undefined,
      kept: [],
      keptChanges: 0,
      joined: new Set(),
      stop: new AbortController(),
      timer: undefined,
    };
    this.#session = session;
    return session;
  }

  /**
   * The member's share of one shared pull: only what comes after what it was given already. A pull that
   * brings it nothing new (it is ahead of the shared stream) still gives it an empty pull at its own
   * position, so its loop is not left waiting (it sends what lingers on an empty pull); a kept pull being
   * replayed does not.
   */
  #deliver(member: Member<B>, kept: Kept<B>, part: B | undefined, replaying: boolean): void {
    const after = member.queued;
    if (after !== undefined && kept.to !== undefined && comparePositions(kept.to, after) <= 0) {
      if (!replaying) this.#offer(member, this.#shape.empty(after));
      return;
    }
    // A pull with nothing for this collection ends at another's change, perhaps: not a token its own
    // stream could resume after.
    let share = part ?? this.#shape.empty(kept.to && sharedPosition(kept.to));
    // A pull that began before the member's position (it joined from its own stream, or ahead of the shared
    // one) holds changes it has had.
    if (
      after !== undefined &&
      this.#shape.count(share) > 0 &&
      (kept.from === undefined || comparePositions(kept.from, after) < 0)
    ) {
      share = this.#shape.after(share, after);
    }
    // The share's position, not the pull's: it says how this mapping may resume from it (see Position).
    if (kept.to !== undefined) member.queued = this.#shape.position(share) ?? kept.to;
    this.#offer(member, share);
  }

  #offer(member: Member<B>, share: B): void {
    const waiter = member.waiter;
    if (waiter !== undefined) {
      member.waiter = undefined;
      waiter.resolve(share);
      return;
    }
    const last = member.queue.length - 1;
    const tail = member.queue[last];
    // An empty pull only moves the position, which the next share moves further: an idle mapping that is
    // not reading holds one pull, not one per shared pull.
    if (tail !== undefined && this.#shape.count(tail) === 0 && this.#shape.position(share) !== undefined) {
      member.queue[last] = share;
    } else {
      member.queue.push(share);
    }
    if (member.queue.length >= this.#queuePulls) member.fullSince ??= this.#clock.now();
  }

  #wait(member: Member<B>, maxEvents: number, signal: AbortSignal): Promise<B> {
    return new Promise<B>((resolve, reject) => {
      const onAbort = (): void => {
        if (member.waiter === waiter) member.waiter = undefined;
        reject(signal.reason as Error);
      };
      const waiter: Waiter<B> = {
        maxEvents,
        resolve: (pull) => {
          signal.removeEventListener('abort', onAbort);
          resolve(pull);
        },
        reject: (error) => {
          signal.removeEventListener('abort', onAbort);
          reject(error);
        },
      };
      member.waiter = waiter;
      signal.addEventListener('abort', onAbort, { once: true });
      this.#pump();
    });
  }

  /**
   * Reads the next shared pull when a joined mapping waits for one and every joined queue has room;
   * detaches the mappings whose queues stayed full longer than the bound.
   */
  #pump(): void {
    const session = this.#session;
    if (session === undefined || session.reading !== undefined || session.stop.signal.aborted) return;
    let maxEvents = 0;
    for (const member of session.joined) maxEvents = Math.max(maxEvents, member.waiter?.maxEvents ?? 0);
    if (maxEvents === 0 || this.#heldBack(session)) return;
    session.reading = this.#read(session, maxEvents);
  }

  /** Whether a full queue holds the shared stream back (after detaching the ones full for too long). */
  #heldBack(session: Session<B>): boolean {
    const now = this.#clock.now();
    let wakeAt = Number.POSITIVE_INFINITY;
    for (const member of [...session.joined]) {
      if (member.fullSince === undefined || member.queue.length < this.#queuePulls) continue;
      const due = member.fullSince + this.#slowAfterMs;
      if (due <= now) this.#detach(session, member);
      else wakeAt = Math.min(wakeAt, due);
    }
    if (wakeAt === Number.POSITIVE_INFINITY) return false;
    clearTimeout(session.timer);
    session.timer = setTimeout(() => {
      session.timer = undefined;
      this.#pump();
    }, wakeAt - now);
    return true;
  }

  /** The slow member goes back to its own stream, from the last pull its loop took; what it had queued is dropped. */
  #detach(session: Session<B>, member: Member<B>): void {
    session.joined.delete(member);
    member.mode = 'own';
    member.queue = [];
    member.fullSince = undefined;
    member.queued = member.taken;
    this.#log?.warn(
      'a mapping fell behind the shared change stream; it reads its own stream until it catches up',
      {
        collection: member.collection,
        queuedPulls: this.#queuePulls,
        slowAfterMs: this.#slowAfterMs,
      },
    );
    if (session.joined.size === 0) this.#end(session);
  }

  async #read(session: Session<B>, maxEvents: number): Promise<void> {
    const filter: ReadonlySet<string> = new Set(this.#open.keys());
    session.readingWith = filter;
    try {
      if (session.cursor === undefined || !sameSet(session.cursorFilter, filter)) {
        const previous = session.cursor;
        session.cursor = undefined;
        if (previous !== undefined) await this.#closeQuietly(previous, 'the shared stream');
        // Opened again with another filter, it starts at the newest position's cluster time, not after its
        // token: that may be a change of a collection the new filter leaves out, which MongoDB would not find.
        if (session.resume.kind === 'startAt' && session.head !== undefined) {
          session.reopenedAt = startPosition(session.resume);
        }
        session.cursor = await this.#shared.open(session.resume, [...filter].sort(), session.stop.signal);
        session.cursorFilter = filter;
        this.#log?.info('opened the shared change stream', {
          collections: filter.size,
          resumeToken: session.head?.token,
        });
      }
      const pull = await session.cursor.next(maxEvents, session.stop.signal);
      if (!session.stop.signal.aborted) this.#distribute(session, pull, filter);
    } catch (error) {
      if (!session.stop.signal.aborted) this.#fail(session, error);
    } finally {
      session.readingWith = undefined;
      session.reading = undefined;
      this.#pump();
    }
  }

  /** Keeps the pull for replay and gives every joined member its share. */
  #distribute(session: Session<B>, pull: B, filter: ReadonlySet<string>): void {
    const position = this.#shape.position(pull);
    const kept: Kept<B> = {
      from: session.reopenedAt ?? session.head,
      to: position ?? session.head,
      pull,
      filter,
      changes: this.#shape.count(pull),
    };
    session.reopenedAt = undefined;
    session.head = kept.to;
    if (position !== undefined) session.resume = resumeFrom(sharedPosition(position));
    this.#keep(session, kept);
    const collections = new Set([...session.joined].map((member) => member.collection));
    const parts = this.#shape.split(pull, collections);
    for (const member of session.joined) this.#deliver(member, kept, parts.get(member.collection), false);
  }

  #keep(session: Session<B>, kept: Kept<B>): void {
    session.kept.push(kept);
    session.keptChanges += kept.changes;
    while (
      session.kept.length > this.#retainedPulls ||
      (session.kept.length > 0 && session.keptChanges > this.#retainedChanges)
    ) {
      session.keptChanges -= session.kept.shift()?.changes ?? 0;
    }
  }

  /** The shared cursor failed: every joined member's next pull fails with its error; the session ends. */
  #fail(session: Session<B>, cause: unknown): void {
    // Adapters throw our own errors (classified); anything else is wrapped so it can be thrown again.
    const error = cause instanceof Error ? cause : new Error(errorMessage(cause), { cause });
    this.#log?.warn('the shared change stream failed; its mappings restart', {
      mappings: session.joined.size,
      err: error,
    });
    for (const member of session.joined) {
      member.mode = 'failed';
      member.failure = error;
      member.queue = [];
      const waiter = member.waiter;
      member.waiter = undefined;
      waiter?.reject(error);
    }
    session.joined.clear();
    this.#end(session);
  }

  /** The session ends: its pull in flight is aborted, then its cursor closed (tracked until done). */
  #end(session: Session<B>): void {
    if (this.#session === session) this.#session = undefined;
    session.stop.abort();
    clearTimeout(session.timer);
    const ending = (async () => {
      await session.reading;
      const cursor = session.cursor;
      session.cursor = undefined;
      if (cursor !== undefined) await this.#closeQuietly(cursor, 'the shared stream');
    })();
    this.#ending.add(ending);
    void ending.finally(() => this.#ending.delete(ending));
  }

  async #close(member: Member<B>): Promise<void> {
    if (member.mode === 'closed') return;
    const session = this.#session;
    const wasJoined = member.mode === 'joined';
    member.mode = 'closed';
    member.queue = [];
    const waiter = member.waiter;
    member.waiter = undefined;
    waiter?.reject(new Error(`the change cursor of ${member.collection} is closed`));
    this.#leave(member);
    if (wasJoined && session !== undefined) {
      session.joined.delete(member);
      // A full queue leaving may let the others read on.
      if (session.joined.size === 0) this.#end(session);
      else this.#pump();
    }
    const cursor = member.ownCursor;
    member.ownCursor = undefined;
    try {
      await cursor?.close();
    } finally {
      await Promise.all(this.#ending);
    }
  }

  /** The collection leaves the shared filter when its last cursor closes (at the next pull). */
  #leave(member: Member<B>): void {
    const count = (this.#open.get(member.collection) ?? 0) - 1;
    if (count > 0) this.#open.set(member.collection, count);
    else this.#open.delete(member.collection);
  }

  /**
   * Closes a cursor that is given up (replaced, or its mapping joined the shared stream): a failure to close
   * it is logged, not thrown, as nothing more is read from it either way.
   */
  async #closeQuietly(cursor: ChangeCursor<B>, what: string): Promise<void> {
    try {
      await cursor.close();
    } catch (error) {
      this.#log?.warn('could not close a change stream cursor', { of: what, err: error });
    }
  }
}

function sameSet(a: ReadonlySet<string> | undefined, b: ReadonlySet<string>): boolean {
  if (a?.size !== b.size) return false;
  for (const item of b) if (!a.has(item)) return false;
  return true;
}

/**
 * The position a stream start stands for: a start at a cluster time is a position before every change of
 * that time (an empty token sorts first), resumed at that time again (`shared`).
 */
function startPosition(start: StreamStart): Position {
  return start.kind === 'startAt'
    ? { token: '', clusterTime: start.clusterTime, shared: true }
    : start.position;
}
