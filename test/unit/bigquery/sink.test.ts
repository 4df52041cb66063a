import { setTimeout as sleep } from 'node:timers/promises';
import { type Table } from '@google-cloud/bigquery';
import { describe, expect, it } from 'vitest';
import { DEFAULT_BATCH_LIMITS } from '../../../src/core/batcher.js';
import { BigQueryError } from '../../../src/errors.js';
import { toBigQueryError } from '../../../src/bigquery/error-mapping.js';
import { InsertAllWriter } from '../../../src/bigquery/insert-all-writer.js';
import {
  BigQuerySink,
  REQUESTS_PER_WRITE,
  type SinkObserver,
  type SinkRecord,
} from '../../../src/bigquery/sink.js';
import {
  type AppendOutcome,
  type EncodedRow,
  type HistoryRow,
  type OutgoingRow,
  type TableWriter,
} from '../../../src/bigquery/writer.js';
import { rowBytes } from '../../../src/core/stream-loop.js';
import { historyRecord } from '../../support/outgoing-rows.js';

/** A fake writer: `respond` decides per call; every call's rows are recorded. */
class FakeWriter implements TableWriter {
  readonly kind = 'insert-all' as const;
  readonly calls: HistoryRow[][] = [];
  readonly stored: HistoryRow[] = [];
  constructor(
    private readonly respond: (rows: readonly HistoryRow[], call: number) => AppendOutcome | Error,
  ) {}
  encode(row: HistoryRow): EncodedRow {
    return { size: rowBytes(row) };
  }
  append(outgoing: readonly OutgoingRow[]): Promise<AppendOutcome> {
    const rows = outgoing.map((r) => r.row());
    this.calls.push([...rows]);
    const r = this.respond(rows, this.calls.length);
    if (r instanceof Error) return Promise.reject(r);
    const refused = new Set(r.rejected.map((x) => x.index));
    rows.forEach((row, i) => {
      if (!refused.has(i)) this.stored.push(row);
    });
    return Promise.resolve(r);
  }
  updateSchema(): Promise<void> {
    return Promise.resolve();
  }
  close(): Promise<void> {
    return Promise.resolve();
  }
}

const ok = (): AppendOutcome => ({ rejected: [] });
/** What the Storage Write writer throws while BigQuery has not propagated a new column to the default stream. */
const schemaNotYetVisible = () =>
  toBigQueryError(
    Object.assign(
      new Error(
        "Input schema has more fields than BigQuery schema, extra fields: 'fresh' Entity: projects/p/datasets/d/tables/t/streams/_default",
      ),
      { code: 3 },
    ),
    'Storage Write append to projects/p/datasets/d/tables/t',
  );
const fastBackoff = { initialMs: 0, maxMs: 0, multiplier: 1, maxAttempts: 5 };

function records(n: number, extra: (i: number) => Record<string, unknown> = () => ({})): SinkRecord[] {
  return Array.from({ length: n }, (_, i) =>
    historyRecord({
      row: { _event_id: `e${i}`, _doc_id: `d${i}`, v: i, ...extra(i) },
      document: () => `{"_id":${i}}`,
    }),
  );
}

function sinkWith(
  writer: FakeWriter,
  dead: FakeWriter,
  more: Partial<ConstructorParameters<typeof BigQuerySink>[0]> = {},
) {
  return new BigQuerySink({
    mappingId: 'm1',
    writer,
    deadLetterWriter: dead,
    backoff: fastBackoff,
    now: () => new Date('2024-01-01T00:00:00Z'),
    ...more,
  });
}

describe('BigQuerySink', () => {
  it('splits into requests under the limits and writes everything', async () => {
    const writer = new FakeWriter(ok);
    const dead = new FakeWriter(ok);
    const result = await sinkWith(writer, dead, {
      limits: { maxRows: 4, maxBytes: 1_000_000, maxRowBytes: 1_000, lingerMs: 0 },
    }).write(records(10));
    expect(result).toEqual({ written: 10, deadLettered: 0, reasons: [] });
    expect(writer.calls.map((c) => c.length)).toEqual([4, 4, 2]);
  });

  it('retries transient failures with the very same rows', async () => {
    const writer = new FakeWriter((_rows, call) =>
      call < 3 ? Object.assign(new Error('503'), { code: 503 }) : ok(),
    );
    const result = await sinkWith(writer, new FakeWriter(ok)).write(records(3));
    expect(result.written).toBe(3);
    expect(writer.calls).toHaveLength(3);
    expect(writer.calls[0]).toEqual(writer.calls[2]);
  });

  it('dead-letters the rows BigQuery refuses, with their reason, and keeps the rest', async () => {
    const writer = new FakeWriter((rows) => ({
      rejected: rows.flatMap((r, index) =>
        r.v === 2 ? [{ index, reason: 'invalid: Cannot convert value to integer' }] : [],
      ),
    }));
    const dead = new FakeWriter(ok);
    const result = await sinkWith(writer, dead).write(records(4));
    expect(result).toEqual({
      written: 3,
      deadLettered: 1,
      reasons: ['invalid: Cannot convert value to integer'],
    });
    expect(dead.stored).toEqual([
      {
        mapping_id: 'm1',
        event_id: 'e2',
        _doc_id: 'd2',
        reason: 'invalid: Cannot convert value to integer',
        document: '{"_id":2}',
        failed_at: '2024-01-01T00:00:00.000Z',
      },
    ]);
  });

  it('isolates a row that makes the whole request fail by halving the request', async () => {
    const writer = new FakeWriter((rows) =>
      rows.some((r) => r.v === 5)
        ? Object.assign(new Error('bad row'), { code: 400, errors: [{ reason: 'invalid' }] })
        : ok(),
    );
    const dead = new FakeWriter(ok);
    const result = await sinkWith(writer, dead).write(records(8));
    expect(result.written).toBe(7);
    expect(dead.stored.map((r) => r.event_id)).toEqual(['e5']);
    expect(writer.stored.map((r) => r.v)).toEqual([0, 1, 2, 3, 4, 6, 7]);
  });

  it('patches the schema once on a missing column, then retries', async () => {
    let patched = 0;
    const writer = new FakeWriter(() =>
      patched === 0 ? Object.assign(new Error('no such field: fresh.'), { code: 400 }) : ok(),
    );
    const result = await sinkWith(writer, new FakeWriter(ok), {
      onSchemaMismatch: () => {
        patched++;
        return Promise.resolve();
      },
    }).write(records(2));
    expect([result.written, patched]).toEqual([2, 1]);
  });

  it('issue 10 item 1: a schema failure that persists after the repair is retried with backoff, never halved or dead-lettered', async () => {
    // BigQuery's answer while a new column has not reached the default stream yet (recorded shape: gRPC
    // INVALID_ARGUMENT in the append response, wrapped by the writer as a `schema` failure).
    let repairs = 0;
    const writer = new FakeWriter((_rows, call) => (call <= 6 ? schemaNotYetVisible() : ok()));
    const dead = new FakeWriter(ok);
    const retries: unknown[] = [];
    const result = await sinkWith(writer, dead, {
      onSchemaMismatch: () => {
        repairs++;
        return Promise.resolve();
      },
      onRetry: (error) => retries.push(error),
      schemaBackoff: { initialMs: 0, maxMs: 0, multiplier: 1, maxAttempts: 20 },
    }).write(records(4, (i) => (i === 2 ? { fresh: 'x' } : {})));
    expect(result).toEqual({ written: 4, deadLettered: 0, reasons: [] });
    expect(dead.calls).toHaveLength(0);
    expect(repairs).toBe(1);
    // The whole batch each time, never halves: the rows are fine, the table is catching up.
    expect(writer.calls.map((c) => c.length)).toEqual([4, 4, 4, 4, 4, 4, 4]);
    expect(writer.stored.map((r) => r.v)).toEqual([0, 1, 2, 3]);
    expect(retries.length).toBeGreaterThanOrEqual(5);
  });

  it('issue 10 item 1: rows refused one by one for a column the table does not show yet are retried, not dead-lettered', async () => {
    // insertAll's per-row answer (`skipInvalidRows`) for a field the streaming backend does not know yet.
    let calls = 0;
    const writer = new FakeWriter((rows) => {
      calls++;
      return {
        rejected: rows.flatMap((r, index) =>
          r.fresh !== undefined && calls <= 4 ? [{ index, reason: 'invalid: no such field: fresh.' }] : [],
        ),
      };
    });
    const dead = new FakeWriter(ok);
    const result = await sinkWith(writer, dead, {
      onSchemaMismatch: () => Promise.resolve(),
      schemaBackoff: { initialMs: 0, maxMs: 0, multiplier: 1, maxAttempts: 20 },
    }).write(records(4, (i) => (i % 2 === 1 ? { fresh: i } : {})));
    expect(result).toEqual({ written: 4, deadLettered: 0, reasons: [] });
    expect(dead.calls).toHaveLength(0);
    expect(writer.stored.map((r) => r.v).sort()).toEqual([0, 1, 2, 3]);
    // Only the refused rows are sent again.
    expect(writer.calls.slice(1).every((c) => c.every((r) => r.fresh !== undefined))).toBe(true);
  });

  it('issue 10 item 1: of the rows refused one by one, only those refused on their own merits are dead-lettered', async () => {
    let calls = 0;
    const writer = new FakeWriter((rows) => {
      calls++;
      return {
        rejected: rows.flatMap((r, index) => {
          if (r.v === 0) return [{ index, reason: 'invalid: Cannot convert value to integer.' }];
          if (r.fresh !== undefined && calls <= 3)
            return [{ index, reason: 'invalid: no such field: fresh.' }];
          return [];
        }),
      };
    });
    const dead = new FakeWriter(ok);
    const result = await sinkWith(writer, dead, {
      onSchemaMismatch: () => Promise.resolve(),
      schemaBackoff: { initialMs: 0, maxMs: 0, multiplier: 1, maxAttempts: 20 },
    }).write(records(4, (i) => (i >= 2 ? { fresh: i } : {})));
    expect(result).toEqual({
      written: 3,
      deadLettered: 1,
      reasons: ['invalid: Cannot convert value to integer.'],
    });
    expect(dead.stored.map((r) => r.event_id)).toEqual(['e0']);
    expect(writer.stored.map((r) => r.v).sort()).toEqual([1, 2, 3]);
  });

  it('issue 10 item 1: a schema failure that outlasts the wait fails the write as retryable, dead-lettering nothing', async () => {
    const writer = new FakeWriter(() => schemaNotYetVisible());
    const dead = new FakeWriter(ok);
    const failure = await sinkWith(writer, dead, {
      onSchemaMismatch: () => Promise.resolve(),
      schemaBackoff: { initialMs: 0, maxMs: 0, multiplier: 1, maxAttempts: 3 },
    })
      .write(records(2, () => ({ fresh: 'x' })))
      .then(
        () => undefined,
        (error: unknown) => error,
      );
    expect(failure).toBeInstanceOf(BigQueryError);
    expect((failure as BigQueryError).failureClass).toBe('retryable');
    expect((failure as BigQueryError).message).toMatch(/Input schema has more fields than BigQuery schema/);
    expect(dead.calls).toHaveLength(0);
    expect(writer.calls.every((c) => c.length === 2)).toBe(true);
  });

  it('sends a row too large for any request to the dead-letter table, never to BigQuery', async () => {
    const writer = new FakeWriter(ok);
    const dead = new FakeWriter(ok);
    const big = records(3, (i) => (i === 1 ? { blob: 'x'.repeat(2_000) } : {}));
    const result = await sinkWith(writer, dead, {
      limits: { maxRows: 10, maxBytes: 10_000, maxRowBytes: 1_000, lingerMs: 0 },
    }).write(big);
    expect(result.written).toBe(2);
    expect(dead.stored[0]?.reason).toMatch(/exceeds the 1000-byte limit/);
    expect(writer.calls.flat().some((r) => r.v === 1)).toBe(false);
  });

  it('reports each acknowledged batch with the rows and bytes that landed and its time, retries included, and the dead-lettered rows', async () => {
    const writer = new FakeWriter((rows, call) =>
      call === 1
        ? Object.assign(new Error('503'), { code: 503 })
        : { rejected: rows.flatMap((r, index) => (r.v === 2 ? [{ index, reason: 'invalid: bad' }] : [])) },
    );
    // Every call takes 20 ms, so the first batch (a failure, then its retry) takes twice as long.
    const append = writer.append.bind(writer);
    writer.append = async (rows) => {
      await sleep(20);
      return append(rows);
    };
    const batches: { rows: number; bytes: number; seconds: number }[] = [];
    const deadLettered: number[] = [];
    const observer: SinkObserver = {
      batchWritten: (rows, bytes, seconds) => batches.push({ rows, bytes, seconds }),
      deadLettered: (rows) => deadLettered.push(rows),
    };
    const sized = records(6).map((record, i) => ({ ...record, encoded: { size: 100 + i } }));
    const result = await sinkWith(writer, new FakeWriter(ok), {
      limits: { maxRows: 4, maxBytes: 1_000_000, maxRowBytes: 1_000, lingerMs: 0 },
      observer,
    }).write(sized);
    expect(result).toMatchObject({ written: 5, deadLettered: 1 });
    // The two requests go out together: each is reported when it lands, the retried one last.
    expect(batches.map(({ rows, bytes }) => ({ rows, bytes }))).toEqual([
      { rows: 2, bytes: 104 + 105 },
      { rows: 3, bytes: 100 + 101 + 103 },
    ]);
    expect(batches[1]?.seconds).toBeGreaterThanOrEqual(0.035);
    expect(batches[0]?.seconds).toBeGreaterThanOrEqual(0.015);
    expect(deadLettered).toEqual([1]);
  });

  it('issue 11: sends the requests of one write two at a time, and fails the write only once they have settled', async () => {
    let out = 0;
    let most = 0;
    const settled: number[] = [];
    const writer = new FakeWriter(ok);
    const append = writer.append.bind(writer);
    writer.append = async (rows) => {
      out++;
      most = Math.max(most, out);
      await sleep(20);
      out--;
      settled.push(rows.length);
      if (rows.length === 1) throw new BigQueryError('fatal', 'Access Denied');
      return append(rows);
    };
    const limits = { maxRows: 2, maxBytes: 1_000_000, maxRowBytes: 1_000, lingerMs: 0 };
    const sink = sinkWith(writer, new FakeWriter(ok), { limits });
    expect(await sink.write(records(6))).toMatchObject({ written: 6, deadLettered: 0 });
    // Three requests, at most REQUESTS_PER_WRITE of them out at once.
    expect(most).toBe(REQUESTS_PER_WRITE);
    settled.length = 0;
    // Three requests (2, 2, 1 rows): the last fails, and the write waits for the other two before failing.
    await expect(sink.write(records(5))).rejects.toThrow('Access Denied');
    expect(settled.sort()).toEqual([1, 2, 2]);
  });

  it("issue 11: a request that fails for good stops the other requests of its write at once, and its error is the write's", async () => {
    const writer = new FakeWriter((rows) =>
      rows.length === 1
        ? new BigQueryError('fatal', 'Access Denied')
        : Object.assign(new Error('503 backend error'), { code: 503 }),
    );
    const limits = { maxRows: 2, maxBytes: 1_000_000, maxRowBytes: 1_000, lingerMs: 0 };
    const started = performance.now();
    // Two requests: one retried with backoff (minutes of it), one refused for good.
    const slow = { initialMs: 10_000, maxMs: 10_000, multiplier: 1, maxAttempts: 10 };
    await expect(
      sinkWith(writer, new FakeWriter(ok), { limits, backoff: slow }).write(records(3)),
    ).rejects.toThrow('Access Denied');
    expect(performance.now() - started).toBeLessThan(2_000);
  });

  it('reports nothing for a batch that failed', async () => {
    const reported: unknown[] = [];
    const writer = new FakeWriter(() => new BigQueryError('fatal', 'Access Denied'));
    await expect(
      sinkWith(writer, new FakeWriter(ok), {
        observer: { batchWritten: (...args) => reported.push(args), deadLettered: (n) => reported.push(n) },
      }).write(records(2)),
    ).rejects.toThrow('Access Denied');
    expect(reported).toEqual([]);
  });

  it('stops on a fatal error instead of dead-lettering', async () => {
    const writer = new FakeWriter(() => new BigQueryError('fatal', 'Access Denied'));
    const dead = new FakeWriter(ok);
    await expect(sinkWith(writer, dead).write(records(2))).rejects.toThrow('Access Denied');
    expect(dead.calls).toHaveLength(0);
  });

  it('fails loudly if even the dead-letter table refuses a row', async () => {
    const writer = new FakeWriter((rows) => ({
      rejected: rows.map((_, index) => ({ index, reason: 'invalid' })),
    }));
    const dead = new FakeWriter((rows) => ({
      rejected: rows.map((_, index) => ({ index, reason: 'too big' })),
    }));
    await expect(sinkWith(writer, dead).write(records(1))).rejects.toThrow(/dead-letter table refused 1 row/);
  });

  it('issue 10 item 8: dead-letter writes are split under the limits of history writes', async () => {
    const writer = new FakeWriter((rows) => ({
      rejected: rows.map((_, index) => ({ index, reason: 'invalid: no' })),
    }));
    const dead = new FakeWriter(ok);
    const result = await sinkWith(writer, dead, {
      limits: { maxRows: 4, maxBytes: 1_000_000, maxRowBytes: 1_000, lingerMs: 0 },
    }).write(records(10));
    expect(result.deadLettered).toBe(10);
    expect(dead.calls.map((c) => c.length)).toEqual([4, 4, 2]);
    expect(dead.stored.map((r) => r.event_id)).toEqual(records(10).map((r) => r.row()._event_id));
  });

  it('issue 10 item 8: large dead-letter documents (escaped twice) never make a request BigQuery refuses, and each row fits one', async () => {
    // insertAll as BigQuery answers it: a body over 10 MiB is refused outright, with the recorded shape.
    const bodies: string[] = [];
    const table = {
      id: 'history_errors',
      request: (options: { body: string }) => {
        bodies.push(options.body);
        if (Buffer.byteLength(options.body, 'utf8') > 10_485_760) {
          const message = 'Request payload size exceeds the limit: 10485760 bytes.';
          return Promise.reject(
            Object.assign(new Error(message), {
              code: 400,
              errors: [{ message, domain: 'global', reason: 'badRequest' }],
            }),
          );
        }
        return Promise.resolve([{ kind: 'bigquery#tableDataInsertAllResponse' }]);
      },
    } as unknown as Table;
    const deadLetterWriter = new InsertAllWriter(table, 'event_id');
    const writer = new FakeWriter((rows) => ({
      rejected: rows.map((_, index) => ({ index, reason: 'invalid: Cannot convert value' })),
    }));
    // Quotes double at every escaping; control characters grow sixfold at once.
    const documents = Array.from({ length: 12 }, (_, i) =>
      JSON.stringify({ _id: i, s: '"'.repeat(1_000_000) }),
    );
    documents.push(JSON.stringify({ _id: 12, s: '\u0001'.repeat(600_000) }).replaceAll('\\u0001', '\u0001'));
    const input = documents.map((text, i) =>
      historyRecord({
        row: { _event_id: `e${i}`, _doc_id: String(i) },
        document: () => text,
      }),
    );
    const sink = new BigQuerySink({
      mappingId: 'm1',
      writer,
      deadLetterWriter,
      backoff: fastBackoff,
    });

    const result = await sink.write(input);

    expect(result).toMatchObject({ written: 0, deadLettered: 13 });
    const sent = bodies.map((body) => JSON.parse(body) as { rows: { json: Record<string, string> }[] });
    for (const body of bodies) {
      expect(Buffer.byteLength(body, 'utf8')).toBeLessThanOrEqual(DEFAULT_BATCH_LIMITS.maxBytes + 10_000);
    }
    const rows = sent.flatMap((body) => body.rows.map((r) => r.json));
    expect(rows.map((r) => r.event_id)).toEqual(input.map((r) => r.row()._event_id));
    for (const [i, row] of rows.entries()) {
      const bytes = Buffer.byteLength(JSON.stringify(row), 'utf8');
      expect(bytes).toBeLessThanOrEqual(1_000_000);
      expect(bytes).toBeGreaterThan(990_000);
      const cut = JSON.parse(row.document ?? '') as { truncated: boolean; length: number; head: string };
      expect(cut.truncated).toBe(true);
      expect(cut.length).toBe(documents[i]?.length);
      expect(documents[i]?.startsWith(cut.head)).toBe(true);
      // As much as fits is kept, not a token amount.
      expect(cut.head.length).toBeGreaterThan(100_000);
    }
  });

  it('issue 10 item 8: a dead-letter row whose reason alone exceeds the limits is cut to fit too', async () => {
    const reason = `invalid: ${'r'.repeat(5_000)}`;
    const writer = new FakeWriter((rows) => ({ rejected: rows.map((_, index) => ({ index, reason })) }));
    const dead = new FakeWriter(ok);
    const input: SinkRecord[] = [
      historyRecord({
        row: { _event_id: 'e0', _doc_id: 'd'.repeat(1_500) },
        document: () => 'x'.repeat(4_000),
      }),
    ];
    const result = await sinkWith(writer, dead, {
      limits: { maxRows: 10, maxBytes: 2_000, maxRowBytes: 1_000_000, lingerMs: 0 },
    }).write(input);
    expect(result.deadLettered).toBe(1);
    const [row] = dead.stored;
    expect(Buffer.byteLength(JSON.stringify(row), 'utf8')).toBeLessThanOrEqual(2_000);
    expect(row?.event_id).toBe('e0');
    expect(String(row?.reason)).toMatch(/^invalid: r+… \(cut\)$/);
    expect(row?._doc_id).toBe('d'.repeat(1_500));
    expect(JSON.parse(String(row?.document))).toEqual({ truncated: true, length: 4_000, head: '' });
  });
});
