import { createServer, connect, type AddressInfo, type Server, type Socket } from 'node:net';

/** Seven bytes that are not valid UTF-8: 'a', 0xFF (never valid), 'b', 0xC3 (truncated sequence), '(', 0xA0, 0xA1. */
export const INVALID_UTF8 = new Uint8Array([0x61, 0xff, 0x62, 0xc3, 0x28, 0xa0, 0xa1]);
/** What the test writes where it wants those bytes: the same length, so no BSON length changes. */
export const INVALID_UTF8_PLACEHOLDER = '~INVAL~';

/**
 * A loopback proxy in front of the MongoDB peer that rewrites every reply, message by message (wire
 * messages are length-prefixed), turning the placeholder's bytes into INVALID_UTF8. The peer stores
 * strings as Java strings and so cannot keep invalid UTF-8 itself; through the proxy the driver receives
 * exactly what real MongoDB sends for a document stored with such a string.
 */
export class InvalidUtf8Proxy {
  readonly #server: Server;
  readonly #sockets: Set<Socket>;

  private constructor(server: Server, sockets: Set<Socket>) {
    this.#server = server;
    this.#sockets = sockets;
  }

  static async start(target: { host: string; port: number }): Promise<InvalidUtf8Proxy> {
    const placeholder = Buffer.from(INVALID_UTF8_PLACEHOLDER, 'utf8');
    const sockets = new Set<Socket>();
    const server = createServer((client) => {
      const upstream = connect(target.port, target.host);
      sockets.add(client).add(upstream);
      client.pipe(upstream);
      let pending = Buffer.alloc(0);
      upstream.on('data', (chunk: Buffer) => {
        pending = Buffer.concat([pending, chunk]);
        while (pending.length >= 4 && pending.length >= pending.readInt32LE(0)) {
          const message = Buffer.from(pending.subarray(0, pending.readInt32LE(0)));
          pending = pending.subarray(message.length);
          for (let at = message.indexOf(placeholder); at >= 0; at = message.indexOf(placeholder, at + 1)) {
            Buffer.from(INVALID_UTF8).copy(message, at);
          }
          client.write(message);
        }
      });
      const end = () => {
        client.destroy();
        upstream.destroy();
      };
      client.on('error', end).on('close', end);
      upstream.on('error', end).on('close', end);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return new InvalidUtf8Proxy(server, sockets);
  }

  /** A connection string for the proxy (direct connection, as the peer is a standalone). */
  uri(): string {
    return `mongodb://127.0.0.1:${(this.#server.address() as AddressInfo).port}/?directConnection=true`;
  }

  async stop(): Promise<void> {
    for (const socket of this.#sockets) socket.destroy();
    await new Promise<void>((resolve) => {
      this.#server.close(() => {
        resolve();
      });
    });
  }
}
