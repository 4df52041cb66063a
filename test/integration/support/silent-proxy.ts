import { createServer, connect, type AddressInfo, type Server, type Socket } from 'node:net';

/**
 * A loopback proxy in front of the MongoDB peer that can go silent: once `silence()` is called it still
 * takes every request but passes no reply back, as a half-open connection (a peer gone without a FIN or RST,
 * a stalled NAT or load balancer) does. Connections opened afterwards are silent too.
 */
export class SilentProxy {
  readonly #server: Server;
  readonly #sockets: Set<Socket>;
  readonly #state: { silent: boolean };

  private constructor(server: Server, sockets: Set<Socket>, state: { silent: boolean }) {
    this.#server = server;
    this.#sockets = sockets;
    this.#state = state;
  }

  static async start(target: { host: string; port: number }): Promise<SilentProxy> {
    const sockets = new Set<Socket>();
    const state = { silent: false };
    const server = createServer((client) => {
      const upstream = connect(target.port, target.host);
      sockets.add(client).add(upstream);
      client.pipe(upstream);
      upstream.on('data', (chunk: Buffer) => {
        if (!state.silent) client.write(chunk);
      });
      const end = () => {
        client.destroy();
        upstream.destroy();
      };
      client.on('error', end).on('close', end);
      upstream.on('error', end).on('close', end);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return new SilentProxy(server, sockets, state);
  }

  /** A connection string for the proxy (direct connection, as the peer is a standalone). */
  uri(options = ''): string {
    const port = (this.#server.address() as AddressInfo).port;
    return `mongodb://127.0.0.1:${String(port)}/?directConnection=true${options}`;
  }

  /** From now on no reply reaches the client. */
  silence(): void {
    this.#state.silent = true;
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
