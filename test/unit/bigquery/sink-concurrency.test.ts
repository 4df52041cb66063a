// BigQuerySink with several `write` calls in flight at once (issue 11: the stream loop keeps a window of
// batches out, and a backfill writes through the same sink): each call keeps its own retries, halving and
// dead letters; schema repair is shared.
import { describe, expect, it } from 'vitest';
import { BigQuerySink, type SinkRecord } from '../../../src/bigquery/sink.js';
import {
  type AppendOutcome,
  type EncodedRow,
  type HistoryRow,
  type OutgoingRow,
  type TableWriter,
} from '../../../src/bigquery/writer.js';
import { rowBytes } from '../../../src/core/stream-loop.js';
import { historyRecord } from '../../support/outgoing-rows.js';

interface Call {
  readonly rows: readonly HistoryRow[];
  answer(outcome: AppendOutcome | Error): void;
}

/** A writer whose appends stay out until the test answers them, in any order. */
class HeldWriter implements TableWriter {
  readonly kind = 'insert-all' as const;
  readonly calls: Call[] = [];
  readonly #waiters: (() => void)[] = [];

  encode(row: HistoryRow): EncodedRow {
    return { size: rowBytes(row) };
  }

  append(outgoing: readonly OutgoingRow[]): Promise<AppendOutcome> {
    const rows = outgoing.map((r) => r.row());
    return new Promise<AppendOutcome>((resolve, reject) => {
      this.calls.push({
        rows: [...rows],
        answer: (outcome) => {
          if (outcome instanceof Error) reject(outcome);
          else resolve(outcome);
        },
      });
      for (const wake of this.#waiters.splice(0)) wake();
    });
  }

  /** Resolves once `count` appends were made in all. */
  async calledTimes(count: number): Promise<void> {
    while (this.calls.length < count) {
      await new Promise<void>((resolve) => this.#waiters.push(resolve));
    }
  }

  call(n: number): Call {
    const call = this.calls[n];
    if (call === undefined) throw new Error(`no append #${n}`);
    return call;
  }

  updateSchema(): Promise<void> {
    return Promise.resolve();
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}

/** A writer that answers at once; records what it was given. */
class RecordingWriter implements TableWriter {
  readonly kind = 'insert-all' as const;
  readonly calls: HistoryRow[][] = [];
  encode(row: HistoryRow): EncodedRow {
    return { size: rowBytes(row) };
  }

  append(outgoing: readonly OutgoingRow[]): Promise<AppendOutcome> {
    const rows = outgoing.map((r) => r.row());
    this.calls.push([...rows]);
    return Promise.resolve({ rejected: [] });
  }
  updateSchema(): Promise<void> {
    return Promise.resolve();
  }
  close(): Promise<void> {
    return Promise.resolve();
  }
}

const OK: AppendOutcome = { rejected: [] };
const missingColumn = () => Object.assign(new Error('no such field: fresh.'), { code: 400 });
const NO_WAIT = { initialMs: 0, maxMs: 0, multiplier: 1, maxAttempts: 5 };

function records(prefix: string, n: number): SinkRecord[] {
  return Array.from({ length: n }, (_, i) =>
    historyRecord({
      row: { _event_id: `${prefix}${i}`, _doc_id: `${prefix}${i}`, v: i },
      document: () => `{"_id":"${prefix}${i}"}`,
    }),
  );
}

/** A repair the test completes by hand, counting its calls. */
function heldRepair() {
  let finish: () => void = () => undefined;
  const state = { calls: 0, done: false };
  const repair = () => {
    state.calls++;
    return new Promise<void>((resolve) => {
      finish = () => {
        state.done = true;
        resolve();
      };
    });
  };
  return {
    state,
    repair,
    finish: () => {
      finish();
    },
  };
}

const tick = () => new Promise((resolve) => setImmediate(resolve));

describe('BigQuerySink with concurrent writes (issue 11)', () => {
  it('issue 11 item 1: concurrent batches refused for their schema share one repair, then each retries', async () => {
    const writer = new HeldWriter();
    const repair = heldRepair();
    const sink = new BigQuerySink({
      mappingId: 'm1',
      writer,
      deadLetterWriter: new RecordingWriter(),
      onSchemaMismatch: repair.repair,
      backoff: NO_WAIT,
      schemaBackoff: NO_WAIT,
    });

    const first = sink.write(records('a', 2));
    const second = sink.write(records('b', 3));
    await writer.calledTimes(2);
    writer.call(0).answer(missingColumn());
    writer.call(1).answer(missingColumn());
    await tick();
    await tick();
    expect(repair.state.calls).toBe(1);
    // Nothing is retried before the repair is over.
    expect(writer.calls).toHaveLength(2);
    repair.finish();
    await writer.calledTimes(4);
    writer.call(2).answer(OK);
    writer.call(3).answer(OK);

    expect(await first).toEqual({ written: 2, deadLettered: 0, reasons: [] });
    expect(await second).toEqual({ written: 3, deadLettered: 0, reasons: [] });
    expect(repair.state.calls).toBe(1);
    expect(
      writer.calls
        .slice(2)
        .map((c) => c.rows.length)
        .sort(),
    ).toEqual([2, 3]);
  });

  it('issue 11 item 1: a batch sent before a repair that has completed since retries without a second repair', async () => {
    const writer = new HeldWriter();
    const repair = heldRepair();
    const sink = new BigQuerySink({
      mappingId: 'm1',
      writer,
      deadLetterWriter: new RecordingWriter(),
      onSchemaMismatch: repair.repair,
      backoff: NO_WAIT,
      schemaBackoff: NO_WAIT,
    });

    const first = sink.write(records('a', 1));
    const second = sink.write(records('b', 1));
    await writer.calledTimes(2);
    // The first batch's refusal starts a repair, which completes while the second batch is still out.
    writer.call(0).answer(missingColumn());
    await tick();
    repair.finish();
    await writer.calledTimes(3);
    writer.call(2).answer(OK);
    expect(await first).toMatchObject({ written: 1 });
    expect(repair.state.done).toBe(true);
    // The second batch, sent with the schema from before the repair, is refused the same way.
    writer.call(1).answer(missingColumn());
    await writer.calledTimes(4);
    writer.call(3).answer(OK);

    expect(await second).toMatchObject({ written: 1, deadLettered: 0 });
    expect(repair.state.calls).toBe(1);
  });

  it('issue 11 item 1: a failed shared repair fails every batch that waited for it', async () => {
    const writer = new HeldWriter();
    const sink = new BigQuerySink({
      mappingId: 'm1',
      writer,
      deadLetterWriter: new RecordingWriter(),
      onSchemaMismatch: () => Promise.reject(new Error('patch refused')),
      backoff: NO_WAIT,
    });
    const first = sink.write(records('a', 1));
    const second = sink.write(records('b', 1));
    await writer.calledTimes(2);
    writer.call(0).answer(missingColumn());
    writer.call(1).answer(missingColumn());
    await expect(first).rejects.toThrow('patch refused');
    await expect(second).rejects.toThrow('patch refused');
  });

  it('issue 11 item 1: halving and dead letters of concurrent calls stay with their own call', async () => {
    // Each call has one row BigQuery refuses on its own; the other rows land.
    const writer = new HeldWriter();
    const dead = new RecordingWriter();
    const sink = new BigQuerySink({ mappingId: 'm1', writer, deadLetterWriter: dead, backoff: NO_WAIT });
    const first = sink.write(records('a', 2));
    const second = sink.write(records('b', 2));
    await writer.calledTimes(2);
    for (const n of [0, 1]) writer.call(n).answer({ rejected: [{ index: 1, reason: `bad ${n}` }] });

    const results = await Promise.all([first, second]);

    expect(results).toEqual([
      { written: 1, deadLettered: 1, reasons: ['bad 0'] },
      { written: 1, deadLettered: 1, reasons: ['bad 1'] },
    ]);
    // One dead-letter request per call, each with only its own row.
    expect(dead.calls.map((rows) => rows.map((r) => r.event_id)).sort()).toEqual([['a1'], ['b1']]);
  });

  it('issue 11 item 1: an aborted caller stops waiting for a shared repair, which goes on for the others', async () => {
    const writer = new HeldWriter();
    const repair = heldRepair();
    const sink = new BigQuerySink({
      mappingId: 'm1',
      writer,
      deadLetterWriter: new RecordingWriter(),
      onSchemaMismatch: repair.repair,
      backoff: NO_WAIT,
    });
    const controller = new AbortController();
    const first = sink.write(records('a', 1), controller.signal);
    const second = sink.write(records('b', 1));
    await writer.calledTimes(2);
    writer.call(0).answer(missingColumn());
    writer.call(1).answer(missingColumn());
    await tick();
    controller.abort(new Error('stopping'));
    await expect(first).rejects.toThrow('stopping');
    repair.finish();
    await writer.calledTimes(3);
    writer.call(2).answer(OK);
    expect(await second).toMatchObject({ written: 1 });
    expect(repair.state.calls).toBe(1);
  });
});
