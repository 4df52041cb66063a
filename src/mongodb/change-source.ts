import { setTimeout as sleep } from 'node:timers/promises';
import {
  Timestamp,
  type ChangeStream,
  type ChangeStreamOptions,
  type Collection,
  type Document,
  type MongoClient,
} from 'mongodb';
import { ArchiverError, ERROR_CODES } from '../errors.js';
import { type ChangeEvent, type ClusterTime, type Position } from '../core/model.js';
import { type ChangeBatch, type ChangeCursor, type ChangeSource, type StreamStart } from '../core/ports.js';
import { isDocument } from '../transform/bson-kind.js';
import { clusterTimeFromToken, normalizeChangeEvent, toClusterTime } from './change-event.js';

const INVALID_RESUME_TOKEN = 260;

/** Server error codes meaning the resume point is gone from the oplog (or never was valid). */
const HISTORY_LOST_CODES = new Set([
  286 /* ChangeStreamHistoryLost */,
  280 /* ChangeStreamFatalError */,
  INVALID_RESUME_TOKEN,
]);

/**
 * MongoDB's refusal of `resumeAfter` with the token of an invalidate event (InvalidResumeToken 260, no error
 * label): "Attempting to resume a change stream using 'resumeAfter' is not allowed from an invalidate
 * notification". The position is fine; only `startAfter` may continue from it.
 */
export function isResumeAfterInvalidate(error: unknown): boolean {
  return (
    codeOf(error) === INVALID_RESUME_TOKEN &&
    error instanceof Error &&
    /not allowed from an invalidate notification/i.test(error.message)
  );
}

export const DEFAULT_MAX_AWAIT_MS = 1_000;
/** Some servers (mongo-java-server) ignore maxAwaitTimeMS; an idle pull then polls at this pace. */
const IDLE_POLL_MS = 100;

/** The resume point is no longer in the oplog: per-mapping policy decides (fail or resnapshot). */
export class HistoryLostError extends ArchiverError {
  constructor(message: string, options?: ErrorOptions) {
    super(ERROR_CODES.historyLost, message, options);
  }
}

/** The server's numeric error code carried by a driver error, if any. */
export function codeOf(error: unknown): number | undefined {
  const code = isDocument(error) || error instanceof Error ? (error as { code?: unknown }).code : undefined;
  return typeof code === 'number' ? code : undefined;
}

/** Wraps driver errors at the boundary: a lost history gets its own type, the rest keep their cause. */
export function wrapStreamError(error: unknown): unknown {
  const code = codeOf(error);
  if (code !== undefined && HISTORY_LOST_CODES.has(code)) {
    return new HistoryLostError(
      `the change stream cannot resume: its position is no longer in the oplog (code ${code}: ${(error as Error).message})`,
      { cause: error },
    );
  }
  return error;
}

class MongoChangeCursor implements ChangeCursor {
  #last: ClusterTime | undefined;
  #stream: ChangeStream<Document, Document>;
  /**
   * Opens the same stream with `startAfter`, for a `resumeAfter` the server refuses because its position is
   * an invalidate (a checkpoint saved by a release that did not mark invalidates). Dropped once the stream
   * delivered: the server accepted the start then.
   */
  #startAfter: (() => ChangeStream<Document, Document>) | undefined;

  constructor(
    stream: ChangeStream<Document, Document>,
    private readonly maxAwaitMs: number,
    startAfter?: () => ChangeStream<Document, Document>,
  ) {
    this.#stream = stream;
    this.#startAfter = startAfter;
  }

  async next(maxEvents: number, signal: AbortSignal): Promise<ChangeBatch> {
    try {
      const batch = await this.#pull(maxEvents, signal);
      this.#startAfter = undefined;
      return batch;
    } catch (error) {
      const startAfter = this.#startAfter;
      this.#startAfter = undefined;
      if (!startAfter || !isResumeAfterInvalidate(error)) throw wrapStreamError(error);
      await this.#stream.close().catch(ignoreCloseError);
      this.#stream = startAfter();
      return this.next(maxEvents, signal);
    }
  }

  async #pull(maxEvents: number, signal: AbortSignal): Promise<ChangeBatch> {
    const stream = this.#stream;
    const onAbort = () => void stream.close();
    signal.addEventListener('abort', onAbort, { once: true });
    try {
      const events: ChangeEvent[] = [];
      const deadline = Date.now() + this.maxAwaitMs;
      let first = await stream.tryNext();
      while (first === null && Date.now() < deadline && !signal.aborted) {
        await sleep(Math.min(IDLE_POLL_MS, Math.max(0, deadline - Date.now())), undefined, { signal });
        first = await stream.tryNext();
      }
      if (first !== null) events.push(normalizeChangeEvent(first));
      while (first !== null && events.length < maxEvents && stream.bufferedCount() > 0) {
        const raw = await stream.tryNext();
        if (raw === null) break;
        events.push(normalizeChangeEvent(raw));
      }
      const lastEvent = events.at(-1);
      if (lastEvent) this.#last = lastEvent.clusterTime;
      return { events, position: this.position() };
    } finally {
      signal.removeEventListener('abort', onAbort);
    }
  }

  /** The stream's resume token: the post-batch token when idle (on servers that send one). */
  private position(): Position | undefined {
    const token: unknown = this.#stream.resumeToken;
    const data = isDocument(token) ? token._data : undefined;
    if (typeof data !== 'string') return undefined;
    const clusterTime = clusterTimeFromToken(data) ?? this.#last;
    return clusterTime ? { token: data, clusterTime } : undefined;
  }

  async close(): Promise<void> {
    await this.#stream.close();
  }
}

function startOptions(start: StreamStart): ChangeStreamOptions {
  switch (start.kind) {
    case 'resumeAfter':
      return { resumeAfter: { _data: start.position.token } };
    case 'startAfter':
      return { startAfter: { _data: start.position.token } };
    case 'startAt':
      return { startAtOperationTime: new Timestamp({ t: start.clusterTime.t, i: start.clusterTime.i }) };
    default:
      return start satisfies never;
  }
}

/** Closing a stream that failed to start has nothing left to do. */
function ignoreCloseError(): void {
  // Deliberately swallowed: the stream is replaced either way.
}

export interface MongoChangeSourceOptions {
  readonly maxAwaitMs?: number;
}

/** Change streams of one collection, pulled with `tryNext` (never event handlers), with updateLookup. */
export class MongoChangeSource implements ChangeSource {
  constructor(
    private readonly client: MongoClient,
    private readonly collection: Collection,
    private readonly options: MongoChangeSourceOptions = {},
  ) {}

  open(start: StreamStart, signal: AbortSignal): Promise<ChangeCursor> {
    signal.throwIfAborted();
    const maxAwaitMs = this.options.maxAwaitMs ?? DEFAULT_MAX_AWAIT_MS;
    const options: ChangeStreamOptions = {
      fullDocument: 'updateLookup',
      maxAwaitTimeMS: maxAwaitMs,
      batchSize: 1_000,
    };
    const watch = (from: StreamStart) =>
      this.collection.watch<Document, Document>([], { ...options, ...startOptions(from) });
    const fallback =
      start.kind === 'resumeAfter'
        ? () => watch({ kind: 'startAfter', position: start.position })
        : undefined;
    return Promise.resolve(new MongoChangeCursor(watch(start), maxAwaitMs, fallback));
  }

  /**
   * The cluster time of the latest write: from `hello` (replica sets report lastWrite), else the reply's
   * operationTime, else the newest oplog entry (servers that report neither, such as mongo-java-server).
   */
  async currentTime(signal: AbortSignal): Promise<ClusterTime> {
    signal.throwIfAborted();
    const admin = this.client.db('admin');
    const hello: Document = await admin.command({ hello: 1 }).catch(() => admin.command({ isMaster: 1 }));
    const lastWrite: unknown = hello.lastWrite;
    if (isDocument(lastWrite)) {
      for (const key of ['majorityOpTime', 'opTime']) {
        const opTime = lastWrite[key];
        if (isDocument(opTime) && opTime.ts !== undefined) return toClusterTime(opTime.ts);
      }
    }
    if (hello.operationTime !== undefined) return toClusterTime(hello.operationTime);
    const [latest] = await this.client
      .db('local')
      .collection('oplog.rs')
      .find({}, { projection: { ts: 1 } })
      .sort({ $natural: -1 })
      .limit(1)
      .toArray();
    if (latest?.ts !== undefined) return toClusterTime(latest.ts);
    throw new ArchiverError(
      ERROR_CODES.config,
      'cannot tell the cluster time of the MongoDB deployment (change streams need a replica set or sharded cluster)',
    );
  }
}
