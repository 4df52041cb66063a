import { setTimeout as sleep } from 'node:timers/promises';
import {
  Long,
  MongoNetworkError,
  MongoServerSelectionError,
  type ClientSession,
  type Collection,
  type Db,
  type Document,
  type MongoClient,
} from 'mongodb';
import { errorMessage } from '../errors.js';
import { type ClusterTime, type Position } from '../core/model.js';
import {
  type ChangeCursor,
  type ChangeSource,
  type RawChange,
  type RawChangeBatch,
  type StreamStart,
} from '../core/ports.js';
import { isDocument } from '../base/bson-kind.js';
import { readTopLevelFields } from './bson-fields.js';
import {
  clusterTimeFromToken,
  MalformedChangeEventError,
  SplitEventAssembler,
  toClusterTime,
} from './change-event.js';
import {
  changeStreamPipeline,
  currentClusterTime,
  DEFAULT_MAX_AWAIT_MS,
  driverStart,
  IDLE_POLL_MS,
  isResumeAfterInvalidate,
  type DriverStart,
  type MongoChangeSourceOptions,
  serverSplits,
  splitUnavailableNotice,
  startOptions,
  tokenData,
} from './change-source.js';
import { codeOf, MONGO_CODES, mongoBoundary, toMongoError } from './error-mapping.js';

/** Events per aggregate or getMore reply, as the driver's `watch()` is asked for. */
const BATCH_SIZE = 1_000;
/**
 * How long closing (or reopening) may wait for killCursors. Best effort: a cursor left behind holds nothing
 * of ours, and the server drops an idle one after its cursor timeout (10 minutes by default).
 */
const MAX_KILL_CURSORS_MS = 5_000;
/** Wire version of MongoDB 4.4, from which the server labels the errors a change stream resumes after. */
const LABELLED_RESUME_WIRE_VERSION = 9;

/**
 * The driver's own resumable codes for servers before 4.4, which label nothing (GET_MORE_RESUMABLE_CODES in
 * the driver's `error.ts`).
 */
const UNLABELLED_RESUMABLE_CODES: ReadonlySet<number> = new Set([
  MONGO_CODES.HostUnreachable,
  MONGO_CODES.HostNotFound,
  MONGO_CODES.NetworkTimeout,
  MONGO_CODES.ShutdownInProgress,
  MONGO_CODES.PrimarySteppedDown,
  MONGO_CODES.ExceededTimeLimit,
  MONGO_CODES.SocketException,
  MONGO_CODES.NotWritablePrimary,
  MONGO_CODES.InterruptedAtShutdown,
  MONGO_CODES.InterruptedDueToReplStateChange,
  MONGO_CODES.NotPrimaryNoSecondaryOk,
  MONGO_CODES.NotPrimaryOrSecondary,
  MONGO_CODES.StaleShardVersion,
  MONGO_CODES.StaleEpoch,
  MONGO_CODES.StaleConfig,
  MONGO_CODES.RetryChangeStream,
  MONGO_CODES.FailedToSatisfyReadPreference,
  MONGO_CODES.CursorNotFound,
]);

/**
 * Node's codes for a connection that failed. The driver (7.9) wraps most socket failures in
 * MongoNetworkError, but passes some on as they are: a command written to a socket the server side has
 * already ended fails with Node's EPIPE error (seen when the connection is cut between two getMores).
 */
const SOCKET_ERROR_CODES: ReadonlySet<string> = new Set([
  'EPIPE',
  'ECONNRESET',
  'ECONNABORTED',
  'ECONNREFUSED',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
]);

function isSocketError(error: unknown): boolean {
  const code = error instanceof Error ? (error as { code?: unknown }).code : undefined;
  return typeof code === 'string' && SOCKET_ERROR_CODES.has(code);
}

/**
 * Whether a change stream resumes after `error`, as the driver decides for `watch()` (isResumableError in
 * its `error.ts`): network errors (Node's unwrapped socket errors too) and server selection failures always;
 * from MongoDB 4.4 (wire version 9) what the server labels `ResumableChangeStreamError`, and CursorNotFound;
 * before it, a fixed list of codes.
 */
export function isResumableChangeStreamError(error: unknown, wireVersion: number): boolean {
  if (error instanceof MongoNetworkError || error instanceof MongoServerSelectionError) return true;
  if (isSocketError(error)) return true;
  const code = codeOf(error);
  if (wireVersion >= LABELLED_RESUME_WIRE_VERSION) {
    if (code === MONGO_CODES.CursorNotFound) return true;
    const labels = error instanceof Error ? (error as { errorLabels?: unknown }).errorLabels : undefined;
    return Array.isArray(labels) && labels.includes('ResumableChangeStreamError');
  }
  return code !== undefined && UNLABELLED_RESUMABLE_CODES.has(code);
}

/** What one aggregate or getMore reply tells the cursor. */
export interface CursorReply {
  /** The server's cursor id: 0 once the server has closed the cursor (after an invalidate, say). */
  readonly id: bigint;
  /** The batch's events, each as its BSON bytes (slices of the reply: nothing of them decoded). */
  readonly batch: readonly Uint8Array[];
  /** The `_data` of the post-batch resume token, where the server sends one (MongoDB 4.0.7 and later). */
  readonly postBatchResumeToken: string | undefined;
}

/**
 * The server commands of one raw change stream. All of them run in one session: MongoDB refuses a getMore
 * from another session than the aggregate's.
 */
export interface ChangeStreamCommands {
  aggregate(pipeline: readonly Document[], batchSize: number, signal: AbortSignal): Promise<CursorReply>;
  getMore(id: bigint, batchSize: number, maxTimeMS: number, signal: AbortSignal): Promise<CursorReply>;
  killCursors(id: bigint, signal: AbortSignal): Promise<void>;
  /** Ends the session; nothing is run after it. */
  end(): Promise<void>;
}

/**
 * How replies to `aggregate` and `getMore` are decoded: the cursor document is, the documents of its batch
 * stay BSON bytes (bson hands each element of an array named here over as a slice), and the cursor id is a
 * bigint (an int64 that may not fit a number; sent back as it came).
 */
export const RAW_BATCH_OPTIONS = {
  fieldsAsRaw: { firstBatch: true, nextBatch: true },
  useBigInt64: true,
} as const;

/** The cursor's part of an aggregate or getMore reply decoded with RAW_BATCH_OPTIONS. */
export function cursorReply(reply: Document): CursorReply {
  const cursor: unknown = reply.cursor;
  if (!isDocument(cursor)) throw new Error('the change stream reply has no cursor document');
  const batch: unknown = cursor.firstBatch ?? cursor.nextBatch;
  if (!Array.isArray(batch) || !batch.every((item): item is Uint8Array => item instanceof Uint8Array)) {
    throw new Error('the change stream reply has no batch of BSON documents');
  }
  return { id: cursorId(cursor.id), batch, postBatchResumeToken: tokenData(cursor.postBatchResumeToken) };
}

function cursorId(id: unknown): bigint {
  if (typeof id === 'bigint') return id;
  if (typeof id === 'number' && Number.isSafeInteger(id)) return BigInt(id);
  if (id instanceof Long) return id.toBigInt();
  throw new Error(`the change stream reply has no usable cursor id (${String(id)})`);
}

/**
 * What a change stream watches: one collection, or every collection of its database (an `aggregate: 1` on
 * the database, whose cursor MongoDB names `<database>.$cmd.aggregate`).
 */
export type StreamTarget =
  { readonly kind: 'collection'; readonly collection: string } | { readonly kind: 'database' };

/** The collection part of the namespace of a database-level aggregate's cursor, for getMore and killCursors. */
const DATABASE_AGGREGATE_CURSOR = '$cmd.aggregate';

/**
 * The commands over `db.command`, in the stream's own session where the server has sessions (servers
 * without them, such as mongo-java-server, refuse an explicit one), always on the primary: a getMore must
 * reach the server that holds the cursor, and a command pins nothing by itself.
 */
class SessionCommands implements ChangeStreamCommands {
  /** `aggregate`'s target: the collection's name, or 1 for the whole database. */
  readonly #aggregate: string | 1;
  /** The collection part of the cursor's namespace. */
  readonly #cursorCollection: string;

  constructor(
    private readonly db: Db,
    target: StreamTarget,
    private readonly session: ClientSession | undefined,
  ) {
    this.#aggregate = target.kind === 'collection' ? target.collection : 1;
    this.#cursorCollection = target.kind === 'collection' ? target.collection : DATABASE_AGGREGATE_CURSOR;
  }

  async aggregate(
    pipeline: readonly Document[],
    batchSize: number,
    signal: AbortSignal,
  ): Promise<CursorReply> {
    const command = { aggregate: this.#aggregate, pipeline, cursor: { batchSize } };
    return cursorReply(await this.db.command(command, this.#options(signal)));
  }

  async getMore(id: bigint, batchSize: number, maxTimeMS: number, signal: AbortSignal): Promise<CursorReply> {
    const command = { getMore: id, collection: this.#cursorCollection, batchSize, maxTimeMS };
    return cursorReply(await this.db.command(command, this.#options(signal)));
  }

  async killCursors(id: bigint, signal: AbortSignal): Promise<void> {
    await this.db.command({ killCursors: this.#cursorCollection, cursors: [id] }, this.#options(signal));
  }

  async end(): Promise<void> {
    await this.session?.endSession();
  }

  #options(signal: AbortSignal) {
    return {
      ...RAW_BATCH_OPTIONS,
      readPreference: 'primary',
      signal,
      ...(this.session ? { session: this.session } : {}),
    } as const;
  }
}

/**
 * Whether the pipeline ends with `$changeStreamSplitLargeEvent`: shared by the cursors of one source, so
 * that a server's refusal is taken (and told) once.
 */
export class SplitStage {
  constructor(
    public enabled: boolean,
    private readonly notice: (reason: string) => void,
  ) {}

  refused(error: unknown): void {
    this.enabled = false;
    this.notice(`the server refused $changeStreamSplitLargeEvent (${errorMessage(error)})`);
  }
}

export interface RawChangeCursorOptions {
  readonly maxAwaitMs: number;
  /** The server's maxWireVersion: whether it labels resumable errors (see isResumableChangeStreamError). */
  readonly wireVersion: number;
  readonly split: SplitStage;
  /**
   * The events the server keeps (a `$match` right after `$changeStream`, see changeStreamPipeline), in every
   * aggregate the cursor runs, resumes included; every event when absent.
   */
  readonly match?: Document;
  /**
   * Once the server has closed the cursor after an `invalidate` (a database-level stream's, after
   * `dropDatabase`), the stream continues `startAfter` it, as one stream for every collection of the
   * database must (a re-created database is read on). Off for a collection's stream, whose reader ends at
   * the invalidate and opens anew.
   */
  readonly continueAfterInvalidate?: boolean;
}

/** The few fields of an event the cursor reads; the rest stays bytes. */
interface EventHeader {
  readonly token: string;
  readonly splitEvent: unknown;
  readonly clusterTime: ClusterTime | undefined;
}

const HEADER_FIELDS = ['_id', 'splitEvent', 'clusterTime'] as const;

function headerOf(bytes: Uint8Array): EventHeader {
  const fields = readTopLevelFields(bytes, HEADER_FIELDS);
  const token = tokenData(fields._id);
  if (token === undefined || token.length === 0) {
    throw new MalformedChangeEventError('change event without a resume token (_id._data)');
  }
  const time = fields.clusterTime;
  // mongo-java-server's invalidate after a drop has no cluster time; its token carries one.
  const clusterTime = time === undefined ? clusterTimeFromToken(token) : toClusterTime(time);
  return { token, splitEvent: fields.splitEvent, clusterTime };
}

/**
 * A change stream read with `aggregate` and `getMore` run by hand, each event kept as the BSON bytes the
 * server sent: what the driver's `watch()` does besides decoding (resuming, the post-batch position) is done
 * here, with what MongoChangeCursor adds (`startAfter` after a refused invalidate token, the split stage
 * refused, fragments held together and never a position).
 */
export class RawChangeCursor implements ChangeCursor<RawChangeBatch> {
  /** The server cursor: undefined until (re)opened by an aggregate; 0n once the server closed it. */
  #id: bigint | undefined;
  /** Cursors given up (a reopen, an interrupted command), killed before the next aggregate or on close. */
  #abandoned: bigint[] = [];
  /** Where the current server cursor started, and whether it has returned an event since. */
  #streamStart: DriverStart;
  #streamReturned = false;
  /** Reopened after a resumable error, and nothing read since: a second failure then stands. */
  #resumedUnread = false;
  /** The events of the latest reply not taken yet. */
  #buffer: readonly Uint8Array[] = [];
  #taken = 0;
  #postBatchToken: string | undefined;
  /** The token a reopen resumes from, as the driver keeps it: the last event's, or the post-batch token. */
  #resumeToken: string | undefined;
  #last: ClusterTime | undefined;
  /** The fragments of a split event read so far, as bytes; the assembler checks their order. */
  #fragments: Uint8Array[] = [];
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
  #closed = false;

  constructor(
    private readonly commands: ChangeStreamCommands,
    start: StreamStart,
    private readonly options: RawChangeCursorOptions,
  ) {
    this.#streamStart = driverStart(start);
    this.#resumeToken = startToken(this.#streamStart);
    if (start.kind !== 'startAt') this.#safe = start.position;
  }

  async next(maxEvents: number, signal: AbortSignal): Promise<RawChangeBatch> {
    try {
      return await this.#next(maxEvents, signal);
    } catch (error) {
      throw toMongoError(error);
    }
  }

  async #next(maxEvents: number, signal: AbortSignal): Promise<RawChangeBatch> {
    const changes: RawChange[] = [];
    try {
      await this.#fill(changes, maxEvents, signal);
    } catch (error) {
      // Changes taken while the rest of a split event was awaited are handed over when the wait is
      // aborted: the cursor has moved past them, and the next pull continues after them.
      if (!signal.aborted || changes.length === 0) throw error;
    }
    return { changes, position: this.#position() };
  }

  /** Takes changes into `changes` until there are `maxEvents`, the stream is idle, or maxAwait has passed. */
  async #fill(changes: RawChange[], maxEvents: number, signal: AbortSignal): Promise<void> {
    const deadline = Date.now() + this.options.maxAwaitMs;
    for (;;) {
      signal.throwIfAborted();
      const bytes = this.#buffer[this.#taken];
      if (bytes !== undefined) {
        this.#taken++;
        const change = this.#take(bytes);
        if (change !== undefined) changes.push(change);
        if (changes.length >= maxEvents) break;
        continue;
      }
      // Nothing left of the latest reply. A pull never ends inside a split event: its fragments follow
      // one another, so the rest of one begun is waited for.
      if (changes.length > 0 && !this.#assembler.pending) break;
      const fetched = await this.#fetch(signal);
      if (fetched !== 'idle') continue;
      if (!this.#assembler.pending && Date.now() >= deadline) break;
      // Some servers (mongo-java-server) answer a getMore at once whatever its maxTimeMS.
      await sleep(IDLE_POLL_MS, undefined, { signal });
    }
  }

  /** A whole change once all of it is in (the fragments of a split event are held until then). */
  #take(bytes: Uint8Array): RawChange | undefined {
    const header = headerOf(bytes);
    this.#streamReturned = true;
    this.#resumedUnread = false;
    // As the driver: the post-batch token once the reply's last event is taken, the event's before.
    const drained = this.#taken >= this.#buffer.length;
    this.#resumeToken = drained && this.#postBatchToken !== undefined ? this.#postBatchToken : header.token;
    const split = header.splitEvent !== undefined;
    if (split && !this.#assembler.pending) {
      this.#fragmentTokens = new Set();
      this.#fragments = [];
    }
    if (this.#assembler.add({ _id: { _data: header.token }, splitEvent: header.splitEvent }) === undefined) {
      this.#fragmentTokens.add(header.token);
      this.#fragments.push(bytes);
      return undefined;
    }
    if (split) {
      this.#fragmentTokens.add(header.token);
      const fragments = [...this.#fragments, bytes];
      this.#fragments = [];
      // The cluster time is in the first fragment, with the event's other small fields.
      this.#last = firstClusterTime(fragments) ?? this.#last;
      return fragments;
    }
    if (header.clusterTime === undefined) {
      throw new MalformedChangeEventError('change event without a usable clusterTime');
    }
    this.#last = header.clusterTime;
    this.#safe = { token: header.token, clusterTime: header.clusterTime };
    this.#refusedFrom = undefined;
    return [bytes];
  }

  /**
   * Runs the next command: an aggregate when no server cursor is open, a getMore otherwise. 'idle' when the
   * server had nothing; a failure the stream gets past reopens it ('reopened').
   */
  async #fetch(signal: AbortSignal): Promise<'events' | 'idle' | 'opened' | 'reopened'> {
    const id = this.#id;
    if (id === 0n) {
      // The server closes a change stream's cursor only at an invalidate, whose token is the last taken.
      const token = this.#resumeToken;
      if (!this.options.continueAfterInvalidate || this.#closed || token === undefined) return 'idle';
      this.#reopen({ startAfter: token });
      return 'reopened';
    }
    try {
      const reply =
        id === undefined
          ? await this.#aggregate(signal)
          : await this.commands.getMore(id, BATCH_SIZE, this.options.maxAwaitMs, signal);
      this.#id = reply.id;
      this.#buffer = reply.batch;
      this.#taken = 0;
      this.#postBatchToken = reply.postBatchResumeToken;
      if (reply.batch.length === 0 && reply.postBatchResumeToken !== undefined) {
        this.#resumeToken = reply.postBatchResumeToken;
      }
      // As the driver's change stream: it resumes again and again as long as each resume's aggregate
      // succeeds; only a failure of the command that resumed it is thrown.
      this.#resumedUnread = false;
      return reply.batch.length > 0 ? 'events' : id === undefined ? 'opened' : 'idle';
    } catch (error) {
      if (signal.aborted) {
        // The reply of the interrupted command is lost with its connection: the stream continues from
        // what was taken, on a new server cursor.
        this.#reopen(this.#resumeStart());
        throw error;
      }
      this.#recover(error);
      return 'reopened';
    }
  }

  async #aggregate(signal: AbortSignal): Promise<CursorReply> {
    await this.#killAbandoned();
    const stage = { fullDocument: 'updateLookup', ...startOptions(this.#streamStart) };
    const pipeline = [
      { $changeStream: stage },
      ...changeStreamPipeline(this.options.split.enabled, this.options.match),
    ];
    return this.commands.aggregate(pipeline, BATCH_SIZE, signal);
  }

  /** Reopens the stream where a failure allows it to go on; throws the failure otherwise. */
  #recover(error: unknown): void {
    if (isResumeAfterInvalidate(error) && 'resumeAfter' in this.#streamStart && !this.#streamReturned) {
      // A checkpoint on an invalidate saved without its mark (by the previous release): continue from it
      // the only way MongoDB allows.
      this.#reopen({ startAfter: this.#streamStart.resumeAfter });
      return;
    }
    if (
      codeOf(error) === MONGO_CODES.UnrecognizedPipelineStage &&
      this.options.split.enabled &&
      !this.#streamReturned
    ) {
      this.options.split.refused(error);
      this.#reopen(this.#streamStart);
      return;
    }
    if (codeOf(error) === MONGO_CODES.ChangeStreamFatalError && this.#atFragment() && this.#safe) {
      // A resume from a fragment's token that the server refused: the looked-up document changed and the
      // event no longer splits that way. Read it again from the change before it; if that is refused too,
      // the error stands.
      if (this.#refusedFrom === this.#safe.token) throw error;
      this.#refusedFrom = this.#safe.token;
      this.#assembler.reset();
      this.#fragments = [];
      this.#reopen({ resumeAfter: this.#safe.token });
      return;
    }
    if (isResumableChangeStreamError(error, this.options.wireVersion) && !this.#resumedUnread) {
      this.#resumedUnread = true;
      this.#reopen(this.#resumeStart());
      return;
    }
    throw error;
  }

  /** Where a reopened stream continues, as the driver's resume options: after the last token seen. */
  #resumeStart(): DriverStart {
    const token = this.#resumeToken;
    if (token === undefined) return this.#streamStart;
    return 'startAfter' in this.#streamStart && !this.#streamReturned
      ? { startAfter: token }
      : { resumeAfter: token };
  }

  /** Whether the stream stands on a fragment of a split event (inside one, or right after its last). */
  #atFragment(): boolean {
    const token = this.#resumeToken;
    return this.#assembler.pending || (token !== undefined && this.#fragmentTokens.has(token));
  }

  #reopen(start: DriverStart): void {
    if (this.#id !== undefined && this.#id !== 0n) this.#abandoned.push(this.#id);
    this.#id = undefined;
    this.#buffer = [];
    this.#taken = 0;
    this.#streamStart = start;
    this.#streamReturned = false;
    this.#resumeToken = startToken(start) ?? this.#resumeToken;
  }

  async #killAbandoned(): Promise<void> {
    const ids = this.#abandoned;
    this.#abandoned = [];
    for (const id of ids) await killQuietly(this.commands, id);
  }

  /**
   * The position after what was taken (the post-batch token once a reply is drained, on servers that send
   * one), except inside or at the end of a split event, where it is the position before that event.
   */
  #position(): Position | undefined {
    const data = this.#resumeToken;
    if (data === undefined) return undefined;
    if (this.#fragmentTokens.has(data) || this.#assembler.pending) return this.#safe;
    const clusterTime = clusterTimeFromToken(data) ?? this.#last;
    if (!clusterTime) return undefined;
    this.#safe = { token: data, clusterTime };
    return this.#safe;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#id !== undefined && this.#id !== 0n) this.#abandoned.push(this.#id);
    this.#id = 0n;
    try {
      await this.#killAbandoned();
    } finally {
      await this.commands.end();
    }
  }
}

/** The resume token a stream starts from, if it starts from one. */
function startToken(start: DriverStart): string | undefined {
  if ('resumeAfter' in start) return start.resumeAfter;
  if ('startAfter' in start) return start.startAfter;
  return undefined;
}

function firstClusterTime(fragments: readonly Uint8Array[]): ClusterTime | undefined {
  for (const fragment of fragments) {
    const time = readTopLevelFields(fragment, ['clusterTime']).clusterTime;
    if (time !== undefined) return toClusterTime(time);
  }
  return undefined;
}

/**
 * Kills a server cursor, best effort and bounded: a failure is deliberately swallowed, since a cursor left
 * behind holds nothing of ours and the server drops it after its cursor timeout.
 */
async function killQuietly(commands: ChangeStreamCommands, id: bigint): Promise<void> {
  await commands.killCursors(id, AbortSignal.timeout(MAX_KILL_CURSORS_MS)).catch(() => undefined);
}

/**
 * Opens raw cursors on one target (a collection, or a whole database) of one client: what it learns of the
 * server (split stage, wire version, sessions) it learns once, on the first open, for every cursor it opens.
 * MongoRawChangeSource and the database-level MongoDatabaseStreamSource both open their cursors here, so
 * that they differ only in their target and filter; every resume rule is the cursor's.
 */
export class RawChangeStreams {
  #server: ServerTraits | undefined;

  constructor(
    private readonly client: MongoClient,
    private readonly database: string,
    private readonly target: StreamTarget,
    private readonly options: MongoChangeSourceOptions = {},
  ) {}

  /** A cursor from `start`, filtered on the server by `match` (none: every event of the target). */
  async open(start: StreamStart, match: Document | undefined, signal: AbortSignal): Promise<RawChangeCursor> {
    signal.throwIfAborted();
    this.#server ??= await this.#traits(signal);
    const session = this.#server.sessions
      ? this.client.startSession({ causalConsistency: false })
      : undefined;
    const commands = new SessionCommands(this.client.db(this.database), this.target, session);
    return new RawChangeCursor(commands, start, {
      maxAwaitMs: this.options.maxAwaitMs ?? DEFAULT_MAX_AWAIT_MS,
      wireVersion: this.#server.wireVersion,
      split: this.#server.split,
      ...(match !== undefined && { match }),
      ...(this.target.kind === 'database' && { continueAfterInvalidate: true }),
    });
  }

  async #traits(signal: AbortSignal): Promise<ServerTraits> {
    const notice = (reason: string) => {
      this.options.onNotice?.(splitUnavailableNotice(reason));
    };
    const split = new SplitStage(await serverSplits(this.client, notice, signal), notice);
    const hello = await helloOf(this.client, signal);
    return {
      split,
      wireVersion: typeof hello.maxWireVersion === 'number' ? hello.maxWireVersion : 0,
      sessions: hello.logicalSessionTimeoutMinutes != null,
    };
  }
}

/** The server's `hello` (`isMaster` for servers older than 4.4.2 that lack it). */
export async function helloOf(client: MongoClient, signal: AbortSignal): Promise<Document> {
  const admin = client.db('admin');
  return admin.command({ hello: 1 }, { signal }).catch(() => admin.command({ isMaster: 1 }, { signal }));
}

/**
 * Change streams of one collection read as BSON bytes (RawChangeBatch): the same streams as
 * MongoChangeSource's (same pipeline, updateLookup, start points, resumes, split events put together), with
 * no event decoded on the thread that reads them; worker threads decode them. Invalid UTF-8 in an event is
 * no concern here: nothing reads its strings.
 */
export class MongoRawChangeSource implements ChangeSource<RawChangeBatch> {
  readonly #streams: RawChangeStreams;

  constructor(
    private readonly client: MongoClient,
    collection: Collection,
    options: MongoChangeSourceOptions = {},
  ) {
    this.#streams = new RawChangeStreams(
      client,
      collection.dbName,
      { kind: 'collection', collection: collection.collectionName },
      options,
    );
  }

  open(start: StreamStart, signal: AbortSignal): Promise<ChangeCursor<RawChangeBatch>> {
    return mongoBoundary(() => this.#streams.open(start, undefined, signal));
  }

  /** The cluster time of the latest write (see currentClusterTime). */
  currentTime(signal: AbortSignal): Promise<ClusterTime> {
    return mongoBoundary(() => currentClusterTime(this.client, signal));
  }
}

/** What a source learns of its server once. */
interface ServerTraits {
  readonly split: SplitStage;
  readonly wireVersion: number;
  /** Whether the server has sessions (`logicalSessionTimeoutMinutes` in `hello`, as the driver decides). */
  readonly sessions: boolean;
}

/**
 * Why change streams cannot be read raw on this deployment, or undefined when they can. The raw cursor
 * runs its `getMore`s as commands of their own, which the driver routes anew each time: on a replica set
 * they go to the primary that holds the cursor, but behind several mongos routers or a load balancer a
 * `getMore` may reach another router, which does not know the cursor; and a connection string that reads
 * from secondaries would have the raw cursor read from the primary. There the driver's own change stream
 * (which pins its cursor to its server and honours the read preference) is read instead, decoded on the
 * reading thread.
 */
export async function rawChangeStreamsUnavailable(
  client: MongoClient,
  signal: AbortSignal,
): Promise<string | undefined> {
  if (client.options.loadBalanced) return 'the connection goes through a load balancer';
  // The raw cursor reads from the primary; the driver's follows the connection string's read preference
  // (secondaries, analytics nodes), which it keeps.
  const mode = client.readPreference.mode;
  if (mode !== 'primary') return `the connection string reads from ${mode} (readPreference)`;
  const hello = await helloOf(client, signal);
  if (hello.msg === 'isdbgrid') return 'the deployment is a sharded cluster (mongos)';
  return undefined;
}
