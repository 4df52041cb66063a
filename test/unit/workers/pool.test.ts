import { setTimeout as sleep } from 'node:timers/promises';
import { Worker } from 'node:worker_threads';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { dispositionOf } from '../../../src/errors.js';
import { mapOrdered, WorkerExitError, WorkerPool, WorkerTaskError } from '../../../src/workers/pool.js';
// `import type`: importing the worker module for real would start serving tasks on this thread.
import type { PoolTestResult, PoolTestTask, PoolTestWorkerData } from '../../support/pool-worker.js';

const MODULE = new URL('../../support/pool-worker.ts', import.meta.url);
const pools: WorkerPool<PoolTestTask, PoolTestResult>[] = [];

function pool(
  threads: number,
  restart = false,
  workerData: PoolTestWorkerData = {},
): WorkerPool<PoolTestTask, PoolTestResult> {
  const created = new WorkerPool<PoolTestTask, PoolTestResult>({
    module: MODULE,
    threads,
    restart,
    workerData,
  });
  pools.push(created);
  return created;
}

afterEach(async () => {
  await Promise.all(pools.splice(0).map((p) => p.close()));
  vi.restoreAllMocks();
});

/**
 * Watches every Worker's ref() and unref() from now on (they still run): the one worker started since (the
 * pool unrefs each as it starts it), and whether it keeps the process alive (its last call was ref()).
 */
function watchWorker(): { readonly worker: () => Worker; readonly referenced: () => boolean } {
  const ref = vi.spyOn(Worker.prototype, 'ref');
  const unref = vi.spyOn(Worker.prototype, 'unref');
  const worker = (): Worker => {
    const started = [...new Set(unref.mock.contexts)];
    const [only] = started;
    if (started.length !== 1 || !(only instanceof Worker))
      throw new Error(`${started.length} workers started`);
    return only;
  };
  const last = (spy: typeof ref): number =>
    Math.max(0, ...spy.mock.invocationCallOrder.filter((_, i) => spy.mock.contexts[i] === worker()));
  return { worker, referenced: () => last(ref) > last(unref) };
}

async function collect<T>(items: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const item of items) out.push(item);
  return out;
}

/** Starting a worker from sources compiles its imports first: seconds on a busy machine. */
const WORKER_TEST = { timeout: 60_000 };

describe('WorkerPool', WORKER_TEST, () => {
  it('runs tasks on several threads and yields their outputs in input order, though later ones finish first', async () => {
    const workers = pool(2);
    // The first tasks are the slowest: in completion order they would come last.
    const tasks = [0, 1, 2, 3, 4, 5, 6, 7].map((value) => ({ value, delayMs: (8 - value) * 25 }));
    const finished: number[] = [];
    const outputs = await collect(
      mapOrdered(
        tasks,
        (task) =>
          workers.run({ value: task }).then((result) => {
            finished.push(task.value);
            return result;
          }),
        4,
      ),
    );
    expect(outputs.map((o) => o.doubled)).toEqual([0, 2, 4, 6, 8, 10, 12, 14]);
    expect(finished).not.toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    expect(new Set(outputs.map((o) => o.thread)).size).toBe(2);
    // Buffers named for transfer arrive intact.
    expect(outputs.map((o) => o.bytes[0])).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
  });

  it('rejects a failed task with the worker error (name, message, code, disposition) and goes on with the others', async () => {
    const workers = pool(1);
    const failed = workers.run({ value: { value: 7, delayMs: 0, fail: 'throw' } });
    await expect(failed).rejects.toThrow(WorkerTaskError);
    await expect(failed).rejects.toMatchObject({
      message: 'RangeError: cannot take 7',
      remoteMessage: 'cannot take 7',
      code: 'TEST_CODE',
      disposition: 'fatal',
    });
    await expect(workers.run({ value: { value: 4, delayMs: 0 } })).resolves.toMatchObject({ doubled: 8 });
  });

  it('fails every pending and later task when a worker thread dies', async () => {
    const workers = pool(1);
    const slow = workers.run({ value: { value: 1, delayMs: 200 } });
    const dying = workers.run({ value: { value: 2, delayMs: 0, fail: 'exit' } });
    await expect(dying).rejects.toThrow(/worker thread exited/);
    await expect(slow).rejects.toThrow(/worker thread exited/);
    await expect(workers.run({ value: { value: 3, delayMs: 0 } })).rejects.toThrow(/worker thread exited/);
  });

  it('with restart: a worker that dies after it worked fails only its own tasks, and a new one takes the next', async () => {
    const workers = pool(1, true);
    const first = await workers.run({ value: { value: 1, delayMs: 0 } });
    const slow = workers.run({ value: { value: 2, delayMs: 200 } });
    const dying = workers.run({ value: { value: 3, delayMs: 0, fail: 'exit' } });
    await expect(dying).rejects.toThrow(/worker thread exited \(code 3\)/);
    // Queued behind the dying task on the same thread: it dies with it.
    await expect(slow).rejects.toThrow(/worker thread exited/);
    const after = await workers.run({ value: { value: 4, delayMs: 0 } });
    expect(after.doubled).toBe(8);
    expect(after.thread).not.toBe(first.thread);
    expect(workers.restarts).toBe(1);
    expect(workers.failure).toBeUndefined();
  });

  it('with restart: a task that kills every worker it lands on, sent again after each restart, fails only its own callers', async () => {
    const workers = pool(1, true);
    await expect(workers.run({ value: { value: 1, delayMs: 0 } })).resolves.toMatchObject({ doubled: 2 });
    // A mapping's poison batch, sent again by the mapping after each restart: each time it lands on a worker
    // that never answered anything yet (the new one), and kills it.
    for (let attempt = 1; attempt <= 3; attempt++) {
      const poison = workers.run({ value: { value: 2, delayMs: 0, fail: 'exit' } });
      await expect(poison).rejects.toThrow(WorkerExitError);
      await expect(poison).rejects.toMatchObject({ exitCode: 3, message: 'a worker thread exited (code 3)' });
      // The mapping restarts with backoff and sends it again.
      expect(dispositionOf(await poison.catch((error: unknown) => error))).toBe('retryable');
      expect(workers.restarts).toBe(attempt);
      expect(workers.failure).toBeUndefined();
    }
    // The other mappings' tasks still run.
    await expect(workers.run({ value: { value: 3, delayMs: 0 } })).resolves.toMatchObject({ doubled: 6 });
    expect(workers.failure).toBeUndefined();
  });

  it('with restart: a worker killed by the first task it is given is started again (it was ready)', async () => {
    const workers = pool(1, true);
    await expect(workers.run({ value: { value: 1, delayMs: 0, fail: 'exit' } })).rejects.toThrow(/exited/);
    await expect(workers.run({ value: { value: 2, delayMs: 0 } })).resolves.toMatchObject({ doubled: 4 });
    expect(workers.restarts).toBe(1);
  });

  it('with restart: a worker whose module cannot start fails the pool, and no worker is started again', async () => {
    const workers = pool(2, true, { failToStart: true });
    const first = workers.run({ value: { value: 1, delayMs: 0 } });
    await expect(first).rejects.toThrow(/this worker module cannot start/);
    await expect(workers.run({ value: { value: 2, delayMs: 0 } })).rejects.toThrow(/cannot start/);
    expect(workers.failure?.message).toMatch(/cannot start/);
    expect(workers.restarts).toBe(0);
  });

  it('rejects a task whose input cannot be sent, and forgets it: the worker is idle again, the next task runs', async () => {
    const { referenced } = watchWorker();
    const workers = pool(1);
    // A function cannot be cloned: postMessage throws.
    const sent = workers.run({ value: { value: 0, delayMs: 0, extra: () => 1 } as unknown as PoolTestTask });
    await expect(sent).rejects.toThrow(/could not be cloned/);
    // It was not left in the worker's tasks: the worker no longer keeps the process alive.
    expect(referenced()).toBe(false);
    await expect(workers.run({ value: { value: 4, delayMs: 0 } })).resolves.toMatchObject({ doubled: 8 });
    expect(referenced()).toBe(false);
  });

  it('rejects (retryable) every task a worker holds when one of its replies cannot be read, and goes on', async () => {
    const { worker, referenced } = watchWorker();
    const workers = pool(1, true);
    await expect(workers.run({ value: { value: 1, delayMs: 0 } })).resolves.toMatchObject({ doubled: 2 });
    const slow = workers.run({ value: { value: 2, delayMs: 300 } });
    const slower = workers.run({ value: { value: 3, delayMs: 400 } });
    expect(referenced()).toBe(true);
    // What Node emits when a message from the thread fails to deserialise here.
    worker().emit('messageerror', new Error('cannot deserialise this'));
    await expect(slow).rejects.toThrow(/reply could not be read: cannot deserialise this/);
    await expect(slower).rejects.toThrow(/reply could not be read/);
    expect(dispositionOf(await slow.catch((error: unknown) => error))).toBe('retryable');
    expect(referenced()).toBe(false);
    // The pool goes on; the worker's late replies to the rejected tasks are dropped.
    await expect(workers.run({ value: { value: 5, delayMs: 500 } })).resolves.toMatchObject({ doubled: 10 });
    expect(workers.failure).toBeUndefined();
  });

  it('rejects tasks after close', async () => {
    const workers = pool(1);
    await workers.close();
    await expect(workers.run({ value: { value: 1, delayMs: 0 } })).rejects.toThrow(/closed/);
  });

  it('refuses a pool without threads', () => {
    expect(() => new WorkerPool({ module: MODULE, threads: 0 })).toThrow(RangeError);
  });
});

describe('mapOrdered', () => {
  it('keeps at most `window` calls in flight and reads inputs only as the window frees up', async () => {
    let running = 0;
    let most = 0;
    let read = 0;
    function* inputs() {
      for (let i = 0; i < 20; i++) {
        read++;
        yield i;
      }
    }
    const seen: number[] = [];
    for await (const out of mapOrdered(
      inputs(),
      async (i) => {
        running++;
        most = Math.max(most, running);
        await sleep((i * 7) % 5);
        running--;
        return i * 10;
      },
      3,
    )) {
      seen.push(out);
      // The consumer is one output behind the window: never more than window + 1 inputs read ahead.
      expect(read).toBeLessThanOrEqual(seen.length + 3);
    }
    expect(seen).toEqual(Array.from({ length: 20 }, (_, i) => i * 10));
    expect(most).toBe(3);
  });

  it('yields the outputs before a failed call, then rejects with its error', async () => {
    const seen: number[] = [];
    const run = async () => {
      for await (const out of mapOrdered(
        [1, 2, 3, 4],
        async (i) => {
          await sleep(i === 3 ? 0 : 10);
          if (i === 3) throw new Error('three');
          return i;
        },
        4,
      )) {
        seen.push(out);
      }
    };
    await expect(run()).rejects.toThrow('three');
    expect(seen).toEqual([1, 2]);
  });
});
