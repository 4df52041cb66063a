// Storage Write with several appends in flight (issue 11): the connection's FIFO of pending appends, its
// per-append deadline, drain before a writer-schema switch, close, and appends spread over N connections.
// The library's StreamConnection is replaced by one that holds every request until the test answers it, in
// the order sent (as BigQuery answers one stream).
import { outgoing } from '../../support/outgoing-rows.js';
import { type managedwriter, type protos } from '@google-cloud/bigquery-storage';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { StorageWriteWriter } from '../../../src/bigquery/storage-write-writer.js';
import { type HistoryRow } from '../../../src/bigquery/writer.js';
import { type BigQueryError } from '../../../src/errors.js';
import { type TableField } from '../../../src/schema/types.js';

type AppendRowsRequest = protos.google.cloud.bigquery.storage.v1.IAppendRowsRequest;
type AppendRowsResponse = protos.google.cloud.bigquery.storage.v1.IAppendRowsResponse;

const TABLE = 'projects/mba-test/datasets/ds/tables/history';
const OK: AppendRowsResponse = { appendResult: {} };
const SCHEMA: TableField[] = [
  { name: '_doc_id', type: 'STRING', mode: 'NULLABLE' },
  { name: 'n', type: 'INTEGER', mode: 'NULLABLE' },
];

interface Held {
  readonly request: AppendRowsRequest;
  readonly resolve: (response: AppendRowsResponse) => void;
}

/** One stream: requests wait until `answerNext` answers the oldest one. */
class HeldConnection {
  readonly sent: Held[] = [];
  answered = 0;
  maxOutstanding = 0;
  reconnects = 0;
  /** Requests still unanswered when the stream was reopened (lost, on the real library). */
  outstandingAtReconnect = 0;
  closed = false;

  getStreamId = (): string => `${TABLE}/streams/_default`;

  get outstanding(): number {
    return this.sent.length - this.answered;
  }

  write(request: AppendRowsRequest): { getResult(): Promise<AppendRowsResponse> } {
    let resolve: (response: AppendRowsResponse) => void = () => undefined;
    const result = new Promise<AppendRowsResponse>((r) => {
      resolve = r;
    });
    this.sent.push({ request, resolve });
    this.maxOutstanding = Math.max(this.maxOutstanding, this.outstanding);
    return { getResult: () => result };
  }

  /** Answers the oldest request not answered yet (BigQuery answers a stream in order). */
  answerNext(response: AppendRowsResponse = OK): void {
    const next = this.sent[this.answered];
    if (next === undefined) throw new Error('no request to answer');
    this.answered++;
    next.resolve(response);
  }

  /** The `_doc_id`s of request `n` (decoded from the serialized rows: field 1, a short string). */
  docIdsOf(n: number): string[] {
    const rows = this.sent[n]?.request.protoRows?.rows?.serializedRows ?? [];
    return rows.map((row) => {
      const bytes = Buffer.from(row);
      return bytes.subarray(2, 2 + (bytes[1] ?? 0)).toString('utf8');
    });
  }

  fieldsOf(n: number): (string | null | undefined)[] | undefined {
    return this.sent[n]?.request.protoRows?.writerSchema?.protoDescriptor?.field?.map((f) => f.name);
  }

  reconnect(): void {
    this.reconnects++;
    // The library drops the old stream's listeners: what was outstanding on it is never answered.
    this.outstandingAtReconnect += this.outstanding;
  }

  close(): void {
    this.closed = true;
  }

  onConnectionError(): { off(): void } {
    return { off: () => undefined };
  }
}

/** Opens a new HeldConnection per connection the writer asks for. */
class HeldClient {
  readonly connections: HeldConnection[] = [];
  /**
   * As the library's WriterClient (5.x) does: every connection made is kept in this list until the client
   * closes; closing a connection does not take it out.
   */
  readonly _connections = { connectionList: [] as HeldConnection[] };
  getWriteStream(): Promise<unknown> {
    return Promise.resolve({});
  }
  createStreamConnection(): Promise<HeldConnection> {
    const connection = new HeldConnection();
    this.connections.push(connection);
    this._connections.connectionList.push(connection);
    return Promise.resolve(connection);
  }
  connection(n: number): HeldConnection {
    const connection = this.connections[n];
    if (connection === undefined) throw new Error(`no connection #${n}`);
    return connection;
  }
}

function writerWith(
  options: {
    connections?: number;
    appendTimeoutMs?: number;
    closeTimeoutMs?: number;
    idleMs?: number;
    onConnectionOpenChange?: (delta: 1 | -1) => void;
  } = {},
) {
  const client = new HeldClient();
  const writer = new StorageWriteWriter({
    clients: { projectId: 'mba-test', writerClient: client as unknown as managedwriter.WriterClient },
    datasetId: 'ds',
    tableId: 'history',
    schema: SCHEMA,
    ...options,
  });
  return { writer, client };
}

const rowsOf = (prefix: string, count = 1): HistoryRow[] =>
  Array.from({ length: count }, (_, i) => ({ _doc_id: `${prefix}${i}`, n: i }));
const tick = () => new Promise((resolve) => setImmediate(resolve));
async function settle(times = 5): Promise<void> {
  for (let i = 0; i < times; i++) await tick();
}
async function failureOf(call: Promise<unknown>): Promise<unknown> {
  try {
    await call;
    return undefined;
  } catch (error) {
    return error;
  }
}

describe('Storage Write connection: several appends in flight (issue 11)', () => {
  it('issue 11 item 3: appends go out without waiting for earlier answers, and each answer resolves its own caller', async () => {
    const { writer, client } = writerWith();
    const appends = ['a', 'b', 'c', 'd'].map((prefix) => writer.append(outgoing(rowsOf(prefix, 2))));
    await settle();

    const connection = client.connection(0);
    expect(client.connections).toHaveLength(1);
    // All four are out at once on the one connection.
    expect(connection.outstanding).toBe(4);
    expect([0, 1, 2, 3].map((n) => connection.docIdsOf(n))).toEqual([
      ['a0', 'a1'],
      ['b0', 'b1'],
      ['c0', 'c1'],
      ['d0', 'd1'],
    ]);
    // In order, BigQuery refuses the second row of the third request: only its caller hears of it.
    connection.answerNext();
    connection.answerNext();
    connection.answerNext({
      rowErrors: [{ index: 1, code: 'FIELDS_ERROR', message: 'bad' }],
      error: { code: 3 },
    });
    connection.answerNext();
    await settle();
    connection.answerNext(); // the third request's resend without the refused row

    const outcomes = await Promise.all(appends);
    expect(outcomes).toEqual([
      { rejected: [] },
      { rejected: [] },
      { rejected: [{ index: 1, reason: 'bad (FIELDS_ERROR)' }] },
      { rejected: [] },
    ]);
    expect(connection.docIdsOf(4)).toEqual(['c0']);
    await writer.close();
  });

  it('issue 11 item 3: a deadline on one append fails it (and the ones behind it on that connection) as retryable and drops the connection', async () => {
    const { writer, client } = writerWith({ appendTimeoutMs: 100 });
    const late = writer.append(outgoing(rowsOf('late')));
    await settle();
    const behind = writer.append(outgoing(rowsOf('behind')));
    await settle();
    const connection = client.connection(0);
    expect(connection.outstanding).toBe(2);

    const [lateFailure, behindFailure] = await Promise.all([failureOf(late), failureOf(behind)]);

    expect((lateFailure as BigQueryError).failureClass).toBe('retryable');
    expect(String(lateFailure)).toMatch(/no answer to an append within 100 ms/);
    expect((behindFailure as BigQueryError).failureClass).toBe('retryable');
    expect(String(behindFailure)).toMatch(/connection dropped: an earlier append on it had no answer/);
    expect(connection.closed).toBe(true);
    // The next append opens a new connection and lands.
    const retry = writer.append(outgoing(rowsOf('late')));
    await settle();
    expect(client.connections).toHaveLength(2);
    client.connection(1).answerNext();
    expect(await retry).toEqual({ rejected: [] });
    await writer.close();
  });

  it('issue 11 item 3: a deadline on one connection leaves the appends on the others alone', async () => {
    const { writer, client } = writerWith({ connections: 2, appendTimeoutMs: 150 });
    const first = writer.append(outgoing(rowsOf('a')));
    const second = writer.append(outgoing(rowsOf('b')));
    await settle();
    expect(client.connections.map((c) => c.outstanding)).toEqual([1, 1]);
    client.connection(1).answerNext();

    expect(await second).toEqual({ rejected: [] });
    expect((await failureOf(first)) as BigQueryError).toMatchObject({ failureClass: 'retryable' });
    expect(client.connection(0).closed).toBe(true);
    expect(client.connection(1).closed).toBe(false);
    await writer.close();
  });

  it('issue 11 item 3: close waits for the appends in flight, then gives them up after its timeout', async () => {
    const { writer, client } = writerWith({ closeTimeoutMs: 100 });
    const first = writer.append(outgoing(rowsOf('a')));
    const second = writer.append(outgoing(rowsOf('b')));
    await settle();
    const connection = client.connection(0);
    connection.answerNext();
    expect(await first).toEqual({ rejected: [] });

    const started = Date.now();
    await writer.close();

    expect(Date.now() - started).toBeGreaterThanOrEqual(90);
    const failure = await failureOf(second);
    expect(String(failure)).toMatch(/writer closed with no answer to an append after 100 ms/);
    expect(connection.closed).toBe(true);
    expect((await failureOf(writer.append(outgoing(rowsOf('c'))))) as BigQueryError).toMatchObject({
      failureClass: 'fatal',
    });
  });

  it('issue 11 item 3: a new writer schema waits until the appends in flight are answered, and appends made after it wait behind it', async () => {
    const { writer, client } = writerWith();
    const extended: TableField[] = [...SCHEMA, { name: 'added', type: 'STRING', mode: 'NULLABLE' }];
    const before = [writer.append(outgoing(rowsOf('a'))), writer.append(outgoing(rowsOf('b')))];
    await settle();
    const connection = client.connection(0);

    const updating = writer.updateSchema(extended);
    const after = writer.append(outgoing([{ _doc_id: 'c0', n: 1, added: 'x' }]));
    await settle();
    // Nothing new leaves, and the connection keeps its schema, while requests are out on it.
    expect(connection.sent).toHaveLength(2);
    expect(connection.reconnects).toBe(0);
    connection.answerNext();
    await settle();
    expect(connection.reconnects).toBe(0);
    connection.answerNext();
    await updating;
    await settle();

    expect(connection.reconnects).toBe(1);
    expect(connection.sent).toHaveLength(3);
    expect(connection.fieldsOf(2)).toEqual(['_doc_id', 'n', 'added']);
    connection.answerNext();
    expect(await Promise.all([...before, after])).toEqual([
      { rejected: [] },
      { rejected: [] },
      { rejected: [] },
    ]);
    await writer.close();
  });

  it('issue 11 item 3: while a new column propagates, appends alternating between two writer schemas never reopen the stream under a request in flight', async () => {
    const { writer, client } = writerWith();
    const extended: TableField[] = [...SCHEMA, { name: 'added', type: 'STRING', mode: 'NULLABLE' }];
    const opening = writer.append(outgoing(rowsOf('p')));
    await settle();
    const connection = client.connection(0);
    connection.answerNext();
    await opening;
    // BigQuery has not taken `added` yet: rows without it go with the old writer schema, rows with it with
    // the new one, on the same connection.
    await writer.updateSchema(extended);
    const appends = [
      writer.append(outgoing(rowsOf('x'))),
      writer.append(outgoing([{ _doc_id: 'y0', n: 1, added: 'new' }])),
      writer.append(outgoing(rowsOf('z'))),
    ];
    // BigQuery answers whatever is out, oldest first, until the three requests are answered.
    for (let round = 0; round < 20 && connection.answered < 4; round++) {
      await settle(10);
      if (connection.outstanding > 0) connection.answerNext();
    }

    expect(await Promise.all(appends)).toEqual([{ rejected: [] }, { rejected: [] }, { rejected: [] }]);
    expect(connection.outstandingAtReconnect).toBe(0);
    // Each request carried the writer schema its rows were encoded with.
    const sent = connection.sent
      .slice(1)
      .map((_, i) => [connection.docIdsOf(i + 1)[0], connection.fieldsOf(i + 1)]);
    expect(sent).toEqual([
      ['x0', ['_doc_id', 'n']],
      ['y0', ['_doc_id', 'n', 'added']],
      ['z0', ['_doc_id', 'n']],
    ]);
    await writer.close();
  });

  it('issue 11 item 3: with N connections, concurrent appends are spread over them, each answered to its caller', async () => {
    const { writer, client } = writerWith({ connections: 3 });
    const appends = ['a', 'b', 'c', 'd', 'e', 'f'].map((prefix) => writer.append(outgoing(rowsOf(prefix))));
    await settle();

    expect(client.connections).toHaveLength(3);
    expect(client.connections.map((c) => c.outstanding)).toEqual([2, 2, 2]);
    const sent = client.connections.flatMap((c) => c.sent.map((_, n) => c.docIdsOf(n)[0]));
    expect(sent.sort()).toEqual(['a0', 'b0', 'c0', 'd0', 'e0', 'f0']);
    // Each connection refuses its second request's row: exactly the callers of those requests hear of it.
    const refusedDocs = client.connections.map((c) => c.docIdsOf(1)[0]);
    for (const connection of client.connections) {
      connection.answerNext();
      connection.answerNext({ rowErrors: [{ index: 0, message: 'bad' }], error: { code: 3 } });
    }

    const outcomes = await Promise.all(appends);
    const refused = ['a', 'b', 'c', 'd', 'e', 'f'].filter((_, i) => (outcomes[i]?.rejected.length ?? 0) > 0);
    expect(refused.map((prefix) => `${prefix}0`).sort()).toEqual([...refusedDocs].sort());
    await writer.close();
  });

  it('refuses a number of connections below 1', () => {
    expect(() => writerWith({ connections: 0 })).toThrow(/at least 1/);
  });
});

describe('Storage Write connection: idle connections closed and opened again on demand (issue 12)', () => {
  const IDLE_MS = 120_000;
  afterEach(() => {
    vi.useRealTimers();
  });

  /** The writer on a fake clock (timers only: the tests' ticks are setImmediate), with its open count. */
  function idleWriter() {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'] });
    const changes: number[] = [];
    const { writer, client } = writerWith({
      idleMs: IDLE_MS,
      appendTimeoutMs: 10 * IDLE_MS,
      onConnectionOpenChange: (delta) => changes.push(delta),
    });
    const open = () => changes.reduce((sum, delta) => sum + delta, 0);
    return { writer, client, changes, open };
  }

  it('issue 12 item 3: a connection idle for idleMs is closed, and the next rows open a new one and land', async () => {
    const { writer, client, open } = idleWriter();
    const first = writer.append(outgoing(rowsOf('a')));
    await settle();
    client.connection(0).answerNext();
    expect(await first).toEqual({ rejected: [] });
    expect(open()).toBe(1);

    await vi.advanceTimersByTimeAsync(IDLE_MS - 1);
    await settle();
    expect(client.connection(0).closed).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    await settle();
    expect(client.connection(0).closed).toBe(true);
    expect(open()).toBe(0);

    const later = writer.append(outgoing(rowsOf('b')));
    await settle();
    expect(client.connections).toHaveLength(2);
    expect(client.connection(1).docIdsOf(0)).toEqual(['b0']);
    client.connection(1).answerNext();
    expect(await later).toEqual({ rejected: [] });
    expect(open()).toBe(1);
    await writer.close();
    expect(open()).toBe(0);
  });

  it('issue 12 item 3: an append in flight is never cut, however long it waits; the countdown starts once it is answered', async () => {
    const { writer, client, open } = idleWriter();
    const held = writer.append(outgoing(rowsOf('a')));
    await settle();
    await vi.advanceTimersByTimeAsync(3 * IDLE_MS);
    await settle();
    expect(client.connection(0).closed).toBe(false);
    expect(open()).toBe(1);

    client.connection(0).answerNext();
    expect(await held).toEqual({ rejected: [] });
    await vi.advanceTimersByTimeAsync(IDLE_MS);
    await settle();
    expect(client.connection(0).closed).toBe(true);
    expect(open()).toBe(0);
  });

  it('issue 12 item 3: appends more often than idleMs keep the one connection open', async () => {
    const { writer, client } = idleWriter();
    for (let i = 0; i < 5; i++) {
      const append = writer.append(outgoing(rowsOf(`r${i}`)));
      await settle();
      client.connection(0).answerNext();
      await append;
      await vi.advanceTimersByTimeAsync(IDLE_MS / 2);
    }
    expect(client.connections).toHaveLength(1);
    expect(client.connection(0).closed).toBe(false);
    expect(client.connection(0).sent).toHaveLength(5);
    await writer.close();
  });

  it('issue 12 item 3: an append made as the idle countdown ends keeps the connection, and goes out on it', async () => {
    const { writer, client, open } = idleWriter();
    const first = writer.append(outgoing(rowsOf('a')));
    await settle();
    client.connection(0).answerNext();
    await first;
    // The countdown fires (its close waits for its turn) and the append comes before that turn runs.
    vi.advanceTimersByTime(IDLE_MS);
    const racing = writer.append(outgoing(rowsOf('b')));
    await settle();
    expect(client.connections).toHaveLength(1);
    expect(client.connection(0).closed).toBe(false);
    expect(client.connection(0).docIdsOf(1)).toEqual(['b0']);
    client.connection(0).answerNext();
    expect(await racing).toEqual({ rejected: [] });
    expect(open()).toBe(1);
    await writer.close();
  });

  it('issue 12 item 3: a connection dropped on a deadline or closed counts as closed once', async () => {
    const { writer, client, changes } = idleWriter();
    const late = failureOf(writer.append(outgoing(rowsOf('a'))));
    await settle();
    await vi.advanceTimersByTimeAsync(10 * IDLE_MS);
    expect(await late).toMatchObject({ disposition: 'retryable' });
    expect(client.connection(0).closed).toBe(true);
    // Closed by the deadline: the idle countdown has nothing left to close.
    await vi.advanceTimersByTimeAsync(IDLE_MS);
    await writer.close();
    expect(changes).toEqual([1, -1]);
  });

  it('issue 12 review: connections closed when idle or on a deadline leave the client’s list; only open ones stay', async () => {
    const { writer, client, open } = idleWriter();
    const CYCLES = 4;
    for (let i = 0; i < CYCLES; i++) {
      const append = writer.append(outgoing(rowsOf(`r${i}`)));
      await settle();
      client.connection(i).answerNext();
      await append;
      expect(client._connections.connectionList).toEqual([client.connection(i)]);
      await vi.advanceTimersByTimeAsync(IDLE_MS);
      await settle();
      expect(open()).toBe(0);
      expect(client._connections.connectionList).toEqual([]);
    }
    // Dropped on a deadline (its append unanswered): out of the list as well.
    const late = failureOf(writer.append(outgoing(rowsOf('late'))));
    await settle();
    await vi.advanceTimersByTimeAsync(10 * IDLE_MS);
    expect(await late).toMatchObject({ disposition: 'retryable' });
    expect(client.connections).toHaveLength(CYCLES + 1);
    expect(client._connections.connectionList).toEqual([]);
    await writer.close();
  });
});
