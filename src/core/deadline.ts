/**
 * Bounds on waits: how long a stopping mapping may go on writing what it already read, and a way to stop
 * waiting for a request that cannot itself be recalled.
 */

/**
 * How long a stopping mapping goes on flushing (the write under way, the rows read since, then their
 * checkpoint; in a backfill, the chunk in hand and its progress) once it is told to stop: within the
 * daemon's graceful stop, bounded at 30 s (cli/run.ts), with time left to release the leases. Rows it cannot
 * write by then are read again by the next owner.
 */
export const DEFAULT_FINAL_FLUSH_TIMEOUT_MS = 20_000;

/**
 * Bounds each checkpoint save (a half-open connection to MongoDB must not hold a mapping for ever); a save
 * that runs out is an error, and the mapping restarts from the last position that was saved.
 */
export const DEFAULT_CHECKPOINT_SAVE_TIMEOUT_MS = 30_000;

/** `signal` (if any), bounded to `ms` from now. */
export function within(signal: AbortSignal | undefined, ms: number): AbortSignal {
  const timeout = AbortSignal.timeout(ms);
  return signal ? AbortSignal.any([signal, timeout]) : timeout;
}

/** A signal that aborts `ms` after `stop` does; dispose it once the work it bounds is over. */
export interface Deadline {
  readonly signal: AbortSignal;
  dispose(): void;
}

/**
 * A signal that aborts `ms` after `stop` does (a TimeoutError naming the final flush): the work that must
 * survive a stop (writing what was read) gets a bound of its own instead of the stop signal, which would
 * abandon it at once.
 */
export function deadlineAfter(stop: AbortSignal, ms: number): Deadline {
  const controller = new AbortController();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const arm = (): void => {
    timer = setTimeout(() => {
      controller.abort(
        new DOMException(
          `the final flush did not finish within ${String(ms)} ms of the stop: the rows read since the last checkpoint will be read again`,
          'TimeoutError',
        ),
      );
    }, ms);
    // The flush itself keeps the process alive while it runs; a timer left for nothing must not.
    timer.unref();
  };
  if (stop.aborted) arm();
  else stop.addEventListener('abort', arm, { once: true });
  return {
    signal: controller.signal,
    dispose: () => {
      stop.removeEventListener('abort', arm);
      clearTimeout(timer);
    },
  };
}

/**
 * `promise`, or the abort reason as soon as `signal` aborts. The request behind `promise` is not recalled
 * (it may still land, or fail unseen): use it only where a request that lands late does no harm, such as a
 * write the next attempt repeats under the same key.
 */
export function abortable<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return promise;
  if (signal.aborted) {
    // Nobody waits for it any more; its failure must not surface as an unhandled rejection.
    promise.catch(() => undefined);
    return Promise.reject(signal.reason as Error);
  }
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => {
      reject(signal.reason as Error);
    };
    signal.addEventListener('abort', onAbort, { once: true });
    // The request's own outcome, passed on as it came.
    promise
      .finally(() => {
        signal.removeEventListener('abort', onAbort);
      })
      .then(resolve, reject);
  });
}
