import { createServer, connect, type AddressInfo, type Server, type Socket } from 'node:net';
import { deserialize, type Document } from 'bson';

/*
 * A loopback proxy in front of the MongoDB peer that makes its change streams wait as a real server's do.
 *
 * mongo-java-server answers a change stream's getMore at once, empty, whatever its `maxTimeMS` (the driver sends
 * the stream's maxAwaitTimeMS there), so a client busy-polls it. A real server holds an empty getMore until an
 * event comes or `maxTimeMS` runs out, and the connection carrying it is busy meanwhile: with many streams that
 * is what fills a connection pool and delays whatever else waits for a connection. This proxy holds the client's
 * getMore in the same way: it asks the peer again itself, every `repollMs`, until a reply has events or the
 * time is up, and only then answers the client. It also counts what passes (connections, commands by name and
 * database), which is how a benchmark counts the daemon's bookkeeping writes.
 *
 * What it does not model is in docs/testing.md ("The real-server proxy").
 */

/** OP_MSG, the only opcode parsed; anything else passes through untouched. */
const OP_MSG = 2013;
const HEADER_BYTES = 16;
/** OP_MSG flag bit 0: a CRC-32C follows the sections. */
const CHECKSUM_PRESENT = 1;
/** A wire message above this is not from a MongoDB client or server (theirs stop at 48 MB). */
const MAX_MESSAGE_BYTES = 64 * 1024 * 1024;
/** How often a held getMore is asked again upstream unless told otherwise. */
export const DEFAULT_REPOLL_MS = 50;

/** One command a client sent through the proxy. */
export interface ProxiedCommand {
  /** The command's name: the first key of its body (`find`, `update`, `getMore`, ...). */
  readonly name: string;
  /** Its `$db`. */
  readonly db: string;
  /** The collection it names (the string value of its first key, or a getMore's `collection`), if any. */
  readonly collection: string | undefined;
  /** `performance.now()` when the proxy read it. */
  readonly at: number;
}

export interface RealServerProxyOptions {
  /** The peer: a loopback address only. */
  readonly target: { readonly host: string; readonly port: number };
  /** Pause before an empty getMore is asked again upstream; default DEFAULT_REPOLL_MS. */
  readonly repollMs?: number;
  /** Told of every command a client sends (not of the proxy's own repeated getMores). */
  readonly onCommand?: (command: ProxiedCommand) => void;
}

/** A command and the numbers of it counted so far. */
export interface CommandCount {
  readonly db: string;
  readonly name: string;
  readonly count: number;
}

/** A client's getMore being held: what to send again, and until when. */
interface HeldGetMore {
  readonly clientRequestId: number;
  readonly message: Buffer;
  readonly deadline: number;
  timer: NodeJS.Timeout | undefined;
}

const LOOPBACK = new Set(['127.0.0.1', '::1', '[::1]', 'localhost']);

/** The host and port of a `mongodb://` connection string naming one loopback host (the peer's). */
export function loopbackTarget(uri: string): { host: string; port: number } {
  const url = new URL(uri);
  if (url.protocol !== 'mongodb:' || !LOOPBACK.has(url.hostname)) {
    throw new Error(`the real-server proxy fronts a loopback mongodb:// peer only, not ${url.host}`);
  }
  return { host: url.hostname.replace(/^\[|\]$/g, ''), port: Number(url.port || 27_017) };
}

/** Splits a byte stream into wire messages (each starts with its int32 length). */
class MessageReader {
  #pending: Buffer = Buffer.alloc(0);

  /** The whole messages `chunk` completes; throws on a length no MongoDB peer sends. */
  push(chunk: Buffer): Buffer[] {
    this.#pending = this.#pending.length === 0 ? chunk : Buffer.concat([this.#pending, chunk]);
    const messages: Buffer[] = [];
    while (this.#pending.length >= 4) {
      const length = this.#pending.readInt32LE(0);
      if (length < HEADER_BYTES || length > MAX_MESSAGE_BYTES)
        throw new Error(`bad wire message length ${length}`);
      if (this.#pending.length < length) break;
      messages.push(this.#pending.subarray(0, length));
      this.#pending = this.#pending.subarray(length);
    }
    return messages;
  }
}

/** The body (kind-0 section) of an OP_MSG, or undefined for any other opcode or a message without one. */
function opMsgBody(message: Buffer): Document | undefined {
  if (message.readInt32LE(12) !== OP_MSG) return undefined;
  const flags = message.readUInt32LE(HEADER_BYTES);
  const end = message.length - ((flags & CHECKSUM_PRESENT) !== 0 ? 4 : 0);
  let at = HEADER_BYTES + 4;
  while (at < end) {
    const kind = message.readUInt8(at);
    const size = message.readInt32LE(at + 1);
    // int64 values (cursor ids) as bigint, so that none is lost or left a Long.
    if (kind === 0) return deserialize(message.subarray(at + 1, at + 1 + size), { useBigInt64: true });
    at += 1 + size;
  }
  return undefined;
}

/**
 * A copy of `message` with its header's `requestID` and `responseTo` set; a checksum is dropped (it is
 * optional, and would no longer match the header).
 */
function readdressed(message: Buffer, requestId: number, responseTo: number): Buffer {
  const opMsg = message.readInt32LE(12) === OP_MSG;
  const checksummed = opMsg && (message.readUInt32LE(HEADER_BYTES) & CHECKSUM_PRESENT) !== 0;
  const copy = Buffer.from(checksummed ? message.subarray(0, message.length - 4) : message);
  copy.writeInt32LE(copy.length, 0);
  copy.writeInt32LE(requestId, 4);
  copy.writeInt32LE(responseTo, 8);
  if (checksummed) copy.writeUInt32LE(copy.readUInt32LE(HEADER_BYTES) & ~CHECKSUM_PRESENT, HEADER_BYTES);
  return copy;
}

/** Whether a getMore reply is a success with an empty batch of a cursor still open (a real server waits on). */
function isEmptyOpenBatch(reply: Buffer): boolean {
  const body = opMsgBody(reply);
  if (body?.ok !== 1) return false;
  const cursor = body.cursor as Document | undefined;
  const batch = cursor?.nextBatch as unknown;
  const id = cursor?.id as unknown;
  const open = (typeof id === 'bigint' || typeof id === 'number') && id !== 0 && id !== 0n;
  return open && Array.isArray(batch) && batch.length === 0;
}

/** The first key of a command body and the collection it names. */
function commandOf(body: Document, at: number): ProxiedCommand {
  const name = Object.keys(body)[0] ?? '';
  const first = body[name] as unknown;
  const collection =
    typeof first === 'string' ? first : typeof body.collection === 'string' ? body.collection : undefined;
  return { name, db: typeof body.$db === 'string' ? body.$db : '', collection, at };
}

/**
 * See the comment at the top of this file. One upstream connection per client connection; a getMore with
 * `maxTimeMS` whose reply is empty is held (re-issued upstream under the proxy's own request ids, negative
 * ones, which a driver never uses) until a reply has events or `maxTimeMS` since the client sent it is over,
 * and the client then gets that last reply, addressed to its own request.
 */
export class RealServerProxy {
  readonly #server: Server;
  readonly #sockets = new Set<Socket>();
  readonly #timers = new Set<NodeJS.Timeout>();
  readonly #counts = new Map<string, { db: string; name: string; count: number }>();
  readonly #options: RealServerProxyOptions;
  readonly #repollMs: number;
  #open = 0;
  #peak = 0;
  #held = 0;
  #reissued = 0;
  #nextOwnId = -1;

  private constructor(options: RealServerProxyOptions) {
    if (!LOOPBACK.has(options.target.host)) {
      throw new Error(`the real-server proxy fronts a loopback peer only, not ${options.target.host}`);
    }
    this.#options = options;
    this.#repollMs = options.repollMs ?? DEFAULT_REPOLL_MS;
    this.#server = createServer((client) => {
      this.#serve(client);
    });
  }

  /** Listens on 127.0.0.1 at a free port. */
  static async start(options: RealServerProxyOptions): Promise<RealServerProxy> {
    const proxy = new RealServerProxy(options);
    await new Promise<void>((resolve, reject) => {
      proxy.#server.once('error', reject);
      proxy.#server.listen(0, '127.0.0.1', () => {
        proxy.#server.off('error', reject);
        resolve();
      });
    });
    return proxy;
  }

  /** A connection string for the proxy (direct connection, as the peer is a standalone), `options` appended. */
  uri(options = ''): string {
    const port = (this.#server.address() as AddressInfo).port;
    return `mongodb://127.0.0.1:${port}/?directConnection=true${options}`;
  }

  /** Client connections open now. */
  get openConnections(): number {
    return this.#open;
  }

  /** The most client connections open at once since the start. */
  get peakConnections(): number {
    return this.#peak;
  }

  /** Client getMores that got an empty reply and were held rather than answered at once. */
  get heldGetMores(): number {
    return this.#held;
  }

  /** getMores the proxy sent upstream itself while holding one. */
  get reissuedGetMores(): number {
    return this.#reissued;
  }

  /** Commands counted so far by database and name. */
  commandCounts(): CommandCount[] {
    return [...this.#counts.values()].map((c) => ({ ...c }));
  }

  /** How many commands named one of `names` (on database `db`, when given) clients have sent so far. */
  count(names: readonly string[], db?: string): number {
    let total = 0;
    for (const c of this.#counts.values()) {
      if (names.includes(c.name) && (db === undefined || c.db === db)) total += c.count;
    }
    return total;
  }

  /** Closes every connection (both sides) and stops listening. */
  async stop(): Promise<void> {
    for (const timer of this.#timers) clearTimeout(timer);
    this.#timers.clear();
    for (const socket of this.#sockets) socket.destroy();
    await new Promise<void>((resolve) => {
      this.#server.close(() => {
        resolve();
      });
    });
  }

  #serve(client: Socket): void {
    const { host, port } = this.#options.target;
    const upstream = connect(port, host);
    this.#sockets.add(client).add(upstream);
    this.#open++;
    this.#peak = Math.max(this.#peak, this.#open);
    /** Held getMores of this connection by the request id their next reply answers. */
    const waiting = new Map<number, HeldGetMore>();
    let closed = false;
    const end = () => {
      if (closed) return;
      closed = true;
      this.#open--;
      for (const wait of waiting.values()) this.#clear(wait);
      waiting.clear();
      client.destroy();
      upstream.destroy();
      this.#sockets.delete(client);
      this.#sockets.delete(upstream);
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);

    const fromClient = new MessageReader();
    client.on('data', (chunk: Buffer) => {
      try {
        for (const message of fromClient.push(chunk)) {
          this.#request(message, waiting);
          upstream.write(message);
        }
      } catch {
        end();
      }
    });
    const fromUpstream = new MessageReader();
    upstream.on('data', (chunk: Buffer) => {
      try {
        for (const message of fromUpstream.push(chunk)) {
          const reply = this.#reply(message, waiting, upstream, () => closed);
          if (reply !== undefined && !closed) client.write(reply);
        }
      } catch {
        end();
      }
    });
  }

  /** Counts a client's command and notes a getMore that may have to be held. */
  #request(message: Buffer, waiting: Map<number, HeldGetMore>): void {
    const body = opMsgBody(message);
    if (body === undefined) return;
    const command = commandOf(body, performance.now());
    const key = `${command.db}\u0000${command.name}`;
    const entry = this.#counts.get(key);
    if (entry) entry.count++;
    else this.#counts.set(key, { db: command.db, name: command.name, count: 1 });
    this.#options.onCommand?.(command);
    const maxTimeMS = Number(body.maxTimeMS);
    if (command.name === 'getMore' && maxTimeMS > 0) {
      const requestId = message.readInt32LE(4);
      waiting.set(requestId, {
        clientRequestId: requestId,
        message: Buffer.from(message),
        deadline: performance.now() + maxTimeMS,
        timer: undefined,
      });
    }
  }

  /**
   * What to pass to the client for an upstream message: the message itself, or nothing while a held getMore
   * waits (its next attempt then is scheduled), or the last attempt's reply addressed to the client's request.
   */
  #reply(
    message: Buffer,
    waiting: Map<number, HeldGetMore>,
    upstream: Socket,
    isClosed: () => boolean,
  ): Buffer | undefined {
    const answers = message.readInt32LE(8);
    const wait = waiting.get(answers);
    if (wait === undefined) return message;
    waiting.delete(answers);
    const left = wait.deadline - performance.now();
    if (left > 0 && isEmptyOpenBatch(message)) {
      if (answers === wait.clientRequestId) this.#held++;
      const timer = setTimeout(
        () => {
          this.#timers.delete(timer);
          wait.timer = undefined;
          if (isClosed()) return;
          const ownId = this.#nextOwnId;
          this.#nextOwnId = ownId <= -0x7fff_fff0 ? -1 : ownId - 1;
          waiting.set(ownId, wait);
          this.#reissued++;
          upstream.write(readdressed(wait.message, ownId, 0));
        },
        Math.min(this.#repollMs, left),
      );
      wait.timer = timer;
      this.#timers.add(timer);
      return undefined;
    }
    return answers === wait.clientRequestId
      ? message
      : readdressed(message, message.readInt32LE(4), wait.clientRequestId);
  }

  #clear(wait: HeldGetMore): void {
    if (wait.timer === undefined) return;
    clearTimeout(wait.timer);
    this.#timers.delete(wait.timer);
    wait.timer = undefined;
  }
}
