import { describe, expect, it } from 'vitest';
import { abortable, deadlineAfter } from '../../../src/core/deadline.js';

const never = <T>(): Promise<T> => new Promise<T>(() => undefined);

describe('deadlineAfter', () => {
  it('issue 10 item 17: stays open when the stop comes, and aborts only its bound later', async () => {
    const stop = new AbortController();
    const deadline = deadlineAfter(stop.signal, 50);
    try {
      stop.abort(new Error('stop'));
      expect(deadline.signal.aborted).toBe(false);
      await new Promise((resolve) => setTimeout(resolve, 100));
      expect(deadline.signal.aborted).toBe(true);
      expect((deadline.signal.reason as DOMException).name).toBe('TimeoutError');
    } finally {
      deadline.dispose();
    }
  });

  it('never aborts once disposed, and is armed at once for a stop that already came', async () => {
    const stop = new AbortController();
    const disposed = deadlineAfter(stop.signal, 10);
    disposed.dispose();
    stop.abort();
    const late = deadlineAfter(stop.signal, 10);
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(disposed.signal.aborted).toBe(false);
    expect(late.signal.aborted).toBe(true);
    late.dispose();
  });
});

describe('abortable', () => {
  it('issue 10 item 11: gives up an unanswered request when the signal aborts, with its reason', async () => {
    const controller = new AbortController();
    const waiting = abortable(never<number>(), controller.signal);
    const reason = new Error('stopping');
    controller.abort(reason);
    await expect(waiting).rejects.toBe(reason);
    const already = abortable(Promise.reject(new Error('late failure')), controller.signal);
    await expect(already).rejects.toBe(reason);
  });

  it('passes on the answer or the failure of a request that comes first', async () => {
    const controller = new AbortController();
    await expect(abortable(Promise.resolve(7), controller.signal)).resolves.toBe(7);
    const failure = new Error('refused');
    await expect(abortable(Promise.reject(failure), controller.signal)).rejects.toBe(failure);
    await expect(abortable(Promise.resolve('x'), undefined)).resolves.toBe('x');
  });
});
