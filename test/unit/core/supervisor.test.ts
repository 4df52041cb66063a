import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { type MappingSettings } from '../../../src/config/settings.js';
import { type MappingStatus, type SettingsEntry, type SettingsStore } from '../../../src/core/ports.js';
import { Supervisor, type MappingHooks } from '../../../src/core/supervisor.js';
import { BigQueryError } from '../../../src/errors.js';

/** An in-memory settings collection: `waitForChange` wakes on every write of the test, or every 5 ms. */
class MemoryStore implements SettingsStore {
  readonly docs = new Map<string, Record<string, unknown>>();
  readonly failures = new Map<string, string | null>();
  readonly statuses: { id: string; status: MappingStatus }[] = [];
  ensure(): Promise<void> {
    return Promise.resolve();
  }
  list(): Promise<readonly SettingsEntry[]> {
    return Promise.resolve(
      [...this.docs].map(([id, document]) => ({ id, document: structuredClone(document) })),
    );
  }
  async waitForChange(signal: AbortSignal): Promise<void> {
    await sleep(5, undefined, { signal });
  }
  reportFailure(id: string, message: string | null): Promise<void> {
    this.failures.set(id, message);
    const doc = this.docs.get(id);
    if (doc) doc.lastFailure = message;
    return Promise.resolve();
  }
  reportStatus(id: string, status: MappingStatus): Promise<void> {
    this.statuses.push({ id, status });
    const doc = this.docs.get(id);
    if (doc) doc.status = { state: status.state };
    return Promise.resolve();
  }
  saveColumns(id: string, columns: readonly unknown[]): Promise<void> {
    const doc = this.docs.get(id);
    if (doc) doc.columns = columns;
    return Promise.resolve();
  }
}

const mapping = (collection: string, extra: Record<string, unknown> = {}) => ({
  mongo_database: 'shop',
  mongo_collection: collection,
  bigquery_table: collection,
  ...extra,
});

/** Records starts and stops; each run streams until aborted, or fails as scripted. */
class FakeRuns {
  readonly starts: string[] = [];
  readonly stops: string[] = [];
  failNext = new Map<string, Error[]>();
  hooks = new Map<string, MappingHooks>();
  run = async (settings: MappingSettings, signal: AbortSignal, hooks: MappingHooks): Promise<void> => {
    this.starts.push(settings.mongoCollection);
    this.hooks.set(settings.id, hooks);
    const failure = this.failNext.get(settings.id)?.shift();
    if (failure) throw failure;
    hooks.report({ state: 'streaming' });
    await new Promise<void>((resolve) => {
      signal.addEventListener('abort', () => {
        resolve();
      });
    });
    this.stops.push(settings.mongoCollection);
  };
}

const quietLog = { info: () => undefined, warn: () => undefined, error: () => undefined };

async function eventually(check: () => void, ms = 2_000): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      check();
      return;
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await sleep(5);
    }
  }
}

function setup() {
  const store = new MemoryStore();
  const runs = new FakeRuns();
  const supervisor = new Supervisor({
    store,
    runMapping: runs.run,
    log: quietLog,
    restartDelayMs: (_n, e) => (e instanceof BigQueryError ? undefined : 1),
  });
  const controller = new AbortController();
  return { store, runs, supervisor, controller, done: () => supervisor.run(controller.signal) };
}

describe('supervisor', () => {
  it('runs the valid mappings and marks an invalid one with a precise lastFailure', async () => {
    const { store, runs, supervisor, controller, done } = setup();
    store.docs.set('a', mapping('orders', { _id: 'a' }));
    store.docs.set('b', mapping('users', { _id: 'b', columns: [{ name: 'x', type: 'NOPE' }] }));
    store.docs.set('c', mapping('items', { _id: 'c' }));
    const running = done();
    await eventually(() => {
      expect(runs.starts.sort()).toEqual(['items', 'orders']);
    });
    expect(store.failures.get('b')).toMatch(/^invalid settings: columns\[0\]\.type: expected one of STRING/);
    expect(store.statuses.find((s) => s.id === 'b')?.status.state).toBe('invalid');
    await eventually(() => {
      expect(supervisor.ready()).toEqual({
        ready: true,
        detail: { a: 'streaming', b: 'invalid', c: 'streaming' },
      });
    });
    controller.abort();
    await running;
    expect(runs.stops.sort()).toEqual(['items', 'orders']);
  });

  // Defect 3 of the original: any settings change, its own lastFailure write included, restarted every worker.
  it("defect 3: the service's own writes restart nothing; a configuration change restarts only that mapping", async () => {
    const { store, runs, controller, done } = setup();
    store.docs.set('a', mapping('orders', { _id: 'a' }));
    store.docs.set('b', mapping('users', { _id: 'b' }));
    const running = done();
    await eventually(() => {
      expect(runs.starts.length).toBe(2);
    });
    const a = store.docs.get('a') ?? {};
    a.lastFailure = 'boom';
    a.lastChangeId = { _data: '82' };
    a.status = { state: 'streaming', lagSeconds: 1 };
    const columns = [{ name: '_id', type: 'STRING', mongo_field: '_id', primary_key: true }];
    runs.hooks.get('a')?.columnsSaved(columns);
    a.columns = columns;
    await sleep(50);
    expect(runs.starts).toEqual(['orders', 'users']);
    const b = store.docs.get('b') ?? {};
    b.bigquery_table = 'users_v2';
    await eventually(() => {
      expect(runs.starts).toEqual(['orders', 'users', 'users']);
    });
    expect(runs.stops).toEqual(['users']);
    controller.abort();
    await running;
  });

  it('stops a mapping whose settings document is removed', async () => {
    const { store, runs, controller, done } = setup();
    store.docs.set('a', mapping('orders', { _id: 'a' }));
    const running = done();
    await eventually(() => {
      expect(runs.starts).toEqual(['orders']);
    });
    store.docs.delete('a');
    await eventually(() => {
      expect(runs.stops).toEqual(['orders']);
    });
    controller.abort();
    await running;
  });

  it('restarts a failed mapping with backoff, but waits for new settings after a fatal error', async () => {
    const { store, runs, supervisor, controller, done } = setup();
    store.docs.set('a', mapping('orders', { _id: 'a' }));
    store.docs.set('b', mapping('users', { _id: 'b' }));
    runs.failNext.set('a', [new Error('socket closed')]);
    runs.failNext.set('b', [new BigQueryError('fatal', 'Access Denied')]);
    const running = done();
    await eventually(() => {
      expect(runs.starts.filter((s) => s === 'orders')).toHaveLength(2);
    });
    await eventually(() => {
      expect(supervisor.ready().detail).toEqual({ a: 'streaming', b: 'failed' });
    });
    expect(store.failures.get('b')).toBe('Access Denied');
    expect(runs.starts.filter((s) => s === 'users')).toHaveLength(1);
    expect(supervisor.ready().ready).toBe(false);
    controller.abort();
    await running;
  });
});
