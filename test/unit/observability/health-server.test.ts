import { createServer } from 'node:http';
import { type AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { ConfigError } from '../../../src/errors.js';
import {
  startHealthServer,
  type HealthServer,
  type HealthServerOptions,
  type Liveness,
  type Readiness,
} from '../../../src/observability/health-server.js';
import { Metrics } from '../../../src/observability/metrics.js';

const HOST = '127.0.0.1';
const open: HealthServer[] = [];

afterEach(async () => {
  await Promise.all(open.splice(0).map((server) => server.close()));
});

async function serve(
  overrides: Partial<HealthServerOptions> = {},
): Promise<{ server: HealthServer; url: string }> {
  const server = await startHealthServer({
    port: 0,
    host: HOST,
    metrics: new Metrics({ processMetrics: false }),
    readiness: () => ({ ready: true, detail: {} }),
    ...overrides,
  });
  open.push(server);
  return { server, url: `http://${HOST}:${server.port}` };
}

describe('startHealthServer', () => {
  it('serves /metrics in the Prometheus text format with its content type', async () => {
    const metrics = new Metrics({ processMetrics: false });
    metrics.batchWritten('orders', 7, 700, 0.05);
    const { url } = await serve({ metrics });
    const response = await fetch(`${url}/metrics`);
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toBe(metrics.contentType);
    const body = await response.text();
    expect(body).toContain('# TYPE mba_rows_written_total counter');
    expect(body).toContain('mba_rows_written_total{mapping="orders"} 7');
  });

  it('answers /healthz with 200 while the process serves, even when not ready', async () => {
    const { url } = await serve({ readiness: () => ({ ready: false, detail: {} }) });
    const response = await fetch(`${url}/healthz`);
    expect(response.status).toBe(200);
    expect(await response.text()).toBe('ok\n');
  });

  it('issue 10 item 11: answers /healthz with 503 and the detail while the liveness check finds a wedged mapping', async () => {
    let liveness: Liveness = {
      healthy: false,
      detail: { orders: 'stopping for 135 s, over the 120 s bound' },
    };
    const { url } = await serve({ liveness: () => liveness });
    const wedged = await fetch(`${url}/healthz`);
    expect(wedged.status).toBe(503);
    expect(wedged.headers.get('content-type')).toMatch(/^application\/json/);
    expect(await wedged.json()).toEqual(liveness);

    liveness = { healthy: true, detail: {} };
    const healthy = await fetch(`${url}/healthz`);
    expect(healthy.status).toBe(200);
    expect(await healthy.text()).toBe('ok\n');
  });

  it('answers /readyz with 200 and the detail when ready, 503 and the detail when not', async () => {
    let readiness: Readiness = { ready: false, detail: { orders: 'backfilling', settings: 'not loaded' } };
    const { url } = await serve({ readiness: () => readiness });

    const notReady = await fetch(`${url}/readyz`);
    expect(notReady.status).toBe(503);
    expect(notReady.headers.get('content-type')).toMatch(/^application\/json/);
    expect(await notReady.json()).toEqual(readiness);

    readiness = { ready: true, detail: { orders: 'streaming', settings: 'loaded' } };
    const ready = await fetch(`${url}/readyz`);
    expect(ready.status).toBe(200);
    expect(await ready.json()).toEqual(readiness);
  });

  it('answers /readyz with 503 when the readiness check throws', async () => {
    const { url } = await serve({
      readiness: () => {
        throw new Error('supervisor gone');
      },
    });
    const response = await fetch(`${url}/readyz?verbose=1`);
    expect(response.status).toBe(503);
    expect(await response.json()).toEqual({ ready: false, detail: { readiness: 'check failed' } });
  });

  it('answers 404 for other paths and 405 for other methods', async () => {
    const { url } = await serve();
    expect((await fetch(`${url}/`)).status).toBe(404);
    expect((await fetch(`${url}/metrics/extra`)).status).toBe(404);
    const post = await fetch(`${url}/metrics`, { method: 'POST' });
    expect(post.status).toBe(405);
    expect(post.headers.get('allow')).toBe('GET, HEAD');
    const head = await fetch(`${url}/healthz`, { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(await head.text()).toBe('');
  });

  it('binds 127.0.0.1 by default, and close releases the port despite a kept-alive connection', async () => {
    const server = await startHealthServer({
      port: 0,
      metrics: new Metrics({ processMetrics: false }),
      readiness: () => ({ ready: true, detail: {} }),
    });
    expect(server.host).toBe(HOST);
    const url = `http://${HOST}:${server.port}`;
    expect((await fetch(`${url}/healthz`, { keepalive: true })).status).toBe(200);
    await server.close();
    await expect(fetch(`${url}/healthz`)).rejects.toThrow();
  });

  it('refuses a port already in use with a ConfigError naming host and port', async () => {
    const blocker = createServer();
    await new Promise<void>((resolve) => blocker.listen(0, HOST, resolve));
    const { port } = blocker.address() as AddressInfo;
    try {
      const attempt = startHealthServer({
        port,
        host: HOST,
        metrics: new Metrics({ processMetrics: false }),
        readiness: () => ({ ready: true, detail: {} }),
      });
      await expect(attempt).rejects.toBeInstanceOf(ConfigError);
      await expect(attempt).rejects.toThrow(`${HOST}:${port}`);
    } finally {
      await new Promise<void>((resolve) =>
        blocker.close(() => {
          resolve();
        }),
      );
    }
  });
});
