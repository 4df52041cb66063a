import { randomBytes } from 'node:crypto';
import {
  MongoClient,
  type Collection,
  type CommandStartedEvent,
  type CommandSucceededEvent,
  type Document,
} from 'mongodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Lease } from '../../../src/core/ports.js';
import { FencedOutError } from '../../../src/errors.js';
import { checkpointsCollectionName, MongoCheckpointStore } from '../../../src/mongodb/checkpoint-store.js';
import { MongoLeaseStore } from '../../../src/mongodb/lease-store.js';
import { MongoSettingsStore } from '../../../src/mongodb/settings-store.js';

let client: MongoClient;
const signal = new AbortController().signal;

beforeAll(async () => {
  client = new MongoClient(process.env.MBA_TEST_MONGODB_URI ?? '', { monitorCommands: true });
  await client.connect();
});

afterAll(async () => {
  await client.close();
});

function collections(): { db: string; leases: Collection; settings: Collection } {
  const db = `lease_${randomBytes(4).toString('hex')}`;
  return {
    db,
    leases: client.db(db).collection('bigquery_archiver_settings_leases'),
    settings: client.db(db).collection('bigquery_archiver_settings'),
  };
}

/** A lease store whose clock the test sets. */
function instance(leases: Collection, owner: string) {
  const clock = { now: 1_000_000 };
  const store = new MongoLeaseStore(leases, { owner, ttlMs: 1_000, clock: () => clock.now });
  return { store, clock };
}

describe('leases in MongoDB', () => {
  it('gives a mapping to one instance at a time, and to another with a greater token once it expires', async () => {
    const { leases } = collections();
    const a = instance(leases, 'a');
    const b = instance(leases, 'b');
    const first = { mappingId: 'orders', token: 1 };
    expect(await a.store.tryAcquire('orders', undefined, signal)).toEqual(first);
    expect(await b.store.tryAcquire('orders', undefined, signal)).toBeUndefined();
    expect(await a.store.renewAll([first], signal)).toEqual(new Set(['orders']));

    // `a` stops renewing; past the TTL, `b` takes the lease and `a` learns it lost it.
    b.clock.now += 1_001;
    const second = { mappingId: 'orders', token: 2 };
    expect(await b.store.tryAcquire('orders', undefined, signal)).toEqual(second);
    expect(await a.store.renewAll([first], signal)).toEqual(new Set());
    // A stale release does not free the new owner's lease.
    await a.store.release(first);
    expect((await b.store.holders()).get('orders')).toMatchObject({ owner: 'b', token: 2 });

    // Released at shutdown: free at once, and the token still grows.
    await b.store.release(second);
    expect(await a.store.tryAcquire('orders', undefined, signal)).toEqual({ mappingId: 'orders', token: 3 });
  });

  it('issue 12: renews every held lease in one round trip, and one more only to tell which were lost', async () => {
    const { leases } = collections();
    const a = instance(leases, 'a');
    const b = instance(leases, 'b');
    const held: Lease[] = [];
    for (const id of ['m1', 'm2', 'm3', 'm4']) {
      const lease = await a.store.tryAcquire(id, undefined, signal);
      if (lease) held.push(lease);
    }
    expect(held).toHaveLength(4);
    const commands: string[] = [];
    const listen = (event: CommandStartedEvent) => commands.push(event.commandName);
    client.on('commandStarted', listen);
    try {
      a.clock.now += 600;
      expect(await a.store.renewAll(held, signal)).toEqual(new Set(['m1', 'm2', 'm3', 'm4']));
      expect(commands).toEqual(['update']);
      // Renewed: still a's at 1.2 TTL after the leases were taken, so `b` cannot take one.
      b.clock.now += 1_200;
      expect(await b.store.tryAcquire('m1', undefined, signal)).toBeUndefined();

      // m2 expires and `b` takes it; m3 is released meanwhile (its lease then is nobody's).
      b.clock.now += 1_000;
      expect(await b.store.tryAcquire('m2', undefined, signal)).toMatchObject({ mappingId: 'm2' });
      await a.store.release({ mappingId: 'm3', token: 1 });
      a.clock.now = b.clock.now;
      commands.length = 0;
      expect(await a.store.renewAll(held, signal)).toEqual(new Set(['m1', 'm4']));
      expect(commands).toEqual(['update', 'find']);
      // Nothing held: no round trip at all.
      commands.length = 0;
      expect(await a.store.renewAll([], signal)).toEqual(new Set());
      expect(commands).toEqual([]);
    } finally {
      client.off('commandStarted', listen);
    }
    const holders = await b.store.holders();
    expect(holders.get('m2')).toMatchObject({ owner: 'b', token: 2 });
    expect(holders.get('m3')).toMatchObject({ owner: null, token: 1 });
  });

  it('issue 12: takes many leases in a few round trips: free, expired and new ones, never a live one of another', async () => {
    const { leases } = collections();
    const a = instance(leases, 'a');
    const b = instance(leases, 'b');
    // b holds m1 (live) and m2 (about to expire); m3 was released; m4 and m5 never existed.
    expect(await b.store.tryAcquire('m1', undefined, signal)).toMatchObject({ token: 1 });
    b.clock.now += 600;
    expect(await b.store.renewAll([{ mappingId: 'm1', token: 1 }], signal)).toEqual(new Set(['m1']));
    b.clock.now -= 600;
    expect(await b.store.tryAcquire('m2', undefined, signal)).toMatchObject({ token: 1 });
    expect(await b.store.tryAcquire('m3', undefined, signal)).toMatchObject({ token: 1 });
    await b.store.release({ mappingId: 'm3', token: 1 });
    a.clock.now += 1_001;
    const commands: string[] = [];
    const listen = (event: CommandStartedEvent) => commands.push(event.commandName);
    client.on('commandStarted', listen);
    let taken: readonly Lease[];
    try {
      taken = await a.store.tryAcquireAll(
        ['m1', 'm2', 'm3', 'm4', 'm5'].map((mappingId) => ({
          mappingId,
          // m5's writes carried token 7 (the leases were wiped): its lease continues above it.
          floor: mappingId === 'm5' ? 7 : undefined,
        })),
        signal,
      );
    } finally {
      client.off('commandStarted', listen);
    }
    expect([...taken].sort((x, y) => x.mappingId.localeCompare(y.mappingId))).toEqual([
      { mappingId: 'm2', token: 2 },
      { mappingId: 'm3', token: 2 },
      { mappingId: 'm4', token: 1 },
      { mappingId: 'm5', token: 8 },
    ]);
    // One update for the existing leases, one find to tell which it took, one insert for the new ones.
    expect(commands).toEqual(['update', 'find', 'insert']);
    const holders = await a.store.holders();
    expect(holders.get('m1')).toMatchObject({ owner: 'b', token: 1 });
    for (const id of ['m2', 'm3', 'm4', 'm5']) expect(holders.get(id)?.owner).toBe('a');
    // Taken: b can neither take them back nor renew the one it had.
    expect(await b.store.renewAll([{ mappingId: 'm2', token: 1 }], signal)).toEqual(new Set());
    expect(await b.store.tryAcquireAll([{ mappingId: 'm4', floor: undefined }], signal)).toEqual([]);
  });

  it('issue 12 review: a take that failed after its update leaves no orphan; renewals never move an expiry back', async () => {
    const { leases } = collections();
    const a = instance(leases, 'a');
    // An earlier call of `a` took m1 (its update landed) and then failed before it learnt so.
    await leases.insertOne({
      _id: 'mapping:m1',
      kind: 'mapping',
      owner: 'a',
      token: 3,
      expiresAt: new Date(a.clock.now + 1_000),
      takenBy: 'an earlier call',
    } as Document);
    expect(await a.store.tryAcquireAll([{ mappingId: 'm1', floor: undefined }], signal)).toEqual([
      { mappingId: 'm1', token: 3 },
    ]);
    // Two renewal rounds landing out of order: the older one's expiry does not win.
    const later = instance(leases, 'a');
    later.clock.now = a.clock.now + 500;
    const held = [{ mappingId: 'm1', token: 3 }];
    expect(await later.store.renewAll(held, signal)).toEqual(new Set(['m1']));
    expect(await a.store.renewAll(held, signal)).toEqual(new Set(['m1']));
    expect((await a.store.holders()).get('m1')?.expiresAt.getTime()).toBe(later.clock.now + 1_000);
  });

  it('issue 12: two instances taking the same leases at once never both get one', async () => {
    const { leases } = collections();
    const a = instance(leases, 'a');
    const b = instance(leases, 'b');
    const ids = Array.from({ length: 40 }, (_, i) => `m${String(i)}`);
    // Half of them exist (released), half are new: both paths race.
    for (const id of ids.slice(0, 20)) {
      const lease = await a.store.tryAcquire(id, undefined, signal);
      if (lease) await a.store.release(lease);
    }
    const requests = ids.map((mappingId) => ({ mappingId, floor: undefined }));
    const [byA, byB] = await Promise.all([
      a.store.tryAcquireAll(requests, signal),
      b.store.tryAcquireAll([...requests].reverse(), signal),
    ]);
    const owners = new Map<string, string>();
    for (const [owner, taken] of [
      ['a', byA],
      ['b', byB],
    ] as const) {
      for (const lease of taken) {
        expect(owners.get(lease.mappingId)).toBeUndefined();
        owners.set(lease.mappingId, owner);
      }
    }
    expect(owners.size).toBe(40);
    const holders = await a.store.holders();
    for (const [id, owner] of owners) expect(holders.get(id)?.owner).toBe(owner);
  });

  it('counts the live instances from their heartbeats', async () => {
    const { leases } = collections();
    const a = instance(leases, 'a');
    const b = instance(leases, 'b');
    expect(await a.store.heartbeat(signal)).toBe(1);
    expect(await b.store.heartbeat(signal)).toBe(2);
    a.clock.now += 1_001;
    // `b` did not beat again within the TTL: only `a` counts.
    expect(await a.store.heartbeat(signal)).toBe(1);
    await a.store.leave();
    b.clock.now += 1_001;
    expect(await b.store.heartbeat(signal)).toBe(1);
  });

  it('issue 12: a heartbeat is one round trip: its three commands are all sent before the first answer', async () => {
    const { leases } = collections();
    const a = instance(leases, 'a');
    const events: string[] = [];
    const started = (event: CommandStartedEvent) => events.push(`started ${event.commandName}`);
    const answered = (event: CommandSucceededEvent) => events.push(`answered ${event.commandName}`);
    client.on('commandStarted', started);
    client.on('commandSucceeded', answered);
    try {
      expect(await a.store.heartbeat(signal)).toBe(1);
    } finally {
      client.off('commandStarted', started);
      client.off('commandSucceeded', answered);
    }
    expect(events.slice(0, 3).map((e) => e.split(' ')[0])).toEqual(['started', 'started', 'started']);
    expect(events).toHaveLength(6);
  });

  it('continues above the newest token the settings carry, even when the leases were wiped', async () => {
    const { leases } = collections();
    const a = instance(leases, 'a');
    expect(await a.store.tryAcquire('orders', 7, signal)).toEqual({ mappingId: 'orders', token: 8 });
    await a.store.release({ mappingId: 'orders', token: 8 });
    expect(await a.store.tryAcquire('orders', 11, signal)).toEqual({ mappingId: 'orders', token: 12 });
    await leases.deleteMany({});
    expect(await a.store.tryAcquire('orders', 12, signal)).toEqual({ mappingId: 'orders', token: 13 });
  });
});

describe('fenced writes of a mapping', () => {
  it('refuse a checkpoint or a state from an owner older than the newest, which cannot move the checkpoint back', async () => {
    const { db, settings } = collections();
    await settings.insertOne({
      _id: 'orders',
      mongo_database: 'shop',
      mongo_collection: 'orders',
      bigquery_table: 'orders',
    } as Document);
    const checkpointsOf = (fence: number) =>
      new MongoCheckpointStore({
        checkpoints: client.db(db).collection(checkpointsCollectionName(settings.collectionName)),
        settings,
        settingsId: 'orders',
        scope: 'scope',
        fence,
      });
    const old = checkpointsOf(1);
    const current = checkpointsOf(2);
    const at = (i: number) => ({ token: `tok${i}`, clusterTime: { t: 1_700_000_000, i } });

    await old.save({ position: at(5) }, signal);
    await current.save({ position: at(9) }, signal);
    // The paused old owner wakes up and tries to save where it had got to.
    await expect(old.save({ position: at(6) }, signal)).rejects.toBeInstanceOf(FencedOutError);
    expect((await current.load(signal)).position).toEqual(at(9));

    const store = new MongoSettingsStore(client, { database: db, collection: settings.collectionName });
    await expect(store.reportStatus('orders', { state: 'stopped' }, 1)).rejects.toBeInstanceOf(
      FencedOutError,
    );
    await expect(store.saveColumns('orders', [{ name: 'x', type: 'STRING' }], 1)).rejects.toBeInstanceOf(
      FencedOutError,
    );
    await store.reportStatus('orders', { state: 'streaming' }, 2);
    const doc = await settings.findOne({ _id: 'orders' } as Document);
    expect(doc?.status).toMatchObject({ state: 'streaming', fence: 2 });
    expect(doc?.columns).toBeUndefined();
    expect(await store.fenceOf('orders', signal)).toBe(2);
    // Many at once: the newest of the settings' and the checkpoint's; one without a token is left out.
    await settings.insertOne({ _id: 'customers', mongo_collection: 'customers' } as Document);
    expect(await store.fencesOf(['orders', 'customers', 'gone'], signal)).toEqual(new Map([['orders', 2]]));
  });
});
