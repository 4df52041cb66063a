/**
 * How much a mapping may have on its way to BigQuery at once: requests and bytes. A remote BigQuery answers
 * in tens to hundreds of milliseconds; with one request out at a time the pipeline waits most of the time,
 * so several go out together, up to this window, and the reader stops (backpressure) while it is full.
 */
export interface WindowLimits {
  /** Requests (batches) in flight at once. */
  readonly maxRequests: number;
  /** Bytes in flight at once (as the batches were measured). */
  readonly maxBytes: number;
}

/**
 * Sized for a remote BigQuery: the requests needed are about the round trip over the time one batch takes
 * to prepare (500 rows at ~30 µs each on one core: ~15 ms), so 4 at 50 ms and 14 at 200 ms; 16 covers a far
 * region (measured with `npm run bench:pipeline`: at 200 ms, 8 requests cap a mapping at 8 × 500 / 0.2 s =
 * 20k events/s, 16 reach the CPU's limit, 32 gain nothing and hold twice the rows). 64 MB keeps memory
 * bounded whatever the row size (a request is at most 5 MB).
 */
export const DEFAULT_WINDOW_LIMITS: WindowLimits = Object.freeze({
  maxRequests: 16,
  maxBytes: 64_000_000,
});

/** One request's worth: always admitted when nothing else is in flight, so an oversized batch never stalls. */
interface Waiter {
  readonly bytes: number;
  readonly resolve: () => void;
  readonly reject: (reason: unknown) => void;
}

/**
 * Counting semaphore over requests and bytes, first come first served. `acquire` resolves when the batch may
 * go (a batch larger than `maxBytes` goes alone); `release` gives its share back.
 */
export class InFlightWindow {
  readonly #limits: WindowLimits;
  #requests = 0;
  #bytes = 0;
  readonly #waiters: Waiter[] = [];

  constructor(limits: WindowLimits = DEFAULT_WINDOW_LIMITS) {
    if (!(limits.maxRequests >= 1) || !(limits.maxBytes >= 1)) {
      throw new Error(`window limits must be at least 1 (got ${JSON.stringify(limits)})`);
    }
    this.#limits = limits;
  }

  get requests(): number {
    return this.#requests;
  }

  get bytes(): number {
    return this.#bytes;
  }

  get limits(): WindowLimits {
    return this.#limits;
  }

  /** Whether a batch of `bytes` would have to wait. */
  full(bytes = 0): boolean {
    return !this.#fits(bytes) || this.#waiters.length > 0;
  }

  /** Waits for room for one request of `bytes`; rejects with the signal's reason when it aborts first. */
  acquire(bytes: number, signal?: AbortSignal): Promise<void> {
    signal?.throwIfAborted();
    if (this.#waiters.length === 0 && this.#fits(bytes)) {
      this.#take(bytes);
      return Promise.resolve();
    }
    return new Promise<void>((resolve, reject) => {
      const waiter: Waiter = {
        bytes,
        resolve: () => {
          signal?.removeEventListener('abort', onAbort);
          resolve();
        },
        reject,
      };
      const onAbort = (): void => {
        const index = this.#waiters.indexOf(waiter);
        if (index >= 0) this.#waiters.splice(index, 1);
        reject(signal?.reason instanceof Error ? signal.reason : new Error('aborted'));
        this.#wake();
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.#waiters.push(waiter);
    });
  }

  release(bytes: number): void {
    if (this.#requests <= 0) throw new Error('window: release without acquire');
    this.#requests--;
    this.#bytes = Math.max(0, this.#bytes - bytes);
    this.#wake();
  }

  #fits(bytes: number): boolean {
    if (this.#requests === 0) return true;
    return this.#requests < this.#limits.maxRequests && this.#bytes + bytes <= this.#limits.maxBytes;
  }

  #take(bytes: number): void {
    this.#requests++;
    this.#bytes += bytes;
  }

  #wake(): void {
    for (;;) {
      const first = this.#waiters[0];
      if (first === undefined || !this.#fits(first.bytes)) return;
      this.#waiters.shift();
      this.#take(first.bytes);
      first.resolve();
    }
  }
}
