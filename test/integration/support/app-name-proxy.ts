import { createServer, connect, type AddressInfo, type Server, type Socket } from 'node:net';

/**
 * A loopback proxy in front of the MongoDB peer that can hold back the replies of one client but not
 * another's: each connection is told apart by the first message the driver sends on it, its handshake, which
 * carries the client's appName. Once `silenceAllBut(appName)` is called, a connection whose handshake did not
 * name `appName` still takes every request but passes no reply back (as a server busy with it would), and so
 * does its client's every new connection.
 */
export class AppNameProxy {
  readonly #server: Server;
  readonly #sockets: Set<Socket>;
  readonly #state: { spared: Buffer | undefined; open: number; accepted: number };

  private constructor(
    server: Server,
    sockets: Set<Socket>,
    state: { spared: Buffer | undefined; open: number; accepted: number },
  ) {
    this.#server = server;
    this.#sockets = sockets;
    this.#state = state;
  }

  /** Client connections the proxy has taken since it started. */
  get acceptedConnections(): number {
    return this.#state.accepted;
  }

  /** Client connections open through the proxy now (a closed client leaves none). */
  get openConnections(): number {
    return this.#state.open;
  }

  static async start(target: { host: string; port: number }): Promise<AppNameProxy> {
    const sockets = new Set<Socket>();
    const state: { spared: Buffer | undefined; open: number; accepted: number } = {
      spared: undefined,
      open: 0,
      accepted: 0,
    };
    const server = createServer((client) => {
      const upstream = connect(target.port, target.host);
      sockets.add(client).add(upstream);
      state.open++;
      state.accepted++;
      client.once('close', () => {
        state.open--;
      });
      let handshake = Buffer.alloc(0);
      client.on('data', (chunk: Buffer) => {
        // The handshake is the first message: its length is its first four bytes (little-endian).
        if (handshake.length < 4 || handshake.length < handshake.readInt32LE(0))
          handshake = Buffer.concat([handshake, chunk]);
        upstream.write(chunk);
      });
      upstream.on('data', (chunk: Buffer) => {
        const spared = state.spared;
        if (spared === undefined || handshake.includes(spared)) client.write(chunk);
      });
      const end = () => {
        client.destroy();
        upstream.destroy();
      };
      client.on('error', end).on('close', end);
      upstream.on('error', end).on('close', end);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return new AppNameProxy(server, sockets, state);
  }

  /** A connection string for the proxy (direct connection, as the peer is a standalone). */
  uri(options = ''): string {
    const port = (this.#server.address() as AddressInfo).port;
    return `mongodb://127.0.0.1:${String(port)}/?directConnection=true${options}`;
  }

  /** From now on only connections whose handshake names `appName` get replies. */
  silenceAllBut(appName: string): void {
    this.#state.spared = Buffer.from(appName, 'utf8');
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
