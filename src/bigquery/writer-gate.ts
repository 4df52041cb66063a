import { abortable } from '../core/deadline.js';
import { type RowEncoding } from '../core/prepared.js';
import {
  type AppendOutcome,
  type EncodedRow,
  type HistoryRow,
  type OutgoingRow,
  type TableWriter,
} from './writer.js';

/** The size-only encodings of writers that have none of their own, one per writer (the same object). */
const SIZE_ONLY = new WeakMap<TableWriter, RowEncoding>();

/**
 * The history table's writer as the sink sees it, while schema changes rebuild or replace it under writes in
 * flight. `rebuild` pauses sending (appends handed over meanwhile wait), waits until the appends already
 * sent are answered, runs the rebuild (which may return another writer, the old one then closed by the
 * caller), and resumes: the waiting appends go out through the writer the rebuild left, never through one
 * that was closed, and none of those in flight is cut off by the change.
 */
export class WriterGate {
  #writer: TableWriter;
  #inFlight = 0;
  #drained: (() => void)[] = [];
  /** Settles when the rebuild under way is over; undefined while sending is open. */
  #paused: Promise<void> | undefined;
  /** What the sink writes through: always the current writer, waiting while a rebuild is under way. */
  readonly writer: TableWriter;

  constructor(writer: TableWriter) {
    this.#writer = writer;
    const current = (): TableWriter => this.#writer;
    this.writer = {
      get kind() {
        return current().kind;
      },
      append: (rows, signal) => this.#append(rows, signal),
      encode: (row) => this.encode(row),
      rowEncoding: () => this.rowEncoding(),
      updateSchema: (schema) =>
        this.rebuild(async (current) => {
          await current.updateSchema(schema);
          return current;
        }),
      close: () => this.#writer.close(),
    };
  }

  get current(): TableWriter {
    return this.#writer;
  }

  /** Appends handed to the current writer and not answered yet. */
  get inFlight(): number {
    return this.#inFlight;
  }

  /** A row encoded by the current writer. */
  encode(row: HistoryRow): EncodedRow {
    return this.#writer.encode(row);
  }

  /**
   * The current writer's encoding for worker threads; for a writer without one, an encoding whose rows
   * carry their size only (the writer encodes them again when they are sent).
   */
  rowEncoding(): RowEncoding {
    const writer = this.#writer;
    if (writer.rowEncoding) return writer.rowEncoding();
    let fallback = SIZE_ONLY.get(writer);
    if (fallback === undefined) {
      fallback = {
        spec: { format: 'insert-all', idColumn: '_event_id' },
        wrap: (_bytes, size) => ({ size }),
      };
      SIZE_ONLY.set(writer, fallback);
    }
    return fallback;
  }

  /**
   * Pauses sending, waits for the appends in flight, then runs `change` on the current writer; the writer it
   * returns is used from then on. Callers serialise their rebuilds (one at a time).
   */
  async rebuild(change: (current: TableWriter) => Promise<TableWriter>): Promise<void> {
    let resume: () => void = () => undefined;
    this.#paused = new Promise<void>((resolve) => {
      resume = resolve;
    });
    try {
      await this.#drain();
      this.#writer = await change(this.#writer);
    } finally {
      this.#paused = undefined;
      resume();
    }
  }

  async #append(rows: readonly OutgoingRow[], signal: AbortSignal | undefined): Promise<AppendOutcome> {
    while (this.#paused !== undefined) await abortable(this.#paused, signal);
    this.#inFlight++;
    try {
      return await this.#writer.append(rows, signal);
    } finally {
      this.#inFlight--;
      if (this.#inFlight === 0) for (const wake of this.#drained.splice(0)) wake();
    }
  }

  /** Resolves when no append is in flight (each is bounded by its writer's own deadline or its caller's). */
  #drain(): Promise<void> {
    if (this.#inFlight === 0) return Promise.resolve();
    return new Promise<void>((resolve) => this.#drained.push(resolve));
  }
}

/** Runs tasks one at a time, in the order they were queued; a failed task does not stop the ones after it. */
export class SerialQueue {
  #tail: Promise<unknown> = Promise.resolve();

  run<T>(task: () => Promise<T>): Promise<T> {
    const result = this.#tail.then(task);
    this.#tail = result.catch(() => undefined);
    return result;
  }
}
