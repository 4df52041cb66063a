import { managedwriter, type protos } from '@google-cloud/bigquery-storage';
import { abortable } from '../core/deadline.js';
import { BigQueryError } from '../errors.js';
import { type BigQueryClients } from './client.js';
import { toBigQueryError } from './error-mapping.js';

export type AppendRowsResponse = protos.google.cloud.bigquery.storage.v1.IAppendRowsResponse;
export type DescriptorProto = protos.google.protobuf.IDescriptorProto;
/** The library's connection type, which its package does not export by name. */
type StreamConnection = Awaited<ReturnType<BigQueryClients['writerClient']['createStreamConnection']>>;

const TRACE_ID = 'mongo-bigquery-archiver';
export const GRPC_CANCELLED = 1;
export const GRPC_DEADLINE_EXCEEDED = 4;
export const GRPC_INTERNAL = 13;
const GRPC_UNAVAILABLE = 14;

/** A non-OK `google.rpc.Status` (or a failure of our own about a request), with its gRPC code for classification. */
export class AppendStatusError extends Error {
  readonly code: number;

  constructor(code: number, message: string) {
    super(message);
    this.name = 'AppendStatusError';
    this.code = code;
  }
}

export interface StorageWriteConnectionOptions {
  readonly writerClient: BigQueryClients['writerClient'];
  /** `projects/<p>/datasets/<d>/tables/<t>`, identifiers already validated. */
  readonly destinationTable: string;
  /** Deadline of the GetWriteStream call that opens the stream. */
  readonly openTimeoutMs: number;
  /** How long an append may go unanswered before it fails as retryable and the connection is dropped. */
  readonly appendTimeoutMs: number;
  /**
   * How long the connection may stay open with nothing sent and nothing awaited before it is closed; the next
   * append opens it again. Undefined: it stays open until `close`. Delivery is not affected: only a
   * connection with no append in flight or waiting to be sent is closed.
   */
  readonly idleMs?: number;
  /** Told +1 when the connection opens and -1 when it closes, whatever the cause (metrics). */
  readonly onOpenChange?: (delta: 1 | -1) => void;
}

/** An append sent on the open connection and not answered yet. */
interface Pending {
  /** The connection it was sent on. */
  readonly writer: managedwriter.Writer;
  readonly answer: Promise<AppendRowsResponse>;
  /** Fails the append at once (close, or the connection dropped under it). */
  readonly giveUp: (error: Error) => void;
}

/**
 * One connection (one bidirectional AppendRows stream) to a table's default stream, with several appends
 * outstanding at once. BigQuery answers a stream's requests in the order they were sent, so the appends in
 * flight form a FIFO: the oldest is answered first, and its deadline is the first to pass.
 *
 * Each append has a deadline of its own (`appendTimeoutMs`). When it passes, the connection is presumed
 * broken: it is dropped (the next append opens a new one), the late append fails as DEADLINE_EXCEEDED, and
 * the appends sent after it on the same connection fail as UNAVAILABLE (their answers would come behind the
 * missing one, on a stream that is gone). Both are retryable: the caller sends the rows again, which the
 * views absorb should they have landed (same `_event_id`).
 *
 * The writer schema (descriptor) is bound to the connection: requests with another descriptor wait until
 * every append in flight is answered, then the connection switches (the library reopens the stream) and
 * they go out. Sends leave in the order they were made, a switch included, so none overtakes another.
 *
 * With `idleMs`, a connection left with nothing to send or to await for that long is closed, so that a
 * daemon of many quiet tables does not hold a stream per table on BigQuery's side (each counts against the
 * project's concurrent connections); the next append opens it again, as after a deadline.
 */
export class StorageWriteConnection {
  readonly #o: StorageWriteConnectionOptions;
  #writer: managedwriter.Writer | undefined;
  /** The library's connection under `#writer`, forgotten by the client when `#writer` is dropped. */
  #stream: StreamConnection | undefined;
  /** The descriptor the open connection's requests carry. */
  #inUse: DescriptorProto | undefined;
  /** The descriptor of the latest send queued: what the connection will carry once the queue is through. */
  #target: DescriptorProto | undefined;
  /** Appends sent on the open connection and not answered or given up yet, oldest first. */
  readonly #pending: Pending[] = [];
  /** Sends waiting for their turn (an open or a descriptor switch ahead of them). */
  #queued = 0;
  /** Every send, switch and open runs after the one before: the order requests leave in. */
  #turns: Promise<unknown> = Promise.resolve();
  #drained: (() => void)[] = [];
  #closed = false;
  /** Armed while the connection is open and has nothing to do (see `idleMs`). */
  #idleTimer: NodeJS.Timeout | undefined;

  constructor(options: StorageWriteConnectionOptions) {
    this.#o = options;
  }

  /** Appends sent and not answered yet. */
  get pending(): number {
    return this.#pending.length;
  }

  /** Appends in flight or waiting to be sent: how busy this connection is. */
  get load(): number {
    return this.#pending.length + this.#queued;
  }

  /** The writer schema this connection carries, or will once what is queued is sent (undefined: not used yet). */
  get descriptor(): DescriptorProto | undefined {
    return this.#target ?? this.#inUse;
  }

  /**
   * Sends the rows (serialized with `descriptor`) and resolves with BigQuery's answer. Does not wait for
   * earlier appends to be answered, only for them to be sent. An aborted caller stops waiting at once; the
   * request, if sent, stays in flight until answered or past its deadline.
   */
  async append(
    serialized: readonly Uint8Array[],
    descriptor: DescriptorProto,
    signal?: AbortSignal,
  ): Promise<AppendRowsResponse> {
    signal?.throwIfAborted();
    this.#assertOpen();
    this.#target = descriptor;
    this.#queued++;
    this.#disarmIdle();
    const sent = this.#turn(async () => {
      try {
        // A caller that gave up while waiting for its turn sends nothing.
        signal?.throwIfAborted();
        const writer = await this.#ready(descriptor);
        // Wrapped: the next turn must not wait for the answer, only for the request to leave.
        return {
          answer: this.#track(writer, writer.appendRows({ serializedRows: [...serialized] }).getResult()),
        };
      } finally {
        this.#queued--;
        // Nothing sent after all (an abort, a failed open): the connection may be idle again.
        this.#armIdle();
      }
    });
    const { answer } = await abortable(sent, signal);
    return abortable(answer, signal);
  }

  /**
   * From now on requests carry `descriptor`: once every append in flight is answered, the open connection
   * switches to it (a connection not open yet takes it when it opens).
   */
  async use(descriptor: DescriptorProto): Promise<void> {
    this.#assertOpen();
    this.#target = descriptor;
    await this.#turn(async () => {
      if (this.#writer !== undefined) await this.#ready(descriptor);
      this.#armIdle();
    });
  }

  /** Waits until no append is in flight, at most `timeoutMs`; false if cut short. */
  async drain(timeoutMs = Number.POSITIVE_INFINITY): Promise<boolean> {
    if (this.#pending.length === 0) return true;
    const drained = new Promise<boolean>((resolve) => {
      this.#drained.push(() => {
        resolve(true);
      });
    });
    if (!Number.isFinite(timeoutMs)) return drained;
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<boolean>((resolve) => {
      timer = setTimeout(() => {
        resolve(false);
      }, timeoutMs);
    });
    try {
      return await Promise.race([drained, late]);
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Refuses new appends, waits at most `timeoutMs` for the ones in flight (a caller that stopped waiting
   * may have left some; an answer on its way gets a chance to arrive), gives up the rest, and closes.
   */
  async close(timeoutMs: number): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#disarmIdle();
    if (!(await this.drain(timeoutMs))) {
      this.#failPending(
        () =>
          new AppendStatusError(
            GRPC_CANCELLED,
            `writer closed with no answer to an append after ${timeoutMs} ms`,
          ),
      );
    }
    this.#dropWriter();
  }

  /** Closes the open connection, if any: the next append opens a new one. */
  #dropWriter(): void {
    const writer = this.#writer;
    const stream = this.#stream;
    if (writer === undefined) return;
    this.#writer = undefined;
    this.#stream = undefined;
    this.#inUse = undefined;
    writer.close();
    if (stream !== undefined) forgetStreamConnection(this.#o.writerClient, stream);
    this.#o.onOpenChange?.(-1);
  }

  /** Starts the idle countdown when the connection is open and has nothing to send or await. */
  #armIdle(): void {
    const idleMs = this.#o.idleMs;
    if (idleMs === undefined || this.#closed || this.#writer === undefined || this.load > 0) return;
    this.#disarmIdle();
    this.#idleTimer = setTimeout(() => {
      this.#idleTimer = undefined;
      void this.#closeIdle();
    }, idleMs);
    // An idle connection must not keep the process alive for its countdown.
    this.#idleTimer.unref();
  }

  #disarmIdle(): void {
    clearTimeout(this.#idleTimer);
    this.#idleTimer = undefined;
  }

  /**
   * Closes the connection if it is still idle once its turn comes: an append made meanwhile (waiting behind
   * this turn, or sent) keeps it open, and in-flight appends are never cut.
   */
  #closeIdle(): Promise<void> {
    return this.#turn(() => {
      if (this.load === 0 && !this.#closed) this.#dropWriter();
      return Promise.resolve();
    });
  }

  #assertOpen(): void {
    if (this.#closed) {
      throw new BigQueryError('fatal', `Storage Write connection to ${this.#o.destinationTable} is closed`);
    }
  }

  /** Runs `task` after every turn queued before it; a failed turn does not stop the ones after it. */
  #turn<T>(task: () => Promise<T>): Promise<T> {
    const result = this.#turns.then(task);
    this.#turns = result.catch(() => undefined);
    return result;
  }

  /** The open connection, carrying `descriptor`: opened if needed, switched (once drained) if it carries another. */
  async #ready(descriptor: DescriptorProto): Promise<managedwriter.Writer> {
    this.#assertOpen();
    if (this.#writer !== undefined && this.#inUse !== descriptor) {
      // The server binds a connection to the writer schema of its first request, and answers the requests
      // in flight on it; the library reopens the stream on a new descriptor. So let them be answered first.
      await this.drain();
      this.#assertOpen();
      // A deadline may have dropped the connection meanwhile: then it reopens below, with `descriptor`.
      const drained = this.#openNow();
      if (drained !== undefined) {
        drained.setProtoDescriptor(descriptor);
        this.#inUse = descriptor;
      }
    }
    return this.#writer ?? (await this.#open(descriptor));
  }

  /** The open connection, read anew (after a wait, in which a deadline may have dropped it). */
  #openNow(): managedwriter.Writer | undefined {
    return this.#writer;
  }

  async #open(descriptor: DescriptorProto): Promise<managedwriter.Writer> {
    const { writerClient, destinationTable, openTimeoutMs } = this.#o;
    try {
      // Google's Go client asks for the default stream before appending; goccy's emulator only creates it
      // in that call. BigQuery answers it like any stream lookup.
      await writerClient.getWriteStream(
        { streamId: `${destinationTable}/streams/_default` },
        { timeout: openTimeoutMs },
      );
      const connection = await writerClient.createStreamConnection({
        streamId: managedwriter.DefaultStream,
        destinationTable,
      });
      // A failed request rejects its pending write; without a listener the connection's 'error' event would
      // be thrown from the event emitter. A broken connection is reopened by the library on the next append.
      connection.onConnectionError(reportedThroughPendingWrite);
      const writer = new managedwriter.Writer({ connection, protoDescriptor: descriptor, traceId: TRACE_ID });
      if (this.#closed) {
        writer.close();
        forgetStreamConnection(writerClient, connection);
        this.#assertOpen();
      }
      this.#writer = writer;
      this.#stream = connection;
      this.#inUse = descriptor;
      this.#o.onOpenChange?.(1);
      return writer;
    } catch (error) {
      throw toBigQueryError(error, `Storage Write: opening the default stream of ${destinationTable}`);
    }
  }

  /**
   * The request's answer, or a failure once its deadline passed or the connection was dropped under it;
   * kept in the FIFO until then. The deadline belongs to the request, not to its caller's wait: a caller that
   * stops waiting (an abort) leaves it running, so drain and close never wait for ever.
   */
  #track(writer: managedwriter.Writer, result: Promise<AppendRowsResponse>): Promise<AppendRowsResponse> {
    const timer = setTimeout(() => {
      this.#timedOut(writer, entry);
    }, this.#o.appendTimeoutMs);
    let giveUp: (error: Error) => void = () => undefined;
    const cut = new Promise<never>((_, reject) => {
      giveUp = (error) => {
        clearTimeout(timer);
        reject(error);
      };
    });
    const answer = Promise.race([result, cut]);
    const entry: Pending = { writer, answer, giveUp };
    this.#pending.push(entry);
    const settled = () => {
      clearTimeout(timer);
      const index = this.#pending.indexOf(entry);
      if (index >= 0) this.#pending.splice(index, 1);
      if (this.#pending.length === 0) for (const wake of this.#drained.splice(0)) wake();
      this.#armIdle();
    };
    answer.then(settled, settled);
    // Nobody may be waiting any more (an aborted caller): a late failure must not go unhandled.
    answer.catch(() => undefined);
    return answer;
  }

  /**
   * No answer in time: the connection is presumed broken. Drop it (the next append opens a new one) and fail
   * the late append; the ones behind it on this connection cannot be answered any more either. If any did
   * land, the retry writes the same rows again, which the views absorb (same `_event_id`).
   */
  #timedOut(writer: managedwriter.Writer, late: Pending): void {
    const behind = this.#pending.filter((entry) => entry !== late && entry.writer === writer);
    if (this.#writer === writer) this.#dropWriter();
    late.giveUp(
      new AppendStatusError(
        GRPC_DEADLINE_EXCEEDED,
        `no answer to an append within ${this.#o.appendTimeoutMs} ms`,
      ),
    );
    for (const entry of behind) {
      entry.giveUp(
        new AppendStatusError(
          GRPC_UNAVAILABLE,
          `connection dropped: an earlier append on it had no answer within ${this.#o.appendTimeoutMs} ms`,
        ),
      );
    }
  }

  #failPending(error: () => Error): void {
    for (const entry of [...this.#pending]) entry.giveUp(error());
  }
}

/**
 * Removes a closed StreamConnection from its WriterClient's list. The client keeps every connection it
 * created in a private list (`_connections.connectionList`, library 5.x) until the client itself is closed,
 * and closing a Writer or StreamConnection does not take it out: without this, each connection dropped (idle
 * for `idleMs`, or past an append's deadline) would stay referenced, with its listeners, for the daemon's
 * lifetime. The library has no public way to do it. Reusing one StreamConnection would avoid the list for
 * the idle case only: after a deadline the library still holds the unanswered writes of the old stream, and
 * the first answers on a reopened one would be matched to them. Where the list is not found (another library
 * version), nothing is done.
 */
function forgetStreamConnection(
  writerClient: BigQueryClients['writerClient'],
  connection: StreamConnection,
): void {
  const list = (writerClient as unknown as { _connections?: { connectionList?: unknown } })._connections
    ?.connectionList;
  if (!Array.isArray(list)) return;
  const index = list.indexOf(connection);
  if (index >= 0) list.splice(index, 1);
}

function reportedThroughPendingWrite(): void {
  // Deliberately empty: the error reaches the caller as the rejection of the append it belongs to.
}
