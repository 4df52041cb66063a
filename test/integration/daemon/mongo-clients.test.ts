// Issue 12: lease renewals and checkpoint saves must not wait for a pooled connection behind the change
// streams. The daemon's bookkeeping (settings, leases, checkpoints) has a client of its own; here the data
// client's pool is exhausted by reads that get no answer, and the bookkeeping still goes through.
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { type Document } from 'mongodb';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { once } from 'node:events';
import { createServer, type AddressInfo } from 'node:net';
import { connectMongoClients, startArchiver } from '../../../src/app/archiver.js';
import { createLogger } from '../../../src/observability/logger.js';
import { MongoLeaseStore } from '../../../src/mongodb/lease-store.js';
import { AppNameProxy } from '../support/app-name-proxy.js';
import { inProcessConfig } from '../support/daemon.js';

let proxy: AppNameProxy;

beforeEach(async () => {
  const peer = new URL((process.env.MBA_TEST_MONGODB_URI ?? '').replace(/^mongodb:/, 'http:'));
  proxy = await AppNameProxy.start({ host: peer.hostname, port: Number(peer.port) });
});

afterEach(async () => {
  await proxy.stop();
});

describe('the MongoDB clients of the daemon', () => {
  it('issue 12: a lease renewal and a settings read go through while the data client’s pool is exhausted', async () => {
    const settingsDb = `clients_${randomBytes(4).toString('hex')}`;
    const config = {
      ...inProcessConfig('unused', settingsDb, 'insert-all'),
      // Two connections per client, so that two reads exhaust the data client's pool.
      MONGO_CLIENT: proxy.uri('&maxPoolSize=2'),
    };
    const signal = new AbortController().signal;
    const clients = await connectMongoClients(config, signal);
    const stopReads = new AbortController();
    try {
      expect(clients.data.options.maxPoolSize).toBe(2);
      expect(clients.bookkeeping.options.appName).toBe('mongo-bigquery-archiver-bookkeeping');
      proxy.silenceAllBut('mongo-bigquery-archiver-bookkeeping');
      // As change streams waiting on the server: every connection of the data pool is held, a third read waits.
      const source = clients.data.db(settingsDb).collection('orders');
      const reads = [1, 2, 3].map(() =>
        source.findOne({}, { signal: stopReads.signal }).then(
          () => 'answered',
          () => 'given up',
        ),
      );

      const leases = new MongoLeaseStore(
        clients.bookkeeping.db(settingsDb).collection('bigquery_archiver_settings_leases'),
        { ttlMs: 2_000 },
      );
      // Each lease operation gives up after the TTL: behind the exhausted pool it would fail.
      const lease = await leases.tryAcquire('orders', undefined, signal);
      expect(lease).toBeDefined();
      if (!lease) return;
      expect(await leases.renewAll([lease], signal)).toEqual(new Set(['orders']));
      await clients.bookkeeping
        .db(settingsDb)
        .collection('bigquery_archiver_settings')
        .insertOne({ _id: 'orders' } as Document);
      expect((await clients.store.list(signal)).map((entry) => entry.id)).toEqual(['orders']);

      // Meanwhile the data client answered nothing: its pool was exhausted all along.
      expect(await Promise.race([Promise.all(reads), sleep(500, 'waiting')])).toBe('waiting');
      stopReads.abort();
      expect(await Promise.all(reads)).toEqual(['given up', 'given up', 'given up']);
    } finally {
      stopReads.abort();
      await proxy.stop();
      await clients.close();
    }
  });

  it('issue 12 review: a start that fails after connecting (its metrics port is taken) closes both MongoDB clients', async () => {
    const taken = createServer();
    taken.listen(0, '127.0.0.1');
    await once(taken, 'listening');
    try {
      const config = {
        ...inProcessConfig('unused', `clients_${randomBytes(4).toString('hex')}`, 'insert-all'),
        MONGO_CLIENT: proxy.uri(),
        METRICS_HOST: '127.0.0.1',
        METRICS_PORT: (taken.address() as AddressInfo).port,
      };
      const logger = createLogger({ level: 'silent' });

      await expect(startArchiver(config, logger, new AbortController().signal)).rejects.toThrow(/EADDRINUSE/);
      // Both clients were connected (each holds connections to the server) before the health server failed.
      expect(proxy.acceptedConnections).toBeGreaterThanOrEqual(2);
      const deadline = Date.now() + 5_000;
      while (proxy.openConnections > 0 && Date.now() < deadline) await sleep(50);
      expect(proxy.openConnections).toBe(0);
    } finally {
      taken.close();
    }
  });
});
