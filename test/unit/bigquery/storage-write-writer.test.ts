// The Storage Write writer's handling of what BigQuery answers, on a scripted stream: rowErrors (which
// neither emulator sends), status errors, transport failures, abort, schema updates and request limits.
import { encodedBy, outgoing } from '../../support/outgoing-rows.js';
import { type managedwriter, type protos } from '@google-cloud/bigquery-storage';
import { describe, expect, it } from 'vitest';
import { classifyBigQueryError } from '../../../src/bigquery/error-mapping.js';
import { compileRowEncoder } from '../../../src/bigquery/proto-encoder.js';
import {
  MAX_APPEND_REQUEST_BYTES,
  StorageWriteWriter,
  storageWriteSupport,
} from '../../../src/bigquery/storage-write-writer.js';
import { type HistoryRow } from '../../../src/bigquery/writer.js';
import { BigQueryError } from '../../../src/errors.js';
import { type TableField } from '../../../src/schema/types.js';

type AppendRowsRequest = protos.google.cloud.bigquery.storage.v1.IAppendRowsRequest;
type AppendRowsResponse = protos.google.cloud.bigquery.storage.v1.IAppendRowsResponse;

const TABLE = 'projects/mba-test/datasets/ds/tables/history';
const OK: AppendRowsResponse = { appendResult: { offset: { value: 0 } } };

const SCHEMA: TableField[] = [
  { name: '_doc_id', type: 'STRING', mode: 'NULLABLE' },
  { name: 'n', type: 'INTEGER', mode: 'NULLABLE' },
];

/** Stands in for the library's StreamConnection: records requests, answers them from a script. */
class ScriptedConnection {
  readonly requests: AppendRowsRequest[] = [];
  reconnects = 0;
  closed = false;

  constructor(
    private readonly answer: (request: AppendRowsRequest, n: number) => Promise<AppendRowsResponse>,
  ) {}

  getStreamId = (): string => `${TABLE}/streams/_default`;

  write(request: AppendRowsRequest): { getResult(): Promise<AppendRowsResponse> } {
    this.requests.push(request);
    const result = this.answer(request, this.requests.length);
    return { getResult: () => result };
  }

  reconnect(): void {
    this.reconnects++;
  }

  close(): void {
    this.closed = true;
  }

  onConnectionError(): { off(): void } {
    return { off: () => undefined };
  }

  rowsOf(n: number): string[] {
    const rows = this.requests[n]?.protoRows?.rows?.serializedRows ?? [];
    return rows.map((row) => Buffer.from(row).toString('hex'));
  }
}

class ScriptedClient {
  readonly streamLookups: string[] = [];
  lookupFailure: Error | undefined;

  constructor(readonly connection: ScriptedConnection) {}

  getWriteStream(request: { streamId: string }): Promise<unknown> {
    this.streamLookups.push(request.streamId);
    return this.lookupFailure ? Promise.reject(this.lookupFailure) : Promise.resolve({});
  }

  createStreamConnection(): Promise<ScriptedConnection> {
    return Promise.resolve(this.connection);
  }
}

function scripted(
  answer: (request: AppendRowsRequest, n: number) => Promise<AppendRowsResponse>,
  options: { appendTimeoutMs?: number; closeTimeoutMs?: number } = {},
) {
  const connection = new ScriptedConnection(answer);
  const client = new ScriptedClient(connection);
  const writer = new StorageWriteWriter({
    clients: { projectId: 'mba-test', writerClient: client as unknown as managedwriter.WriterClient },
    datasetId: 'ds',
    tableId: 'history',
    schema: SCHEMA,
    ...options,
  });
  return { writer, connection, client };
}

function hex(rows: readonly HistoryRow[], schema: readonly TableField[] = SCHEMA): string[] {
  const encoder = compileRowEncoder(schema);
  return rows.map((row) => Buffer.from(encoder.encode(row)).toString('hex'));
}

function grpcError(code: number, message: string): Error {
  return Object.assign(new Error(`${code} ${message}`), { code });
}

async function failureOf(call: Promise<unknown>): Promise<unknown> {
  try {
    await call;
    return undefined;
  } catch (error) {
    return error;
  }
}

const rows = (count: number): HistoryRow[] =>
  Array.from({ length: count }, (_, i) => ({ _doc_id: `d${i}`, n: i }));

describe('StorageWriteWriter on a scripted stream', () => {
  it('looks the default stream up once, then appends the encoded rows with the descriptor', async () => {
    const { writer, connection, client } = scripted(() => Promise.resolve(OK));

    expect(await writer.append(outgoing(rows(2)))).toEqual({ rejected: [] });
    expect(await writer.append(outgoing(rows(1)))).toEqual({ rejected: [] });

    expect(client.streamLookups).toEqual([`${TABLE}/streams/_default`]);
    expect(connection.requests).toHaveLength(2);
    expect(connection.rowsOf(0)).toEqual(hex(rows(2)));
    const request = connection.requests[0];
    expect(request?.writeStream).toBe(`${TABLE}/streams/_default`);
    expect(request?.offset).toBeUndefined();
    expect(request?.protoRows?.writerSchema?.protoDescriptor?.field?.map((f) => f.name)).toEqual([
      '_doc_id',
      'n',
    ]);
  });

  it('issue 10 fix finding 1: a row with a value the writer schema has no field for is refused as schema, the others sent', async () => {
    const { writer, connection } = scripted(() => Promise.resolve(OK));
    // `note` is a column the table (as this writer knows it) lacks: its value must not vanish.
    const outcome = await writer.append(
      outgoing([
        { _doc_id: 'a', n: 1 },
        { _doc_id: 'b', n: 2, note: 'kept' },
      ]),
    );

    expect(outcome.rejected.map((r) => r.index)).toEqual([1]);
    expect(outcome.rejected[0]?.reason).toMatch(/^no such field: note\b/);
    expect(classifyBigQueryError({ message: outcome.rejected[0]?.reason })).toBe('schema');
    expect(connection.requests).toHaveLength(1);
    expect(connection.rowsOf(0)).toEqual(hex([{ _doc_id: 'a', n: 1 }]));
  });

  it('sends nothing, and opens nothing, for an empty append', async () => {
    const { writer, connection, client } = scripted(() => Promise.resolve(OK));
    expect(await writer.append([])).toEqual({ rejected: [] });
    expect(client.streamLookups).toEqual([]);
    expect(connection.requests).toHaveLength(0);
  });

  it('resends the rows BigQuery did not name in rowErrors and reports the named ones with the misfits', async () => {
    const { writer, connection } = scripted((_, n) =>
      Promise.resolve(
        n === 1
          ? {
              rowErrors: [{ index: 2, code: 1, message: 'Field n: value out of range' }],
              error: { code: 3, message: 'Errors found while processing rows' },
            }
          : OK,
      ),
    );
    const input: HistoryRow[] = [
      { _doc_id: 'a', n: 0 },
      { _doc_id: 'b', n: 'not a number' },
      { _doc_id: 'c', n: 2 },
      { _doc_id: 'd', n: 3 },
      { _doc_id: 'e', n: 4 },
    ];

    const outcome = await writer.append(outgoing(input));

    // Position 2 of the request is row 3 of the input: row 1 never left (it could not be encoded).
    expect(outcome.rejected).toEqual([
      { index: 1, reason: 'column n: expected an int64 (number or decimal string), got "not a number"' },
      { index: 3, reason: 'Field n: value out of range (code 1)' },
    ]);
    expect(connection.rowsOf(0)).toEqual(
      hex([input[0] ?? {}, input[2] ?? {}, input[3] ?? {}, input[4] ?? {}]),
    );
    expect(connection.rowsOf(1)).toEqual(hex([input[0] ?? {}, input[2] ?? {}, input[4] ?? {}]));
  });

  it('sends nothing when every row is refused by BigQuery or by the encoder', async () => {
    const { writer, connection } = scripted(() =>
      Promise.resolve({ rowErrors: [{ index: 0, message: 'bad' }], error: { code: 3, message: 'rows' } }),
    );

    const outcome = await writer.append(outgoing([{ n: 'x' }, { n: 1 }]));

    expect(outcome.rejected.map((r) => r.index)).toEqual([0, 1]);
    expect(connection.requests).toHaveLength(1);
    expect(await writer.append(outgoing([{ n: 'y' }]))).toEqual({
      rejected: [{ index: 0, reason: 'column n: expected an int64 (number or decimal string), got "y"' }],
    });
    expect(connection.requests).toHaveLength(1);
  });

  it('fails when rowErrors name a row the request did not have', async () => {
    const { writer } = scripted(() => Promise.resolve({ rowErrors: [{ index: 7, message: 'bad' }] }));
    const failure = await failureOf(writer.append(outgoing(rows(2))));
    expect(failure).toBeInstanceOf(BigQueryError);
    expect(String(failure)).toMatch(/row error for row 7 of 2/);
  });

  it.each([
    [3, 'Errors found while processing rows', 'poison'],
    [3, 'Input schema has more fields than BigQuery schema, extra fields: added', 'schema'],
    [5, 'Requested entity was not found', 'fatal'],
    [8, 'Exceeds quota', 'retryable'],
  ] as const)('a response with status %i "%s" fails as %s', async (code, message, failureClass) => {
    const { writer } = scripted(() => Promise.resolve({ error: { code, message } }));
    const failure = await failureOf(writer.append(outgoing(rows(1))));
    expect(failure).toBeInstanceOf(BigQueryError);
    expect((failure as BigQueryError).failureClass).toBe(failureClass);
    expect((failure as BigQueryError).message).toContain(message);
  });

  it('wraps a failed request (the library rejects its pending write) keeping the cause', async () => {
    const cause = grpcError(14, 'UNAVAILABLE: Connection failure, please retry the request');
    const { writer } = scripted(() => Promise.reject(cause));
    const failure = await failureOf(writer.append(outgoing(rows(1))));
    expect(failure).toBeInstanceOf(BigQueryError);
    expect((failure as BigQueryError).failureClass).toBe('retryable');
    expect((failure as BigQueryError).cause).toBe(cause);
  });

  it('wraps a failed stream lookup', async () => {
    const { writer, client, connection } = scripted(() => Promise.resolve(OK));
    client.lookupFailure = grpcError(5, 'NOT_FOUND: Table not found');
    const failure = await failureOf(writer.append(outgoing(rows(1))));
    expect((failure as BigQueryError).failureClass).toBe('fatal');
    expect(String(failure)).toMatch(
      /opening the default stream of projects\/mba-test\/datasets\/ds\/tables\/history/,
    );
    expect(connection.requests).toHaveLength(0);
  });

  it('rejects with the abort reason while waiting for an answer, and close waits for that answer', async () => {
    let answer: (response: AppendRowsResponse) => void = () => undefined;
    const pending = new Promise<AppendRowsResponse>((resolve) => {
      answer = resolve;
    });
    const { writer, connection } = scripted(() => pending);
    const controller = new AbortController();
    const reason = new Error('shutting down');

    const append = writer.append(outgoing(rows(1)), controller.signal);
    await new Promise((resolve) => setImmediate(resolve));
    controller.abort(reason);
    expect(await failureOf(append)).toBe(reason);

    let closed = false;
    const closing = writer.close().then(() => {
      closed = true;
    });
    await new Promise((resolve) => setImmediate(resolve));
    expect(closed).toBe(false);
    answer(OK);
    await closing;
    expect(connection.closed).toBe(true);
  });

  it('gives up an append left unanswered past its deadline as retryable, on a new connection next time', async () => {
    const { writer, connection, client } = scripted(
      (_, n) => (n === 1 ? new Promise<AppendRowsResponse>(() => undefined) : Promise.resolve(OK)),
      { appendTimeoutMs: 50 },
    );
    const failure = await failureOf(writer.append(outgoing(rows(2))));
    expect(failure).toBeInstanceOf(BigQueryError);
    expect((failure as BigQueryError).failureClass).toBe('retryable');
    expect((failure as Error).message).toMatch(/no answer to an append within 50 ms/);
    expect(connection.closed).toBe(true);
    // The retry opens the stream again and lands; close does not wait for the request that never answered.
    expect(await writer.append(outgoing(rows(2)))).toEqual({ rejected: [] });
    expect(client.streamLookups).toHaveLength(2);
    expect(connection.rowsOf(1)).toEqual(connection.rowsOf(0));
    await writer.close();
  });

  it('sends nothing for an already aborted signal', async () => {
    const { writer, connection } = scripted(() => Promise.resolve(OK));
    const controller = new AbortController();
    controller.abort(new Error('stopped'));
    await expect(writer.append(outgoing(rows(1)), controller.signal)).rejects.toThrow('stopped');
    expect(connection.requests).toHaveLength(0);
  });

  it('updateSchema waits for requests in flight, then reconnects and encodes with the new schema', async () => {
    let answer: (response: AppendRowsResponse) => void = () => undefined;
    const first = new Promise<AppendRowsResponse>((resolve) => {
      answer = resolve;
    });
    const { writer, connection } = scripted((_, n) => (n === 1 ? first : Promise.resolve(OK)));
    const extended: TableField[] = [...SCHEMA, { name: 'added', type: 'STRING', mode: 'NULLABLE' }];

    const inFlight = writer.append(outgoing(rows(1)));
    await new Promise((resolve) => setImmediate(resolve));
    const updating = writer.updateSchema(extended);
    await new Promise((resolve) => setImmediate(resolve));
    expect(connection.reconnects).toBe(0);
    answer(OK);
    await inFlight;
    await updating;
    expect(connection.reconnects).toBe(1);

    const row = { _doc_id: 'x', n: 1, added: 'new' };
    await writer.append(outgoing([row]));
    expect(connection.rowsOf(1)).toEqual(hex([row], extended));
    expect(
      connection.requests[1]?.protoRows?.writerSchema?.protoDescriptor?.field?.map((f) => f.name),
    ).toEqual(['_doc_id', 'n', 'added']);
  });

  it('issue 10 item 1: while BigQuery has not accepted a new column, rows without it keep flowing on the accepted writer schema', async () => {
    // BigQuery refuses any request whose writer schema has the column it does not show yet (recorded shape).
    let visible = false;
    const { writer, connection } = scripted((request) => {
      const names = request.protoRows?.writerSchema?.protoDescriptor?.field?.map((f) => f.name) ?? [];
      return Promise.resolve(
        names.includes('added') && !visible
          ? {
              error: {
                code: 3,
                message: `Input schema has more fields than BigQuery schema, extra fields: 'added' Entity: ${TABLE}/streams/_default`,
              },
            }
          : OK,
      );
    });
    const extended: TableField[] = [...SCHEMA, { name: 'added', type: 'STRING', mode: 'NULLABLE' }];
    await writer.append(outgoing(rows(1)));
    await writer.updateSchema(extended);

    // No row carries the new column: the request goes out with the accepted schema and lands.
    expect(await writer.append(encodedBy(writer, rows(2)))).toEqual({ rejected: [] });
    const namesOf = (n: number) =>
      connection.requests[n]?.protoRows?.writerSchema?.protoDescriptor?.field?.map((f) => f.name);
    expect(namesOf(1)).toEqual(['_doc_id', 'n']);
    expect(connection.rowsOf(1)).toEqual(hex(rows(2)));

    // A row carrying it needs the new schema: it alone waits, refused as `schema` (the sink retries it),
    // never sent without the column; the other row of the request lands on the accepted schema.
    const carrying = [{ _doc_id: 'x', n: 1, added: 'new' }, ...rows(1)];
    const outcome = await writer.append(outgoing(carrying));
    expect(outcome.rejected.map((r) => r.index)).toEqual([0]);
    expect(classifyBigQueryError({ message: outcome.rejected[0]?.reason })).toBe('schema');
    expect(namesOf(2)).toEqual(['_doc_id', 'n', 'added']);
    expect(namesOf(3)).toEqual(['_doc_id', 'n']);
    expect(connection.rowsOf(3)).toEqual(hex(rows(1)));

    // Once BigQuery takes it, it is the schema for every row.
    visible = true;
    expect(await writer.append(outgoing(carrying))).toEqual({ rejected: [] });
    expect(connection.rowsOf(4)).toEqual(hex(carrying.slice(0, 1), extended));
    expect(connection.rowsOf(5)).toEqual(hex(carrying.slice(1), extended));
    await writer.append(outgoing(rows(1)));
    expect(namesOf(6)).toEqual(['_doc_id', 'n', 'added']);
  });

  /** BigQuery before it shows `colour` to the default stream: any request whose writer schema has it is refused. */
  const refusingColour = (request: AppendRowsRequest): Promise<AppendRowsResponse> => {
    const names = request.protoRows?.writerSchema?.protoDescriptor?.field?.map((f) => f.name) ?? [];
    return Promise.resolve(
      names.includes('colour')
        ? {
            error: {
              code: 3,
              message: `Input schema has more fields than BigQuery schema, extra fields: 'colour' Entity: ${TABLE}/streams/_default`,
            },
          }
        : OK,
    );
  };
  const WITH_COLOUR: TableField[] = [...SCHEMA, { name: 'colour', type: 'STRING', mode: 'NULLABLE' }];
  const namesIn = (connection: ScriptedConnection, n: number) =>
    connection.requests[n]?.protoRows?.writerSchema?.protoDescriptor?.field?.map((f) => f.name);

  it('issue 10 fix finding 4: a new writer refused for a column BigQuery does not show yet sends the other rows without it, and keeps doing so', async () => {
    // A restart while `colour` propagates: the table has it, the default stream does not take it yet.
    const connection = new ScriptedConnection(refusingColour);
    const writer = new StorageWriteWriter({
      clients: {
        projectId: 'mba-test',
        writerClient: new ScriptedClient(connection) as unknown as managedwriter.WriterClient,
      },
      datasetId: 'ds',
      tableId: 'history',
      schema: WITH_COLOUR,
    });
    const plain = { _doc_id: 'a', n: 1 };
    const carrying = { _doc_id: 'b', n: 2, colour: 'red' };

    const outcome = await writer.append(outgoing([plain, carrying]));

    // The row with the column waits (a `schema` refusal, which the sink retries); the other one landed.
    expect(outcome.rejected.map((r) => r.index)).toEqual([1]);
    expect(classifyBigQueryError({ message: outcome.rejected[0]?.reason })).toBe('schema');
    expect(namesIn(connection, 0)).toEqual(['_doc_id', 'n', 'colour']);
    expect(namesIn(connection, 1)).toEqual(['_doc_id', 'n']);
    expect(connection.rowsOf(1)).toEqual(hex([plain]));

    // Rows without the column go out with the schema BigQuery takes, at the first request.
    expect(await writer.append(outgoing(rows(2)))).toEqual({ rejected: [] });
    expect(connection.requests).toHaveLength(3);
    expect(namesIn(connection, 2)).toEqual(['_doc_id', 'n']);
    await writer.close();
  });

  it('issue 11: rows encoded at batching with a schema BigQuery then refuses are built again and sent with the narrowed one', async () => {
    const connection = new ScriptedConnection(refusingColour);
    const writer = new StorageWriteWriter({
      clients: {
        projectId: 'mba-test',
        writerClient: new ScriptedClient(connection) as unknown as managedwriter.WriterClient,
      },
      datasetId: 'ds',
      tableId: 'history',
      schema: WITH_COLOUR,
    });
    const plain = { _doc_id: 'a', n: 1 };
    const carrying = { _doc_id: 'b', n: 2, colour: 'red' };
    // Both encoded before the refusal, with the table's schema (the one the writer started with).
    const early = encodedBy(writer, rows(2));

    const outcome = await writer.append(encodedBy(writer, [plain, carrying]));

    expect(outcome.rejected.map((r) => r.index)).toEqual([1]);
    expect(classifyBigQueryError({ message: outcome.rejected[0]?.reason })).toBe('schema');
    expect(connection.rowsOf(1)).toEqual(hex([plain]));
    // Encoded with the refused schema: sent with the narrowed one, never with the one refused.
    expect(await writer.append(early)).toEqual({ rejected: [] });
    expect(connection.requests).toHaveLength(3);
    expect(namesIn(connection, 2)).toEqual(['_doc_id', 'n']);
    expect(connection.rowsOf(2)).toEqual(hex(rows(2)));
    await writer.close();
  });

  it('issue 10 fix finding 4: a refusal naming several fields, nested ones by path, narrows to the schema without all of them', async () => {
    const schema: TableField[] = [
      ...SCHEMA,
      { name: 'colour', type: 'STRING', mode: 'NULLABLE' },
      {
        name: 'rec',
        type: 'RECORD',
        mode: 'NULLABLE',
        fields: [
          { name: 'a', type: 'STRING', mode: 'NULLABLE' },
          { name: 'b', type: 'STRING', mode: 'NULLABLE' },
        ],
      },
    ];
    const connection = new ScriptedConnection((request) => {
      const descriptor = JSON.stringify(request.protoRows?.writerSchema?.protoDescriptor ?? {});
      return Promise.resolve(
        descriptor.includes('"name":"colour"') || descriptor.includes('"name":"b"')
          ? {
              error: {
                code: 3,
                message: `Input schema has more fields than BigQuery schema, extra fields: 'colour,rec.b' Entity: ${TABLE}/streams/_default`,
              },
            }
          : OK,
      );
    });
    const writer = new StorageWriteWriter({
      clients: {
        projectId: 'mba-test',
        writerClient: new ScriptedClient(connection) as unknown as managedwriter.WriterClient,
      },
      datasetId: 'ds',
      tableId: 'history',
      schema,
    });
    const batch: HistoryRow[] = [
      { _doc_id: 'a', n: 1, rec: { a: 'x' } },
      { _doc_id: 'b', n: 2, rec: { a: 'y', b: 'z' } },
      { _doc_id: 'c', n: 3, colour: 'red' },
    ];

    const outcome = await writer.append(outgoing(batch));

    expect(outcome.rejected.map((r) => r.index)).toEqual([1, 2]);
    expect(connection.requests).toHaveLength(2);
    const narrowed: TableField[] = [
      ...SCHEMA,
      {
        name: 'rec',
        type: 'RECORD',
        mode: 'NULLABLE',
        fields: [{ name: 'a', type: 'STRING', mode: 'NULLABLE' }],
      },
    ];
    expect(connection.rowsOf(1)).toEqual(hex(batch.slice(0, 1), narrowed));
    await writer.close();
  });

  it('issue 10 fix finding 4: one row needing the new column does not take the rest of its request to the new schema', async () => {
    const { writer, connection } = scripted(refusingColour);
    await writer.append(outgoing(rows(1)));
    await writer.updateSchema(WITH_COLOUR);
    const carrying = { _doc_id: 'b', n: 2, colour: 'red' };
    const batch = [rows(1)[0] ?? {}, carrying, { _doc_id: 'c', n: 3 }];

    const outcome = await writer.append(outgoing(batch));

    expect(outcome.rejected.map((r) => r.index)).toEqual([1]);
    expect(outcome.rejected[0]?.reason).toMatch(/Input schema has more fields than BigQuery schema/);
    // The rows without the column landed on the accepted schema; the one with it was sent with the new one.
    const sent = connection.requests.slice(1).map((_, i) => namesIn(connection, i + 1));
    expect(sent).toContainEqual(['_doc_id', 'n', 'colour']);
    const last = connection.requests.length - 1;
    expect(namesIn(connection, last)).toEqual(['_doc_id', 'n']);
    expect(connection.rowsOf(last)).toEqual(hex([batch[0] ?? {}, batch[2] ?? {}]));
    await writer.close();
  });

  it('issue 10 item 1: an updatedSchema in an append response that shows the new column ends the wait for it', async () => {
    const extended: TableField[] = [...SCHEMA, { name: 'added', type: 'STRING', mode: 'NULLABLE' }];
    const { writer, connection } = scripted((_, n) =>
      Promise.resolve(
        n === 2
          ? {
              ...OK,
              updatedSchema: {
                fields: extended.map((f) => ({ name: f.name, type: f.type === 'STRING' ? 1 : 2, mode: 1 })),
              },
            }
          : OK,
      ),
    );
    await writer.append(outgoing(rows(1)));
    await writer.updateSchema(extended);
    await writer.append(outgoing(rows(1)));
    await writer.append(outgoing(rows(1)));
    const namesOf = (n: number) =>
      connection.requests[n]?.protoRows?.writerSchema?.protoDescriptor?.field?.map((f) => f.name);
    expect([namesOf(1), namesOf(2)]).toEqual([
      ['_doc_id', 'n'],
      ['_doc_id', 'n', 'added'],
    ]);
  });

  it('measures a row by its protobuf encoding and sends that encoding, until a schema change', async () => {
    const { writer, connection } = scripted(() => Promise.resolve(OK));
    const first: HistoryRow = { _doc_id: 'd0', n: 0 };
    const second: Record<string, unknown> = { _doc_id: 'd1', n: 1 };
    const batch: HistoryRow[] = [first, second, { _doc_id: 'bad', n: 'not a number' }];
    expect(writer.encode(first).size).toBe(compileRowEncoder(SCHEMA).encode(first).length);
    const encoded = encodedBy(writer, batch);
    // The kept encodings are sent: mutating a row after measuring it does not change what goes out.
    second.n = 99;
    const outcome = await writer.append(encoded);
    expect(connection.rowsOf(0)).toEqual(hex(rows(2)));
    expect(outcome.rejected.map((r) => r.index)).toEqual([2]);

    // After a schema change the rows are encoded again, with the new schema.
    const extended: TableField[] = [...SCHEMA, { name: 'added', type: 'STRING', mode: 'NULLABLE' }];
    const row = { _doc_id: 'x', n: 1, added: 'new' };
    const before = encodedBy(writer, [row]);
    await writer.updateSchema(extended);
    await writer.append(before);
    expect(connection.rowsOf(1)).toEqual(hex([row], extended));
  });

  it('issue 11: sends the bytes encoded at batching as they are, never building the row again, while their schema is the one sent', async () => {
    const { writer, connection } = scripted(() => Promise.resolve(OK));
    const batch = rows(3);
    const sent = batch.map((row) => ({
      encoded: writer.encode(row),
      row: (): HistoryRow => {
        throw new Error('the row was built again');
      },
    }));
    expect(await writer.append(sent)).toEqual({ rejected: [] });
    expect(connection.rowsOf(0)).toEqual(hex(batch));
  });

  it('issue 11: while BigQuery does not take a new column yet, rows without it are encoded with the accepted schema and sent as they are', async () => {
    const { writer, connection } = scripted(() => Promise.resolve(OK));
    await writer.append(outgoing(rows(1)));
    await writer.updateSchema([...SCHEMA, { name: 'added', type: 'STRING', mode: 'NULLABLE' }]);
    const batch = rows(2);
    const sent = batch.map((row) => ({
      encoded: writer.encode(row),
      row: (): HistoryRow => {
        throw new Error('the row was built again');
      },
    }));
    expect(await writer.append(sent)).toEqual({ rejected: [] });
    expect(
      connection.requests[1]?.protoRows?.writerSchema?.protoDescriptor?.field?.map((f) => f.name),
    ).toEqual(['_doc_id', 'n']);
    expect(connection.rowsOf(1)).toEqual(hex(batch));
  });

  it('issue 11 build 6: bytes a worker encoded with rowEncoding().spec go out as they are; a new column changes the encoding', async () => {
    const { writer, connection } = scripted(() => Promise.resolve(OK));
    const encoding = writer.rowEncoding();
    expect(writer.rowEncoding()).toBe(encoding);
    if (encoding.spec.format !== 'storage-write') throw new Error('expected a Storage Write spec');
    // What a worker thread does with the spec: its own encoder, compiled from plain data.
    const workerEncoder = compileRowEncoder(encoding.spec.schema);
    const batch = rows(2);
    const sent = batch.map((row) => {
      const bytes = workerEncoder.encode(row);
      return {
        encoded: encoding.wrap(bytes, bytes.length),
        row: (): HistoryRow => {
          throw new Error('the row was built again');
        },
      };
    });
    expect(await writer.append(sent)).toEqual({ rejected: [] });
    expect(connection.rowsOf(0)).toEqual(hex(batch));

    // A new column: the encoding changes, and bytes of the old one still go out as they are while the
    // old schema is the one BigQuery takes (it has not taken the new column yet).
    await writer.updateSchema([...SCHEMA, { name: 'added', type: 'STRING', mode: 'NULLABLE' }]);
    const next = writer.rowEncoding();
    expect(next).not.toBe(encoding);
    expect(next.spec.format === 'storage-write' && next.spec.schema.map((f) => f.name)).toContain('added');
    let rebuilt = 0;
    const stale = batch.map((row) => {
      const bytes = workerEncoder.encode(row);
      return {
        encoded: encoding.wrap(bytes, bytes.length),
        row: () => {
          rebuilt++;
          return row;
        },
      };
    });
    expect(await writer.append(stale)).toEqual({ rejected: [] });
    expect(rebuilt).toBe(0);
    expect(connection.rowsOf(1)).toEqual(hex(batch));
  });

  it('issue 11 review: while BigQuery has not taken a new column, rows a worker encoded by the spec (the accepted schema where they fit it) are sent without being built again', async () => {
    const { writer, connection } = scripted(() => Promise.resolve(OK));
    await writer.append(outgoing(rows(1)));
    const WIDER = [...SCHEMA, { name: 'added', type: 'STRING', mode: 'NULLABLE' } as const];
    await writer.updateSchema(WIDER);
    const encoding = writer.rowEncoding();
    expect(writer.rowEncoding()).toBe(encoding);
    if (encoding.spec.format !== 'storage-write') throw new Error('expected a Storage Write spec');
    expect(encoding.spec.accepted?.map((f) => f.name)).toEqual(['_doc_id', 'n']);
    expect(encoding.spec.schema.map((f) => f.name)).toEqual(['_doc_id', 'n', 'added']);
    // What a worker does with the spec (compileRowBytes): the accepted schema for rows that fit it.
    const accepted = compileRowEncoder(encoding.spec.accepted ?? []);
    const newest = compileRowEncoder(encoding.spec.schema);
    const plain = rows(2);
    const carrying: HistoryRow = { _doc_id: 'c', n: 9, added: 'x' };
    const never = (): HistoryRow => {
      throw new Error('the row was built again');
    };
    const sent = [
      ...plain.map((row) => {
        const bytes = accepted.encode(row);
        return { encoded: encoding.wrap(bytes, bytes.length, 'accepted'), row: never };
      }),
      { encoded: encoding.wrap(newest.encode(carrying), 1, 'beyond-accepted'), row: never },
    ];
    // BigQuery takes the new column at once here: the carrying row lands with it, the others with the old.
    expect(await writer.append(sent)).toEqual({ rejected: [] });
    const byDescriptor = connection.requests.slice(1).map((request) => ({
      fields: request.protoRows?.writerSchema?.protoDescriptor?.field?.map((f) => f.name),
      rows: request.protoRows?.rows?.serializedRows?.length,
    }));
    expect(byDescriptor).toEqual(
      expect.arrayContaining([
        { fields: ['_doc_id', 'n', 'added'], rows: 1 },
        { fields: ['_doc_id', 'n'], rows: 2 },
      ]),
    );
  });

  it('issue 11 review: encode marks a row with a value beyond the accepted schema, so its append does not build it again', async () => {
    const { writer } = scripted(() => Promise.resolve(OK));
    await writer.append(outgoing(rows(1)));
    await writer.updateSchema([...SCHEMA, { name: 'added', type: 'STRING', mode: 'NULLABLE' }]);
    const carrying: HistoryRow = { _doc_id: 'c', n: 9, added: 'x' };
    const encoded = writer.encode(carrying);
    expect(
      await writer.append([
        {
          encoded,
          row: () => {
            throw new Error('the row was built again');
          },
        },
      ]),
    ).toEqual({ rejected: [] });
  });

  it('issue 11: a row encoded by another writer (or as its size only) is built again and encoded', async () => {
    const { writer, connection } = scripted(() => Promise.resolve(OK));
    const other = scripted(() => Promise.resolve(OK)).writer;
    const batch = rows(2);
    const [first, second] = batch;
    const sent = [
      { encoded: other.encode(first ?? {}), row: () => first ?? {} },
      { encoded: { size: 1 }, row: () => second ?? {} },
    ];
    expect(await writer.append(sent)).toEqual({ rejected: [] });
    expect(connection.rowsOf(0)).toEqual(hex(batch));
  });

  it('refuses an append after close', async () => {
    const { writer } = scripted(() => Promise.resolve(OK));
    await writer.close();
    const failure = await failureOf(writer.append(outgoing(rows(1))));
    expect((failure as BigQueryError).failureClass).toBe('fatal');
  });

  it('throws a fatal error, sending nothing, for a batch over the request limit', async () => {
    const { writer, connection } = scripted(() => Promise.resolve(OK));
    const big = 'x'.repeat(MAX_APPEND_REQUEST_BYTES / 4);
    const failure = await failureOf(
      writer.append(outgoing(Array.from({ length: 4 }, () => ({ _doc_id: big })))),
    );
    expect((failure as BigQueryError).failureClass).toBe('fatal');
    expect(String(failure)).toMatch(
      /over the 10000000-byte request limit: the batcher must send smaller batches/,
    );
    expect(connection.requests).toHaveLength(0);
  });

  it('refuses on its own a row too large for any request, and sends the others', async () => {
    const { writer, connection } = scripted(() => Promise.resolve(OK));
    const outcome = await writer.append(
      outgoing([{ _doc_id: 'small' }, { _doc_id: 'x'.repeat(MAX_APPEND_REQUEST_BYTES) }]),
    );
    expect(outcome.rejected).toHaveLength(1);
    expect(outcome.rejected[0]?.index).toBe(1);
    expect(outcome.rejected[0]?.reason).toMatch(/does not fit in one Storage Write request/);
    expect(connection.rowsOf(0)).toEqual(hex([{ _doc_id: 'small' }]));
  });
});

describe('storageWriteSupport', () => {
  const nested: TableField[] = [
    ...SCHEMA,
    {
      name: 'address',
      type: 'RECORD',
      mode: 'NULLABLE',
      fields: [{ name: 'city', type: 'STRING', mode: 'NULLABLE' }],
    },
  ];

  it('takes every schema on BigQuery and goccy, and flat ones only on bqemulator', () => {
    expect(storageWriteSupport(nested, 'bigquery')).toEqual({ supported: true });
    expect(storageWriteSupport(nested, 'goccy-bigquery-emulator')).toEqual({ supported: true });
    expect(storageWriteSupport(SCHEMA, 'bqemulator')).toEqual({ supported: true });
    expect(storageWriteSupport(nested, 'bqemulator')).toEqual({
      supported: false,
      reason: 'bqemulator cannot take RECORD columns (address) through the Storage Write API',
    });
  });

  it('refuses everywhere a schema the client library cannot describe', () => {
    const colliding: TableField[] = [
      {
        name: 'a_b',
        type: 'RECORD',
        mode: 'NULLABLE',
        fields: [{ name: 'x', type: 'STRING', mode: 'NULLABLE' }],
      },
      {
        name: 'a',
        type: 'RECORD',
        mode: 'NULLABLE',
        fields: [
          {
            name: 'b',
            type: 'RECORD',
            mode: 'NULLABLE',
            fields: [{ name: 'y', type: 'INTEGER', mode: 'NULLABLE' }],
          },
        ],
      },
    ];
    expect(storageWriteSupport(colliding, 'bigquery')).toMatchObject({ supported: false });
  });
});

describe('StorageWriteWriter: bounded waits (issue 10 item 11)', () => {
  /** `promise`, or a failure naming what still waits after `ms`. */
  async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        reject(new Error(`${what} still waiting after ${ms} ms`));
      }, ms);
    });
    try {
      return await Promise.race([promise, late]);
    } finally {
      clearTimeout(timer);
    }
  }

  async function abortedAppend(writer: StorageWriteWriter): Promise<void> {
    const controller = new AbortController();
    const append = writer.append(outgoing(rows(1)), controller.signal);
    await new Promise((resolve) => setImmediate(resolve));
    controller.abort(new Error('settings changed'));
    expect(await failureOf(append)).toEqual(new Error('settings changed'));
  }

  it('issue 10 item 11: an aborted caller leaves the append deadline running, so close() ends when it passes', async () => {
    const { writer, connection } = scripted(() => new Promise<AppendRowsResponse>(() => undefined), {
      appendTimeoutMs: 100,
    });
    await abortedAppend(writer);
    await within(writer.close(), 2_000, 'close()');
    expect(connection.closed).toBe(true);
  });

  it('issue 10 item 11: close() waits for an unanswered append at most closeTimeoutMs', async () => {
    const { writer, connection } = scripted(() => new Promise<AppendRowsResponse>(() => undefined), {
      closeTimeoutMs: 100,
    });
    await abortedAppend(writer);
    const started = Date.now();
    await within(writer.close(), 2_000, 'close()');
    expect(Date.now() - started).toBeGreaterThanOrEqual(90);
    expect(connection.closed).toBe(true);
  });
});
