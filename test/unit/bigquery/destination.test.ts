// BigQueryDestination on fakes: a REST client answering from memory (RecordingBigQuery) and a scripted
// Storage Write stream, for what the emulators cannot be made to do on cue (a schema failure on append).
import { type TableMetadata } from '@google-cloud/bigquery';
import { type managedwriter, type protos } from '@google-cloud/bigquery-storage';
import { describe, expect, it } from 'vitest';
import { type BigQueryClients } from '../../../src/bigquery/client.js';
import { historyRecord } from '../../support/outgoing-rows.js';
import { BigQueryDestination, type DestinationOptions } from '../../../src/bigquery/destination.js';
import { parseColumnSpecs } from '../../../src/schema/column-spec.js';
import { historyTableSchema } from '../../../src/schema/table-schema.js';
import { type ColumnSpec, type TableField } from '../../../src/schema/types.js';
import { RecordingBigQuery } from './recording-bigquery.js';

type AppendRowsResponse = protos.google.cloud.bigquery.storage.v1.IAppendRowsResponse;
type AppendRowsRequest = protos.google.cloud.bigquery.storage.v1.IAppendRowsRequest;

/** The library's StreamConnection as the Writer uses it; each request is answered by `answer`. */
class ScriptedConnection {
  requests = 0;
  /** The writer schema each request carried (the Writer sends it with the first request on a connection). */
  readonly descriptors: string[] = [];
  closed = false;

  constructor(private answer: (n: number, descriptor: string) => AppendRowsResponse) {}

  /** Answers from now on by the writer schema of the request (as JSON text). */
  answerWith(answer: (descriptor: string) => AppendRowsResponse): void {
    this.answer = (_, descriptor) => answer(descriptor);
  }

  getStreamId = (): string => 'projects/mba-test/datasets/ds/tables/history/streams/_default';

  write(request: AppendRowsRequest): { getResult(): Promise<AppendRowsResponse> } {
    this.requests++;
    const descriptor = JSON.stringify(request.protoRows?.writerSchema?.protoDescriptor ?? null);
    this.descriptors.push(descriptor);
    const result = Promise.resolve(this.answer(this.requests, descriptor));
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
      historyRecord({
        row: { _event_id: 'e1', _doc_id: '1', _id: '1', qty: 2 },
        document: () => '{"_id":"1","qty":2}',
      }),
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

  describe('issue 10 review fixes', () => {
    const NO_WAIT = { initialMs: 0, maxMs: 0, multiplier: 1, maxAttempts: 2 };
    const columns = (specs: readonly unknown[]): readonly ColumnSpec[] => parseColumnSpecs(specs).columns;
    const RECORD_BEFORE = columns([
      { name: '_id', type: 'STRING' },
      { name: 'rec', type: 'RECORD', fields: [{ name: 'a', type: 'STRING' }] },
    ]);
    const RECORD_AFTER = columns([
      { name: '_id', type: 'STRING' },
      {
        name: 'rec',
        type: 'RECORD',
        fields: [
          { name: 'a', type: 'STRING' },
          { name: 'sub', type: 'INTEGER' },
        ],
      },
    ]);
    const ROW = { _event_id: 'e1', _doc_id: '1', _id: '1', rec: { a: 'x', sub: 5 } };

    /** A history table as an earlier run (or another owner) left it. */
    function seedTable(recording: RecordingBigQuery, fields: readonly TableField[]): void {
      recording.datasets.add('ds');
      // The REST shape: plain JSON, as the emulator or BigQuery would return it.
      const remote = JSON.parse(JSON.stringify(fields)) as NonNullable<
        NonNullable<TableMetadata['schema']>['fields']
      >;
      recording.tables.set('history', { type: 'TABLE', etag: 'etag-0', schema: { fields: remote } });
    }

    function subFieldsOfRec(recording: RecordingBigQuery): string[] {
      const rec = recording.tables.get('history')?.schema?.fields?.find((f) => f.name === 'rec');
      return (rec?.fields ?? []).map((f) => f.name ?? '');
    }

    function tableReads(recording: RecordingBigQuery): number {
      return recording.requests.filter((r) => r.method === 'GET' && r.uri.endsWith('tables/history')).length;
    }

    function options(
      recording: RecordingBigQuery,
      connection: ScriptedConnection,
      writer: DestinationOptions['writer'],
    ): DestinationOptions {
      return {
        clients: clientsWith(recording, connection),
        datasetId: 'ds',
        table: 'history',
        mappingId: 'db.history',
        writer,
        target: 'bigquery',
        backoff: NO_WAIT,
        schemaBackoff: NO_WAIT,
      };
    }

    it('issue 10 fix finding 1: open adds a RECORD sub-field the existing table lacks (insertAll)', async () => {
      const recording = new RecordingBigQuery('mba-test');
      seedTable(recording, historyTableSchema(RECORD_BEFORE));
      const connection = new ScriptedConnection(() => ({ appendResult: {} }));
      const destination = await BigQueryDestination.open(
        options(recording, connection, 'insert-all'),
        RECORD_AFTER,
      );

      expect(subFieldsOfRec(recording)).toEqual(['a', 'sub']);
      const result = await destination.write([historyRecord({ row: ROW, document: () => '{}' })]);
      expect(result).toMatchObject({ written: 1, deadLettered: 0 });
      expect(recording.inserted).toEqual([{ table: 'history', rows: [ROW] }]);
      await destination.close();
    });

    it('issue 10 fix finding 1: open adds a RECORD sub-field the table lacks before building the Storage Write writer', async () => {
      const recording = new RecordingBigQuery('mba-test');
      seedTable(recording, historyTableSchema(RECORD_BEFORE));
      const connection = new ScriptedConnection(() => ({ appendResult: {} }));
      const destination = await BigQueryDestination.open(
        options(recording, connection, 'storage-write'),
        RECORD_AFTER,
      );

      expect(subFieldsOfRec(recording)).toEqual(['a', 'sub']);
      const result = await destination.write([historyRecord({ row: ROW, document: () => '{}' })]);
      expect(result).toMatchObject({ written: 1, deadLettered: 0 });
      expect(connection.requests).toBe(1);
      expect(connection.descriptors[0]).toContain('"name":"sub"');
      await destination.close();
    });

    it('issue 10 fix finding 1: a schema repair adds a RECORD sub-field the table lacks', async () => {
      const recording = new RecordingBigQuery('mba-test');
      seedTable(recording, historyTableSchema(RECORD_AFTER));
      const connection = new ScriptedConnection(() => ({ appendResult: {} }));
      const destination = await BigQueryDestination.open(
        options(recording, connection, 'insert-all'),
        RECORD_AFTER,
      );
      // The table was re-created since (by hand, from an older definition): BigQuery refuses rec.sub.
      seedTable(recording, historyTableSchema(RECORD_BEFORE));

      const result = await destination.write([historyRecord({ row: ROW, document: () => '{}' })]);

      expect(result).toMatchObject({ written: 1, deadLettered: 0 });
      expect(subFieldsOfRec(recording)).toEqual(['a', 'sub']);
      expect(recording.inserted.flatMap((i) => i.rows)).toEqual([ROW]);
      await destination.close();
    });

    it('issue 10 fix finding 2: evolve rebuilds the writer when the table gained the planned column since', async () => {
      const recording = new RecordingBigQuery('mba-test');
      const connection = new ScriptedConnection(() => ({ appendResult: {} }));
      const before = columns([
        { name: '_id', type: 'STRING' },
        { name: 'qty', type: 'INTEGER' },
      ]);
      const destination = await BigQueryDestination.open(
        options(recording, connection, 'storage-write'),
        before,
      );
      // Another owner of the mapping (a lease handover) added `note` after this writer was built.
      const table = recording.tables.get('history');
      recording.tables.set('history', {
        ...table,
        schema: {
          fields: [...(table?.schema?.fields ?? []), { name: 'note', type: 'STRING', mode: 'NULLABLE' }],
        },
      });
      const planned = [...before, { name: 'note', type: 'STRING' as const }];

      expect(await destination.evolve(planned)).toEqual(planned);
      const reads = tableReads(recording);
      const row = { _event_id: 'e1', _doc_id: '1', _id: '1', qty: 1, note: 'kept' };
      const result = await destination.write([historyRecord({ row, document: () => '{}' })]);

      expect(result).toMatchObject({ written: 1, deadLettered: 0 });
      // Written at the first attempt, with `note` in the writer schema: no refusal, no repair reading the table.
      expect(tableReads(recording)).toBe(reads);
      expect(connection.requests).toBe(1);
      expect(connection.descriptors[0]).toContain('"name":"note"');
      await destination.close();
    });

    it('issue 10 fix finding 4: after a restart while a column propagates, rows without it land at once and the others once BigQuery takes it', async () => {
      const recording = new RecordingBigQuery('mba-test');
      const withColour = columns([
        { name: '_id', type: 'STRING' },
        { name: 'colour', type: 'STRING' },
      ]);
      seedTable(recording, historyTableSchema(withColour));
      // The default stream does not show `colour` for the first three requests that carry it.
      let refusals = 0;
      const connection = new ScriptedConnection(() => ({ appendResult: {} }));
      const answers: string[] = [];
      connection.answerWith((descriptor) => {
        if (descriptor.includes('"name":"colour"') && refusals < 3) {
          refusals++;
          answers.push('refused');
          return {
            error: {
              code: 3,
              message: `Input schema has more fields than BigQuery schema, extra fields: 'colour' Entity: projects/mba-test/datasets/ds/tables/history/streams/_default`,
            },
          };
        }
        answers.push(descriptor.includes('"name":"colour"') ? 'new schema' : 'without colour');
        return { appendResult: {} };
      });
      const destination = await BigQueryDestination.open(
        {
          ...options(recording, connection, 'storage-write'),
          schemaBackoff: { ...NO_WAIT, maxAttempts: 10 },
        },
        withColour,
      );
      const plain = { _event_id: 'e1', _doc_id: '1', _id: '1' };
      const carrying = { _event_id: 'e2', _doc_id: '2', _id: '2', colour: 'red' };

      const result = await destination.write([
        historyRecord({ row: plain, document: () => '{}' }),
        historyRecord({ row: carrying, document: () => '{}' }),
      ]);

      expect(result).toMatchObject({ written: 2, deadLettered: 0 });
      expect(answers.slice(0, 2)).toEqual(['refused', 'without colour']);
      expect(answers.at(-1)).toBe('new schema');
      expect(answers.filter((a) => a === 'without colour')).toHaveLength(1);
      await destination.close();
    });

    it('issue 10 fix finding 5: evolve does not read the table again for a field the table holds in a type the archiver cannot write', async () => {
      const recording = new RecordingBigQuery('mba-test');
      const current = columns([{ name: '_id', type: 'STRING' }]);
      seedTable(recording, [
        ...historyTableSchema(current),
        { name: 'geo', type: 'GEOGRAPHY' as TableField['type'], mode: 'NULLABLE' },
      ]);
      const connection = new ScriptedConnection(() => ({ appendResult: {} }));
      const destination = await BigQueryDestination.open(
        options(recording, connection, 'insert-all'),
        current,
      );
      const reads = tableReads(recording);
      const planned = [...current, { name: 'geo', type: 'STRING' as const }];

      // Values of `geo` go to _unmapped: the columns stay as they are, batch after batch.
      expect(await destination.evolve(planned)).toEqual(current);
      expect(await destination.evolve(planned)).toEqual(current);
      expect(tableReads(recording)).toBe(reads);
      await destination.close();
    });
  });
});
