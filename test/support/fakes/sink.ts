import { type HistoryRecord } from '../../../src/core/history-rows.js';
import { type RecordSink } from '../../../src/core/stream-loop.js';

/** One `write` call as the sink saw it; the test settles it by hand. */
export interface ManualWrite {
  /** 1-based, in the order the writes were handed over. */
  readonly call: number;
  readonly records: readonly HistoryRecord[];
  readonly signal: AbortSignal | undefined;
  /** Acknowledges the write: every record is in BigQuery. */
  ack(): void;
  /** Fails the write with `error`. */
  fail(error: unknown): void;
  readonly settled: boolean;
}

/**
 * A RecordSink whose writes stay out until the test acknowledges or fails them, one by one and in any order.
 * It counts how many are out at once, and can settle each write as it arrives (`auto`).
 */
export class ManualSink implements RecordSink {
  readonly writes: ManualWrite[] = [];
  /** Writes handed over and not settled yet. */
  inFlight = 0;
  /** The most writes ever out at once. */
  maxInFlight = 0;
  readonly #waiters: { count: number; resolve: () => void }[] = [];

  /**
   * `auto`: settles each write as it is handed over (after the current microtasks), e.g. `(w) => w.ack()`;
   * may be set at any time (writes already out stay as they are: see `ackAll`).
   */
  constructor(public auto?: (write: ManualWrite) => void) {}

  /** Acknowledges every write out now. */
  ackAll(): void {
    for (const write of this.writes) write.ack();
  }

  write(
    records: readonly HistoryRecord[],
    signal?: AbortSignal,
  ): Promise<{ readonly written: number; readonly deadLettered: number }> {
    return new Promise((resolve, reject) => {
      let settled = false;
      const settle = (): boolean => {
        if (settled) return false;
        settled = true;
        this.inFlight--;
        return true;
      };
      const write: ManualWrite = {
        call: this.writes.length + 1,
        records: [...records],
        signal,
        ack: () => {
          if (settle()) resolve({ written: records.length, deadLettered: 0 });
        },
        fail: (error) => {
          if (settle()) reject(error instanceof Error ? error : new Error(String(error)));
        },
        get settled() {
          return settled;
        },
      };
      this.inFlight++;
      this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
      this.writes.push(write);
      this.#wake();
      if (this.auto) {
        const auto = this.auto;
        queueMicrotask(() => {
          auto(write);
        });
      }
    });
  }

  /** Resolves once at least `count` writes were handed over. */
  written(count: number): Promise<void> {
    if (this.writes.length >= count) return Promise.resolve();
    return new Promise((resolve) => {
      this.#waiters.push({ count, resolve });
    });
  }

  /** The write of call number `call` (1-based); throws when it was not made. */
  call(call: number): ManualWrite {
    const write = this.writes[call - 1];
    if (!write) throw new Error(`write ${call} was not made (${this.writes.length} were)`);
    return write;
  }

  #wake(): void {
    for (let i = this.#waiters.length - 1; i >= 0; i--) {
      const waiter = this.#waiters[i];
      if (waiter && this.writes.length >= waiter.count) {
        this.#waiters.splice(i, 1);
        waiter.resolve();
      }
    }
  }
}
