// BigQueryDestination on fakes: a REST client answering from memory (RecordingBigQuery) and a scripted
// Storage Write stream, for what the emulators cannot be made to do on cue (a schema failure on append).
import { type managedwriter, type protos } from '@google-cloud/bigquery-storage';
import { describe, expect, it } from 'vitest';
import { type BigQueryClients } from '../../../src/bigquery/client.js';
import { BigQueryDestination } from '../../../src/bigquery/destination.js';
import { parseColumnSpecs } from '../../../src/schema/column-spec.js';
import { RecordingBigQuery } from './recording-bigquery.js';

type AppendRowsResponse = protos.google.cloud.bigquery.storage.v1.IAppendRowsResponse;

/** The library's StreamConnection as the Writer uses it; each request is answered by `answer`. */
class ScriptedConnection {
  requests = 0;
  closed = false;

  constructor(private readonly answer: (n: number) => AppendRowsResponse) {}

  getStreamId = (): string => 'projects/mba-test/datasets/ds/tables/history/streams/_default';

  write(): { getResult(): Promise<AppendRowsResponse> } {
    this.requests++;
    const result = Promise.resolve(this.answer(this.requests));
    return { getResult: () => result };
  }

  reconnect(): void {
    // Nothing to reconnect to.
  }

  close(): void {
    this.closed = true;
  }

  onConnectionError(): { off(): void } {
    return { off: () => undefined };
  }
}

function clientsWith(recording: RecordingBigQuery, connection: ScriptedConnection): BigQueryClients {
  const writerClient = {
    getWriteStream: () => Promise.resolve({}),
    createStreamConnection: () => Promise.resolve(connection),
  };
  return {
    projectId: 'mba-test',
    bigquery: recording.client,
    writerClient: writerClient as unknown as managedwriter.WriterClient,
    emulator: true,
    close: () => Promise.resolve(),
  };
}

describe('BigQueryDestination', () => {
  it('issue 10 item 18: a writer-kind switch during a schema repair sends the retried batch through the new writer', async () => {
    const recording = new RecordingBigQuery('mba-test');
    // BigQuery has not taken the new column yet: the first append is refused for its schema.
    const connection = new ScriptedConnection((n) =>
      n === 1
        ? {
            error: {
              code: 3,
              message: "Input schema has more fields than BigQuery schema, extra fields: 'qty'",
            },
          }
        : { appendResult: {} },
    );
    const chosen: string[] = [];
    const columns = parseColumnSpecs([
      { name: '_id', type: 'STRING', mongo_field: '_id' },
      { name: 'qty', type: 'INTEGER' },
    ]).columns;
    const destination = await BigQueryDestination.open(
      {
        clients: clientsWith(recording, connection),
        datasetId: 'ds',
        table: 'history',
        mappingId: 'db.history',
        writer: 'storage-write',
        target: 'bqemulator',
        backoff: { initialMs: 0, maxMs: 0, multiplier: 1, maxAttempts: 3 },
        onWriterChosen: (kind, reason) => chosen.push(`${kind}${reason ? `: ${reason}` : ''}`),
      },
      columns,
    );
    expect(chosen).toEqual(['storage-write']);
    // Meanwhile the table gained a RECORD column (another owner of the mapping evolved it): the repair reads
    // the table, and bqemulator cannot take RECORD columns through Storage Write, so the writer switches.
    const table = recording.tables.get('history');
    const fields = table?.schema?.fields ?? [];
    recording.tables.set('history', {
      ...table,
      schema: {
        fields: [...fields, { name: 'address', type: 'RECORD', fields: [{ name: 'city', type: 'STRING' }] }],
      },
    });

    const result = await destination.write([
      { row: { _event_id: 'e1', _doc_id: '1', _id: '1', qty: 2 }, document: () => '{"_id":"1","qty":2}' },
    ]);

    expect(result).toMatchObject({ written: 1, deadLettered: 0 });
    expect(chosen).toEqual([
      'storage-write',
      'insert-all: bqemulator cannot take RECORD columns (address) through the Storage Write API',
    ]);
    expect(destination.writerKind).toBe('insert-all');
    expect(connection.requests).toBe(1);
    expect(recording.inserted).toEqual([
      { table: 'history', rows: [{ _event_id: 'e1', _doc_id: '1', _id: '1', qty: 2 }] },
    ]);
    await destination.close();
  });
});
