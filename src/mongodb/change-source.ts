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

/** Server error codes meaning the resume point is gone from the oplog (or never was valid). */
const HISTORY_LOST_CODES = new Set([
  286 /* ChangeStreamHistoryLost */, 280 /* ChangeStreamFatalError */, 260 /* InvalidResumeToken */,
]);

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

  constructor(
    private readonly stream: ChangeStream<Document, Document>,
    private readonly maxAwaitMs: number,
  ) {}

  async next(maxEvents: number, signal: AbortSignal): Promise<ChangeBatch> {
    const onAbort = () => void this.stream.close();
    signal.addEventListener('abort', onAbort, { once: true });
    try {
      const events: ChangeEvent[] = [];
      const deadline = Date.now() + this.maxAwaitMs;
      let first = await this.stream.tryNext();
      while (first === null && Date.now() < deadline && !signal.aborted) {
        await sleep(Math.min(IDLE_POLL_MS, Math.max(0, deadline - Date.now())), undefined, { signal });
        first = await this.stream.tryNext();
      }
      if (first !== null) events.push(normalizeChangeEvent(first));
      while (first !== null && events.length < maxEvents && this.stream.bufferedCount() > 0) {
        const raw = await this.stream.tryNext();
        if (raw === null) break;
        events.push(normalizeChangeEvent(raw));
      }
      const lastEvent = events.at(-1);
      if (lastEvent) this.#last = lastEvent.clusterTime;
      return { events, position: this.position() };
    } catch (error) {
      throw wrapStreamError(error);
    } finally {
      signal.removeEventListener('abort', onAbort);
    }
  }

  /** The stream's resume token: the post-batch token when idle (on servers that send one). */
  private position(): Position | undefined {
    const token: unknown = this.stream.resumeToken;
    const data = isDocument(token) ? token._data : undefined;
    if (typeof data !== 'string') return undefined;
    const clusterTime = clusterTimeFromToken(data) ?? this.#last;
    return clusterTime ? { token: data, clusterTime } : undefined;
  }

  async close(): Promise<void> {
    await this.stream.close();
  }
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
    switch (start.kind) {
      case 'resumeAfter':
        options.resumeAfter = { _data: start.position.token };
        break;
      case 'startAfter':
        options.startAfter = { _data: start.position.token };
        break;
      case 'startAt':
        options.startAtOperationTime = new Timestamp({ t: start.clusterTime.t, i: start.clusterTime.i });
        break;
      default:
        start satisfies never;
    }
    return Promise.resolve(
      new MongoChangeCursor(this.collection.watch<Document, Document>([], options), maxAwaitMs),
    );
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
