// A worker module for the worker-pool tests: doubles numbers after a delay, and fails on request.
import { setTimeout as sleep } from 'node:timers/promises';
import { threadId, workerData } from 'node:worker_threads';
import { serveTasks } from '../../src/workers/pool.js';

/** The pool's `workerData` for this module. */
export interface PoolTestWorkerData {
  /** The module throws while it loads: its workers never become ready. */
  readonly failToStart?: boolean;
}

export interface PoolTestTask {
  readonly value: number;
  readonly delayMs: number;
  /** `throw`: the task fails; `exit`: the whole worker thread dies. */
  readonly fail?: 'throw' | 'exit';
}

export interface PoolTestResult {
  readonly doubled: number;
  readonly thread: number;
  readonly bytes: Uint8Array;
}

if ((workerData as PoolTestWorkerData | undefined)?.failToStart === true) {
  throw new Error('this worker module cannot start');
}

serveTasks(async (task: PoolTestTask) => {
  await sleep(task.delayMs);
  if (task.fail === 'exit') process.exit(3);
  if (task.fail === 'throw') {
    throw Object.assign(new RangeError(`cannot take ${task.value}`), {
      code: 'TEST_CODE',
      disposition: 'fatal',
    });
  }
  const bytes = Uint8Array.of(task.value);
  const result: PoolTestResult = { doubled: task.value * 2, thread: threadId, bytes };
  return { value: result, transfer: [bytes.buffer] };
});
