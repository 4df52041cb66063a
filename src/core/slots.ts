/**
 * A counting semaphore handing out a fixed number of slots first come, first served: how the daemon bounds
 * the mappings that prepare their tables or copy their collection at once (MAX_MAPPINGS_PREPARING), so that
 * hundreds of mappings starting together send BigQuery a few table and view requests at a time instead of
 * hundreds, and the first in line is served first rather than starved by later arrivals.
 */

/** A slot held; `release` gives it back (the first call does, later calls do nothing). */
export interface Slot {
  release(): void;
}

/** How many slots are held and how many callers wait, after every change (metrics). */
export type SlotsObserver = (state: { readonly held: number; readonly waiting: number }) => void;

interface Waiter {
  readonly grant: (slot: Slot) => void;
}

export class Slots {
  readonly capacity: number;
  readonly #observe: SlotsObserver | undefined;
  readonly #waiters: Waiter[] = [];
  #held = 0;

  constructor(capacity: number, observe?: SlotsObserver) {
    if (!Number.isInteger(capacity) || capacity < 1) {
      throw new RangeError(`slots must be a whole number of at least 1 (got ${String(capacity)})`);
    }
    this.capacity = capacity;
    this.#observe = observe;
  }

  get held(): number {
    return this.#held;
  }

  get waiting(): number {
    return this.#waiters.length;
  }

  /** A free slot now, or undefined when all are held (it never overtakes a caller that waits). */
  tryAcquire(): Slot | undefined {
    if (this.#held >= this.capacity || this.#waiters.length > 0) return undefined;
    this.#held++;
    this.#changed();
    return this.#slot();
  }

  /**
   * A slot, once every caller that asked before has had one. Rejects with the signal's reason when it aborts
   * first; the place in line is then given up, and no slot is taken.
   */
  acquire(signal: AbortSignal): Promise<Slot> {
    if (signal.aborted) return Promise.reject(signal.reason as Error);
    const free = this.tryAcquire();
    if (free !== undefined) return Promise.resolve(free);
    return new Promise<Slot>((resolve, reject) => {
      const waiter: Waiter = {
        grant: (slot) => {
          signal.removeEventListener('abort', onAbort);
          resolve(slot);
        },
      };
      const onAbort = (): void => {
        const index = this.#waiters.indexOf(waiter);
        // Not in line any more: it was granted a slot in the same turn, which its caller now holds.
        if (index < 0) return;
        this.#waiters.splice(index, 1);
        this.#changed();
        reject(signal.reason as Error);
      };
      signal.addEventListener('abort', onAbort, { once: true });
      this.#waiters.push(waiter);
      this.#changed();
    });
  }

  /** A slot whose first `release` hands it to the next caller in line, or frees it. */
  #slot(): Slot {
    let released = false;
    return {
      release: () => {
        if (released) return;
        released = true;
        const next = this.#waiters.shift();
        // Handed over directly: the count of held slots stays, and nobody arriving now can take it first.
        if (next === undefined) this.#held--;
        this.#changed();
        next?.grant(this.#slot());
      },
    };
  }

  #changed(): void {
    this.#observe?.({ held: this.#held, waiting: this.#waiters.length });
  }
}
