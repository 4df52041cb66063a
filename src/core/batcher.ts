/**
 * Request limits. BigQuery refuses insertAll requests over 10 MB and Storage Write AppendRows requests over
 * 10 MB; rows are capped at 10 MB too. We stay at half of that per request so JSON/protobuf framing and
 * the size estimate's error never matter, and at 500 rows, Google's recommendation for insertAll. The linger
 * bounds the latency a quiet collection adds (a change waits at most a second before it is sent).
 */
export interface BatchLimits {
  readonly maxRows: number;
  readonly maxBytes: number;
  /** A row larger than this can never be sent: it goes to the dead-letter table. */
  readonly maxRowBytes: number;
  readonly lingerMs: number;
}

export const DEFAULT_BATCH_LIMITS: BatchLimits = Object.freeze({
  maxRows: 500,
  maxBytes: 5_000_000,
  maxRowBytes: 9_000_000,
  lingerMs: 1_000,
});

export const MAX_REQUEST_BYTES = 10_000_000;

export interface Sized<T> {
  readonly item: T;
  readonly bytes: number;
}

export interface SplitResult<T> {
  /** In order; each within maxRows and maxBytes. */
  readonly batches: readonly (readonly Sized<T>[])[];
  /** Items over maxRowBytes, in order. */
  readonly oversized: readonly Sized<T>[];
}

/** Splits items, in order, into request-sized batches; items too large for any request are set apart. */
export function splitIntoBatches<T>(items: readonly Sized<T>[], limits: BatchLimits): SplitResult<T> {
  const batches: Sized<T>[][] = [];
  const oversized: Sized<T>[] = [];
  let current: Sized<T>[] = [];
  let bytes = 0;
  for (const entry of items) {
    if (entry.bytes > limits.maxRowBytes) {
      oversized.push(entry);
      continue;
    }
    if (current.length > 0 && (current.length >= limits.maxRows || bytes + entry.bytes > limits.maxBytes)) {
      batches.push(current);
      current = [];
      bytes = 0;
    }
    current.push(entry);
    bytes += entry.bytes;
  }
  if (current.length > 0) batches.push(current);
  return { batches, oversized };
}

/**
 * Collects items until a batch is full or has waited `lingerMs`; the owner polls `due()` or takes `full()`.
 * Pure bookkeeping: no timers, the clock is passed in.
 */
export class Batcher<T> {
  readonly #limits: BatchLimits;
  #items: Sized<T>[] = [];
  #bytes = 0;
  #since: number | undefined;

  constructor(limits: BatchLimits = DEFAULT_BATCH_LIMITS) {
    this.#limits = limits;
  }

  get size(): number {
    return this.#items.length;
  }

  get bytes(): number {
    return this.#bytes;
  }

  add(item: T, bytes: number, now: number): void {
    this.#since ??= now;
    this.#items.push({ item, bytes });
    this.#bytes += bytes;
  }

  /**
   * Whether one more item of `bytes` keeps the batch within maxRows and maxBytes (an empty batch takes any
   * item): a producer that sends the batch before adding an item that does not fit sends request-sized
   * batches, each one request of the sink.
   */
  fits(bytes: number): boolean {
    return (
      this.#items.length === 0 ||
      (this.#items.length < this.#limits.maxRows && this.#bytes + bytes <= this.#limits.maxBytes)
    );
  }

  /** True when the batch should be sent now: full by rows or bytes, or older than the linger time. */
  due(now: number): boolean {
    if (this.#items.length === 0) return false;
    return (
      this.#items.length >= this.#limits.maxRows ||
      this.#bytes >= this.#limits.maxBytes ||
      now - (this.#since ?? now) >= this.#limits.lingerMs
    );
  }

  /** Milliseconds until the linger time is up (0 when due), or undefined when empty. */
  msUntilDue(now: number): number | undefined {
    if (this.#items.length === 0 || this.#since === undefined) return undefined;
    return this.due(now) ? 0 : Math.max(0, this.#since + this.#limits.lingerMs - now);
  }

  take(): Sized<T>[] {
    const items = this.#items;
    this.#items = [];
    this.#bytes = 0;
    this.#since = undefined;
    return items;
  }
}
