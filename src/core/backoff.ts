import { setTimeout as sleep } from 'node:timers/promises';

/** Exponential backoff with full jitter (delay drawn from [0, min(max, initial * multiplier^attempt)]). */
export interface BackoffPolicy {
  readonly initialMs: number;
  readonly maxMs: number;
  readonly multiplier: number;
  /** Attempts in all, the first one included. */
  readonly maxAttempts: number;
}

/**
 * Full jitter over 12 attempts: at most about 2.5 minutes of waiting before giving up, about 1.3 on average.
 * Rides out BigQuery's transient errors and short outages; past that, the supervisor restarts the mapping
 * with its own backoff (up to a minute between restarts), so a long outage only delays.
 */
export const DEFAULT_BACKOFF: BackoffPolicy = Object.freeze({
  initialMs: 250,
  maxMs: 30_000,
  multiplier: 2,
  maxAttempts: 12,
});

/**
 * Waiting for BigQuery to accept a table's new columns. Google documents that a schema change reaches the
 * Storage Write default stream (and streaming inserts) "in the order of minutes"; until then BigQuery refuses
 * the rows with "Input schema has more fields than BigQuery schema" although they are fine. Full jitter from
 * 1 s up to 30 s over 30 attempts: about 6 minutes of waiting on average, at most about 12.5; past that the
 * write fails as retryable and the supervisor restarts the mapping from its checkpoint.
 */
export const DEFAULT_SCHEMA_BACKOFF: BackoffPolicy = Object.freeze({
  initialMs: 1_000,
  maxMs: 30_000,
  multiplier: 2,
  maxAttempts: 30,
});

export function backoffDelay(
  attempt: number,
  policy: BackoffPolicy,
  random: () => number = Math.random,
): number {
  const ceiling = Math.min(policy.maxMs, policy.initialMs * policy.multiplier ** attempt);
  return Math.floor(random() * ceiling);
}

export interface RetryOptions {
  readonly policy?: BackoffPolicy;
  readonly signal?: AbortSignal;
  /** Injected in tests. */
  readonly sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
  readonly random?: () => number;
  /** Called before each wait, for logs and metrics. */
  readonly onRetry?: (error: unknown, attempt: number, delayMs: number) => void;
}

/** Sleeps `ms`, or rejects with the abort reason as soon as `signal` aborts. */
export async function abortableSleep(ms: number, signal?: AbortSignal): Promise<void> {
  await sleep(ms, undefined, signal ? { signal } : undefined);
}

/**
 * Runs `fn` until it succeeds, `isRetryable` says no, the attempts are used up, or `signal` aborts; the
 * last error is rethrown. The caller keeps its request identical across attempts (same dedup keys).
 */
export async function retry<T>(
  fn: (attempt: number) => Promise<T>,
  isRetryable: (error: unknown) => boolean,
  options: RetryOptions = {},
): Promise<T> {
  const policy = options.policy ?? DEFAULT_BACKOFF;
  const wait = options.sleep ?? abortableSleep;
  for (let attempt = 0; ; attempt++) {
    options.signal?.throwIfAborted();
    try {
      return await fn(attempt);
    } catch (error) {
      if (attempt + 1 >= policy.maxAttempts || !isRetryable(error)) throw error;
      const delay = backoffDelay(attempt, policy, options.random);
      options.onRetry?.(error, attempt, delay);
      await wait(delay, options.signal);
    }
  }
}
