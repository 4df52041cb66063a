// Bookkeeping writes on a connection that stopped answering (issue 10 item 11): each gives up within its
// bound instead of holding the mapping (or the lease loop) for as long as the operating system keeps the
// connection open. The peer sits behind a loopback proxy that swallows every reply once told to.
import { randomBytes } from 'node:crypto';
import { MongoClient, type Document } from 'mongodb';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { dispositionOf } from '../../../src/errors.js';
import { checkpointsCollectionName, MongoCheckpointStore } from '../../../src/mongodb/checkpoint-store.js';
import { MongoLeaseStore } from '../../../src/mongodb/lease-store.js';
import { MongoSettingsStore } from '../../../src/mongodb/settings-store.js';
import { SilentProxy } from '../support/silent-proxy.js';

/** How long the test waits for a bounded write to give up before it calls the write unbounded. */
const PATIENCE_MS = 8_000;

let proxy: SilentProxy;
let client: MongoClient;

beforeEach(async () => {
  const peer = new URL((process.env.MBA_TEST_MONGODB_URI ?? '').replace(/^mongodb:/, 'http:'));
  proxy = await SilentProxy.start({ host: peer.hostname, port: Number(peer.port) });
  client = new MongoClient(proxy.uri());
  await client.connect();
});

afterEach(async () => {
  await proxy.stop();
  await client.close(true);
});

/** What `work` ended with, or a note that it was still waiting after PATIENCE_MS. */
async function outcomeOf(work: Promise<unknown>): Promise<unknown> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const patience = new Promise((resolve) => {
    timer = setTimeout(() => {
      resolve(`still waiting after ${String(PATIENCE_MS)} ms`);
    }, PATIENCE_MS);
  });
  try {
    return await Promise.race([
      work.then(
        () => 'succeeded',
        (error: unknown) => error,
      ),
      patience,
    ]);
  } finally {
    clearTimeout(timer);
  }
}

describe('bookkeeping writes on a silent connection', () => {
  it('issue 10 item 11: a checkpoint save gives up when its signal aborts', async () => {
    const settings = client.db(`bounded_${randomBytes(4).toString('hex')}`).collection('settings');
    const { insertedId } = await settings.insertOne({ mongo_collection: 'c' });
    const store = new MongoCheckpointStore({
      checkpoints: settings.db.collection(checkpointsCollectionName(settings.collectionName)),
      settings,
      settingsId: insertedId,
      scope: 's',
    });
    await store.load(new AbortController().signal);
    const position = { token: '8265A1B2C3000000012B', clusterTime: { t: 1_705_095_875, i: 1 } };
    proxy.silence();
    const outcome = await outcomeOf(store.save({ position }, AbortSignal.timeout(500)));
    expect(outcome).toBeInstanceOf(Error);
    // Wrapped at the adapter boundary (issue 11): retried, with the driver's timeout as the cause.
    expect(dispositionOf(outcome)).toBe('retryable');
    expect(((outcome as Error).cause as Error).name).toMatch(/TimeoutError/);
  }, 20_000);

  it('issue 10 item 11: a lease renewal gives up within the lease TTL', async () => {
    const leases = new MongoLeaseStore(
      client.db(`bounded_${randomBytes(4).toString('hex')}`).collection('l'),
      {
        ttlMs: 1_000,
      },
    );
    const lease = await leases.tryAcquire('m', undefined, new AbortController().signal);
    expect(lease).toBeDefined();
    if (!lease) return;
    proxy.silence();
    const outcome = await outcomeOf(leases.renewAll([lease], new AbortController().signal));
    expect(outcome).toBeInstanceOf(Error);
    // Wrapped at the adapter boundary (issue 11): retried, with the driver's timeout as the cause.
    expect(dispositionOf(outcome)).toBe('retryable');
    expect(((outcome as Error).cause as Error).name).toMatch(/TimeoutError/);
  }, 20_000);

  it('issue 10 item 11: a status write gives up after the store bound', async () => {
    const database = `bounded_${randomBytes(4).toString('hex')}`;
    const store = new MongoSettingsStore(client, {
      database,
      collection: 'settings',
      operationTimeoutMs: 500,
    });
    await client
      .db(database)
      .collection('settings')
      .insertOne({ _id: 'm' } as Document);
    await store.list(new AbortController().signal);
    proxy.silence();
    const outcome = await outcomeOf(store.reportStatus('m', { state: 'streaming' }));
    expect(outcome).toBeInstanceOf(Error);
    // Wrapped at the adapter boundary (issue 11): retried, with the driver's timeout as the cause.
    expect(dispositionOf(outcome)).toBe('retryable');
    expect(((outcome as Error).cause as Error).name).toMatch(/TimeoutError/);
  }, 20_000);
});
