import { type HistoryRecord } from '../../../src/core/history-rows.js';
import { type RecordSink } from '../../../src/core/stream-loop.js';

/** One `write` call the test answers by hand. */
export interface HeldWrite {
  readonly records: readonly HistoryRecord[];
  readonly ids: readonly unknown[];
  ack(): void;
  fail(error: Error): void;
  readonly settled: boolean;
}

/**
 * A RecordSink whose writes wait until the test acknowledges or fails them (`auto` acknowledges each after
 * a macrotask). Records what was written and how many writes were out at once.
 */
export class HeldSink implements RecordSink {
  readonly writes: HeldWrite[] = [];
  /** The `_doc_id` of every acknowledged row, in acknowledgement order. */
  readonly acknowledged: string[] = [];
  inFlight = 0;
  maxInFlight = 0;
  #waiters: (() => void)[] = [];

  constructor(private readonly auto = false) {}

  write(records: readonly HistoryRecord[]): Promise<{ written: number; deadLettered: number }> {
    this.inFlight++;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    return new Promise((resolve, reject) => {
      let settled = false;
      const settle = (): boolean => {
        if (settled) return false;
        settled = true;
        this.inFlight--;
        return true;
      };
      const held: HeldWrite = {
        records,
        ids: records.map((r) => r.docId),
        ack: () => {
          if (!settle()) return;
          this.acknowledged.push(...records.map((r) => String(r.docId)));
          resolve({ written: records.length, deadLettered: 0 });
        },
        fail: (error) => {
          if (settle()) reject(error);
        },
        get settled() {
          return settled;
        },
      };
      this.writes.push(held);
      for (const wake of this.#waiters.splice(0)) wake();
      if (this.auto)
        setTimeout(() => {
          held.ack();
        }, 0);
    });
  }

  /** The writes not answered yet. */
  get pending(): HeldWrite[] {
    return this.writes.filter((w) => !w.settled);
  }

  /** Resolves once at least `count` writes were made. */
  async writesMade(count: number): Promise<void> {
    while (this.writes.length < count) {
      await new Promise<void>((resolve) => this.#waiters.push(resolve));
    }
  }
}
