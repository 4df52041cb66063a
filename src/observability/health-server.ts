import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { type AddressInfo } from 'node:net';
import { ConfigError } from '../errors.js';
import { type Logger } from './logger.js';

/** Loopback only; containers pass `0.0.0.0` so that the kubelet and Prometheus can reach the port. */
export const DEFAULT_HEALTH_HOST = '127.0.0.1';

/** What `/metrics` serves; `Metrics` is one. */
export interface MetricsExposition {
  readonly contentType: string;
  render(): Promise<string>;
}

/** Whether the process should receive work, with a short text per component (e.g. per mapping). */
export interface Readiness {
  readonly ready: boolean;
  readonly detail: Readonly<Record<string, string>>;
}

/** Whether the process still works (false: restart it), with a short text per failing component. */
export interface Liveness {
  readonly healthy: boolean;
  readonly detail: Readonly<Record<string, string>>;
}

export interface HealthServerOptions {
  /** 0 picks a free port (tests); the daemon passes METRICS_PORT. */
  readonly port: number;
  /** Default DEFAULT_HEALTH_HOST. */
  readonly host?: string;
  readonly metrics: MetricsExposition;
  readonly readiness: () => Readiness | Promise<Readiness>;
  /** What `/healthz` reports; without it, healthy as long as the process answers. */
  readonly liveness?: () => Liveness;
  /** Where failures of `/metrics` and `/readyz` are reported. */
  readonly logger?: Logger;
}

export interface HealthServer {
  /** The address actually bound. */
  readonly host: string;
  /** The port actually bound (the free one picked when 0 was asked for). */
  readonly port: number;
  /** Stops listening and drops open connections (scrapers keep theirs alive). */
  close(): Promise<void>;
}

const JSON_CONTENT_TYPE = 'application/json; charset=utf-8';
const TEXT_CONTENT_TYPE = 'text/plain; charset=utf-8';

function send(
  request: IncomingMessage,
  response: ServerResponse,
  status: number,
  contentType: string,
  body: string,
): void {
  response.writeHead(status, {
    'content-type': contentType,
    'content-length': Buffer.byteLength(body, 'utf8'),
    'cache-control': 'no-store',
  });
  response.end(request.method === 'HEAD' ? undefined : body);
}

async function handle(
  options: HealthServerOptions,
  request: IncomingMessage,
  response: ServerResponse,
): Promise<void> {
  const path = new URL(request.url ?? '/', 'http://localhost').pathname;
  const known = path === '/metrics' || path === '/healthz' || path === '/readyz';
  if (!known) {
    send(request, response, 404, TEXT_CONTENT_TYPE, 'not found\n');
    return;
  }
  if (request.method !== 'GET' && request.method !== 'HEAD') {
    response.setHeader('allow', 'GET, HEAD');
    send(request, response, 405, TEXT_CONTENT_TYPE, 'method not allowed\n');
    return;
  }
  switch (path) {
    case '/healthz': {
      const liveness = options.liveness?.() ?? { healthy: true, detail: {} };
      if (liveness.healthy) send(request, response, 200, TEXT_CONTENT_TYPE, 'ok\n');
      else send(request, response, 503, JSON_CONTENT_TYPE, JSON.stringify(liveness));
      return;
    }
    case '/metrics':
      try {
        const body = await options.metrics.render();
        send(request, response, 200, options.metrics.contentType, body);
      } catch (error) {
        options.logger?.error({ err: error }, 'collecting metrics failed');
        send(request, response, 500, TEXT_CONTENT_TYPE, 'collecting metrics failed\n');
      }
      return;
    case '/readyz': {
      let readiness: Readiness;
      try {
        readiness = await options.readiness();
      } catch (error) {
        options.logger?.error({ err: error }, 'readiness check failed');
        readiness = { ready: false, detail: { readiness: 'check failed' } };
      }
      send(request, response, readiness.ready ? 200 : 503, JSON_CONTENT_TYPE, JSON.stringify(readiness));
      return;
    }
  }
}

/**
 * Serves `/metrics` (Prometheus text format), `/healthz` (200 while the process works, 503 with the
 * liveness detail as JSON when the liveness check finds it wedged) and
 * `/readyz` (200 when ready, 503 otherwise, both with the readiness detail as JSON). Resolves once
 * listening; a port that cannot be bound is a ConfigError.
 */
export async function startHealthServer(options: HealthServerOptions): Promise<HealthServer> {
  const host = options.host ?? DEFAULT_HEALTH_HOST;
  const server = createServer((request, response) => {
    handle(options, request, response).catch((error: unknown) => {
      options.logger?.error({ err: error }, 'health server request failed');
      if (!response.headersSent) send(request, response, 500, TEXT_CONTENT_TYPE, 'internal error\n');
      else response.destroy();
    });
  });
  await new Promise<void>((resolve, reject) => {
    const onError = (error: Error): void => {
      reject(
        new ConfigError(
          `cannot serve metrics and health checks on ${host}:${options.port}: ${error.message}`,
          { cause: error },
        ),
      );
    };
    server.once('error', onError);
    server.listen(options.port, host, () => {
      server.off('error', onError);
      resolve();
    });
  });
  const { address, port } = server.address() as AddressInfo;
  return {
    host: address,
    port,
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.close((error) => {
          if (error) reject(error);
          else resolve();
        });
        server.closeAllConnections();
      }),
  };
}
