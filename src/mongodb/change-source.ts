import { setTimeout as sleep } from 'node:timers/promises';
import {
  Timestamp,
  type ChangeStream,
  type ChangeStreamOptions,
  type Collection,
  type Document,
  type MongoClient,
} from 'mongodb';
import { ArchiverError, ERROR_CODES, errorMessage } from '../errors.js';
import { type ChangeEvent, type ClusterTime, type Position } from '../core/model.js';
import { type ChangeBatch, type ChangeCursor, type ChangeSource, type StreamStart } from '../core/ports.js';
import { isDocument } from '../base/bson-kind.js';
import {
  clusterTimeFromToken,
  normalizeChangeEvent,
  SplitEventAssembler,
  toClusterTime,
} from './change-event.js';
import { decodeAll, isInvalidUtf8Error, RAW_READ } from './raw-documents.js';
import { codeOf, MONGO_CODES, mongoBoundary, toMongoError } from './error-mapping.js';

export { HistoryLostError } from './error-mapping.js';

/**
 * MongoDB's refusal of `resumeAfter` with the token of an invalidate event (InvalidResumeToken 260, no error
 * label): "Attempting to resume a change stream using 'resumeAfter' is not allowed from an invalidate
 * notification". The position is fine; only `startAfter` may continue from it.
 */
export function isResumeAfterInvalidate(error: unknown): boolean {
  return (
    codeOf(error) === MONGO_CODES.InvalidResumeToken &&
    error instanceof Error &&
    /not allowed from an invalidate notification/i.test(error.message)
  );
}

export const DEFAULT_MAX_AWAIT_MS = 1_000;
/** Some servers (mongo-java-server) ignore maxAwaitTimeMS; an idle pull then polls at this pace. */
export const IDLE_POLL_MS = 100;

/** The server has no such aggregation stage (real MongoDB before 6.0.9, and mongo-java-server). */
const UNRECOGNIZED_STAGE = MONGO_CODES.UnrecognizedPipelineStage;
/** ChangeStreamFatalError: among others, a resume from a fragment of an event that no longer splits that way. */
const CHANGE_STREAM_FATAL = MONGO_CODES.ChangeStreamFatalError;
/** How long the read of one undecodable event may wait for it (it is known to be there). */
const MAX_RAW_READ_MS = 30_000;

/** Where one driver stream starts, in the driver's terms. */
export type DriverStart =
  { readonly resumeAfter: string } | { readonly startAfter: string } | { readonly startAt: ClusterTime };

export function driverStart(start: StreamStart): DriverStart {
  switch (start.kind) {
    case 'resumeAfter':
      return { resumeAfter: start.position.token };
    case 'startAfter':
      return { startAfter: start.position.token };
    case 'startAt':
      return { startAt: start.clusterTime };
    default:
      return start satisfies never;
  }
}

/** The `$changeStream` options of a start point (the same for `watch` and for a raw `aggregate`). */
export function startOptions(start: DriverStart): ChangeStreamOptions {
  if ('resumeAfter' in start) return { resumeAfter: { _data: start.resumeAfter } };
  if ('startAfter' in start) return { startAfter: { _data: start.startAfter } };
  return { startAtOperationTime: new Timestamp({ t: start.startAt.t, i: start.startAt.i }) };
}

/** The `_data` of a resume token (`{ _data }`), if it has one. */
export function tokenData(token: unknown): string | undefined {
  const data = isDocument(token) ? token._data : undefined;
  return typeof data === 'string' ? data : undefined;
}

/**
 * The change stream pipeline. `updateDescription` is projected away: the archiver reads the looked-up
 * `fullDocument`, and with it an update of a large document would make an event of twice its size, over
 * the 16 MB limit (BSONObjectTooLarge, which no resume gets past). Where the server has it,
 * `$changeStreamSplitLargeEvent` (which must be the last stage) splits what is still too large. `match`,
 * when given, comes first: the events it leaves out never leave the server (a database-level stream keeps
 * only the mapped collections'), and the post-batch resume token still moves past them.
 */
export function changeStreamPipeline(split: boolean, match?: Document): Document[] {
  return [
    ...(match ? [{ $match: match }] : []),
    { $project: { updateDescription: 0 } },
    ...(split ? [{ $changeStreamSplitLargeEvent: {} }] : []),
  ];
}

/** MongoDB 7.0 and later, and 6.0.9 and later on the 6.0 line, have `$changeStreamSplitLargeEvent`. */
export function hasSplitLargeEvent(version: readonly number[]): boolean {
  const [major = 0, minor = 0, patch = 0] = version;
  return major > 6 || (major === 6 && (minor > 0 || patch >= 9));
}

/** Opens (and opens again) the driver streams of one collection, with one pipeline for all of them. */
class CollectionStreams {
  constructor(
    private readonly collection: Collection,
    private readonly maxAwaitMs: number,
    /** Whether the pipeline ends with `$changeStreamSplitLargeEvent`. */
    public splitting: boolean,
    private readonly notice: (reason: string) => void,
  ) {}

  watch(start: DriverStart): ChangeStream<Document, Document> {
    return this.collection.watch<Document, Document>(changeStreamPipeline(this.splitting), {
      fullDocument: 'updateLookup',
      maxAwaitTimeMS: this.maxAwaitMs,
      batchSize: 1_000,
      ...startOptions(start),
    });
  }

  /** The first event after `start`, read as BSON bytes and decoded without loss; undefined if none came. */
  async readRaw(start: DriverStart, signal: AbortSignal): Promise<Document | undefined> {
    const stage = { fullDocument: 'updateLookup', ...startOptions(start) };
    const cursor = this.collection.aggregate(
      [{ $changeStream: stage }, ...changeStreamPipeline(this.splitting)],
      {
        ...RAW_READ,
        batchSize: 1,
      },
    );
    try {
      const deadline = Date.now() + MAX_RAW_READ_MS;
      for (;;) {
        const item: unknown = await cursor.tryNext();
        if (item !== null) return decodeAll([item])[0];
        if (Date.now() >= deadline) return undefined;
        await sleep(IDLE_POLL_MS, undefined, { signal });
      }
    } finally {
      await cursor.close();
    }
  }

  /** The server refused `$changeStreamSplitLargeEvent` (its version did not tell): stop asking for it. */
  splitRefused(error: unknown): void {
    this.splitting = false;
    this.notice(`the server refused $changeStreamSplitLargeEvent (${errorMessage(error)})`);
  }
}

class MongoChangeCursor implements ChangeCursor {
  #stream: ChangeStream<Document, Document>;
  /** Where the current driver stream started, and whether it has returned an event since. */
  #streamStart: DriverStart;
  #streamReturned = false;
  #last: ClusterTime | undefined;
  readonly #assembler = new SplitEventAssembler();
  /** Resume tokens of the fragments of the latest split event: never reported as a position. */
  #fragmentTokens = new Set<string>();
  /**
   * The latest position not inside or at the end of a split event. A checkpoint stays there rather than on
   * a fragment's token: MongoDB resumes from a fragment only if the event splits the same way again, which
   * a looked-up document that changed since does not (ChangeStreamFatalError).
   */
  #safe: Position | undefined;
  /** The safe position last read again after a refused resume from a fragment (once per position). */
  #refusedFrom: string | undefined;

  constructor(
    private readonly opener: CollectionStreams,
    start: StreamStart,
    private readonly maxAwaitMs: number,
  ) {
    this.#streamStart = driverStart(start);
    this.#stream = opener.watch(this.#streamStart);
    if (start.kind !== 'startAt') this.#safe = start.position;
  }

  async next(maxEvents: number, signal: AbortSignal): Promise<ChangeBatch> {
    const onAbort = () => void this.#stream.close();
    signal.addEventListener('abort', onAbort, { once: true });
    try {
      const events: ChangeEvent[] = [];
      const deadline = Date.now() + this.maxAwaitMs;
      while (!signal.aborted) {
        const raw = await this.#pull(signal);
        if (raw === null) {
          // Idle. The fragments of a split event follow one another: wait for the rest of one begun.
          if (!this.#assembler.pending && (events.length > 0 || Date.now() >= deadline)) break;
          await sleep(IDLE_POLL_MS, undefined, { signal });
          continue;
        }
        const whole = this.#collect(raw);
        if (whole === undefined) continue;
        events.push(whole);
        if (events.length >= maxEvents || this.#stream.bufferedCount() === 0) break;
      }
      const lastEvent = events.at(-1);
      if (lastEvent) this.#last = lastEvent.clusterTime;
      return { events, position: this.position() };
    } catch (error) {
      throw toMongoError(error);
    } finally {
      signal.removeEventListener('abort', onAbort);
    }
  }

  /** A whole event once all of it is in (fragments are held until then). */
  #collect(raw: Document): ChangeEvent | undefined {
    const split = raw.splitEvent !== undefined;
    const token = tokenData(raw._id);
    if (split && !this.#assembler.pending) this.#fragmentTokens = new Set();
    if (split && token !== undefined) this.#fragmentTokens.add(token);
    const whole = this.#assembler.add(raw);
    if (whole === undefined) return undefined;
    const event = normalizeChangeEvent(whole);
    if (split) return { ...event, split: true };
    this.#safe = { token: event.token, clusterTime: event.clusterTime };
    this.#refusedFrom = undefined;
    return event;
  }

  /** The next document of the stream, or null when it has none now. */
  async #pull(signal: AbortSignal): Promise<Document | null> {
    try {
      const raw = await this.#stream.tryNext();
      if (raw !== null) this.#streamReturned = true;
      return raw;
    } catch (error) {
      if (isInvalidUtf8Error(error)) return this.#readUndecodable(error, signal);
      if (isResumeAfterInvalidate(error) && 'resumeAfter' in this.#streamStart && !this.#streamReturned) {
        // A checkpoint on an invalidate saved without its mark (by the previous release): continue from it
        // the only way MongoDB allows.
        this.#reopen({ startAfter: this.#streamStart.resumeAfter });
        return null;
      }
      if (codeOf(error) === UNRECOGNIZED_STAGE && this.opener.splitting && !this.#streamReturned) {
        this.opener.splitRefused(error);
        this.#reopen(this.#streamStart);
        return null;
      }
      if (codeOf(error) === CHANGE_STREAM_FATAL && this.#atFragment() && this.#safe !== undefined) {
        // The driver resumed (after a network error, say) from a fragment's token and the server refused:
        // the looked-up document changed and the event no longer splits that way. Read it again from the
        // change before it; if that is refused too, the error stands.
        if (this.#refusedFrom === this.#safe.token) throw error;
        this.#refusedFrom = this.#safe.token;
        this.#assembler.reset();
        this.#reopen({ resumeAfter: this.#safe.token });
        return null;
      }
      throw error;
    }
  }

  /**
   * The driver refused to decode the next event (a string in it is not valid UTF-8) and closed its stream.
   * That event is read once more as BSON bytes and decoded without loss, and a new stream continues after
   * it: the same event can never fail the mapping again.
   */
  async #readUndecodable(error: unknown, signal: AbortSignal): Promise<Document> {
    const token = tokenData(this.#stream.resumeToken);
    const from: DriverStart =
      token === undefined
        ? this.#streamStart
        : 'startAfter' in this.#streamStart && !this.#streamReturned
          ? { startAfter: token }
          : { resumeAfter: token };
    const raw = await this.opener.readRaw(from, signal);
    const rawToken = raw === undefined ? undefined : tokenData(raw._id);
    if (raw === undefined || rawToken === undefined) throw error;
    this.#reopen({ resumeAfter: rawToken });
    this.#streamReturned = true;
    return raw;
  }

  /** Whether the stream stands on a fragment of a split event (inside one, or right after its last). */
  #atFragment(): boolean {
    const token = tokenData(this.#stream.resumeToken);
    return this.#assembler.pending || (token !== undefined && this.#fragmentTokens.has(token));
  }

  #reopen(start: DriverStart): void {
    // The driver closed the failed stream itself; closing it again only releases what is left, and a
    // failure to do so cannot matter to the new stream.
    void this.#stream.close().catch(() => undefined);
    this.#streamStart = start;
    this.#streamReturned = false;
    this.#stream = this.opener.watch(start);
  }

  /**
   * The stream's resume token (the post-batch token when idle, on servers that send one), except inside or
   * at the end of a split event, where it is the position before that event.
   */
  private position(): Position | undefined {
    const data = tokenData(this.#stream.resumeToken);
    if (data === undefined) return undefined;
    if (this.#fragmentTokens.has(data) || this.#assembler.pending) return this.#safe;
    const clusterTime = clusterTimeFromToken(data) ?? this.#last;
    if (!clusterTime) return undefined;
    this.#safe = { token: data, clusterTime };
    return this.#safe;
  }

  async close(): Promise<void> {
    await this.#stream.close();
  }
}

export interface MongoChangeSourceOptions {
  readonly maxAwaitMs?: number;
  /** Told once when the server cannot split events over 16 MB (a warning for the log). */
  readonly onNotice?: (message: string) => void;
}

/**
 * Change streams of one collection, pulled with `tryNext` (never event handlers), with updateLookup.
 * Events over 16 MB are split by the server where it can and put together again here; an event the driver
 * cannot decode (a string that is not valid UTF-8) is read as BSON bytes and kept without loss.
 */
export class MongoChangeSource implements ChangeSource {
  #streams: CollectionStreams | undefined;

  constructor(
    private readonly client: MongoClient,
    private readonly collection: Collection,
    private readonly options: MongoChangeSourceOptions = {},
  ) {}

  open(start: StreamStart, signal: AbortSignal): Promise<ChangeCursor> {
    return mongoBoundary(() => this.#open(start, signal));
  }

  async #open(start: StreamStart, signal: AbortSignal): Promise<ChangeCursor> {
    signal.throwIfAborted();
    const maxAwaitMs = this.options.maxAwaitMs ?? DEFAULT_MAX_AWAIT_MS;
    this.#streams ??= new CollectionStreams(
      this.collection,
      maxAwaitMs,
      await serverSplits(
        this.client,
        (reason) => {
          this.#notice(reason);
        },
        signal,
      ),
      (reason) => {
        this.#notice(reason);
      },
    );
    return new MongoChangeCursor(this.#streams, start, maxAwaitMs);
  }

  #notice(reason: string): void {
    this.options.onNotice?.(splitUnavailableNotice(reason));
  }

  /** The cluster time of the latest write (see currentClusterTime). */
  currentTime(signal: AbortSignal): Promise<ClusterTime> {
    return mongoBoundary(() => currentClusterTime(this.client, signal));
  }
}

/** The warning for a server without `$changeStreamSplitLargeEvent`; `reason` says how that was found out. */
export function splitUnavailableNotice(reason: string): string {
  return (
    `${reason} (MongoDB 7.0 and 6.0.9 have it): a change event still over 16 MB without its ` +
    'updateDescription cannot be read and stops the mapping'
  );
}

/**
 * Whether the server has `$changeStreamSplitLargeEvent`, by its version (a refusal is handled too);
 * `notice` is told the reason when it has not.
 */
export async function serverSplits(
  client: MongoClient,
  notice: (reason: string) => void,
  signal: AbortSignal,
): Promise<boolean> {
  signal.throwIfAborted();
  const info: Document = await client
    .db('admin')
    .command({ buildInfo: 1 })
    .catch(() => ({}));
  const version = Array.isArray(info.versionArray)
    ? (info.versionArray as unknown[]).map(Number)
    : String(info.version ?? '')
        .split('.')
        .map((part) => Number.parseInt(part, 10));
  if (hasSplitLargeEvent(version)) return true;
  notice(`MongoDB ${String(info.version ?? '(version unknown)')} has no $changeStreamSplitLargeEvent`);
  return false;
}

/**
 * The cluster time of the latest write: from `hello` (replica sets report lastWrite), else the reply's
 * operationTime, else the newest oplog entry (servers that report neither, such as mongo-java-server).
 */
export async function currentClusterTime(client: MongoClient, signal: AbortSignal): Promise<ClusterTime> {
  signal.throwIfAborted();
  const admin = client.db('admin');
  const hello: Document = await admin.command({ hello: 1 }).catch(() => admin.command({ isMaster: 1 }));
  const lastWrite: unknown = hello.lastWrite;
  if (isDocument(lastWrite)) {
    for (const key of ['majorityOpTime', 'opTime']) {
      const opTime = lastWrite[key];
      if (isDocument(opTime) && opTime.ts !== undefined) return toClusterTime(opTime.ts);
    }
  }
  if (hello.operationTime !== undefined) return toClusterTime(hello.operationTime);
  const [latest] = await client
    .db('local')
    .collection('oplog.rs')
    .find({}, { projection: { ts: 1 } })
    .sort({ $natural: -1 })
    .limit(1)
    .toArray();
  if (latest?.ts !== undefined) return toClusterTime(latest.ts);
  throw new ArchiverError(
    ERROR_CODES.config,
    'config-invalid',
    'cannot tell the cluster time of the MongoDB deployment (change streams need a replica set or sharded cluster)',
  );
}
