// BigQueryDestination under concurrent writes and schema changes (issue 11): evolutions and repairs run one
// at a time, and a writer rebuild waits for the appends in flight while holding back the ones handed over
// meanwhile. The REST client answers from memory (RecordingBigQuery); the history writer is a fake put in
// through `decorateWriter`, so that the test decides when each append is answered.
import { type managedwriter } from '@google-cloud/bigquery-storage';
import { describe, expect, it } from 'vitest';
import { type BigQueryClients } from '../../../src/bigquery/client.js';
import { BigQueryDestination, type DestinationOptions } from '../../../src/bigquery/destination.js';
import {
  type AppendOutcome,
  type EncodedRow,
  type HistoryRow,
  type OutgoingRow,
  type TableWriter,
} from '../../../src/bigquery/writer.js';
import { rowBytes } from '../../../src/core/stream-loop.js';
import { historyRecord } from '../../support/outgoing-rows.js';
import { type WriterKind } from '../../../src/core/settings.js';
import { parseColumnSpecs } from '../../../src/schema/column-spec.js';
import { type ColumnSpec, type TableField } from '../../../src/schema/types.js';
import { RecordingBigQuery } from './recording-bigquery.js';

const columns = (specs: readonly unknown[]): readonly ColumnSpec[] => parseColumnSpecs(specs).columns;
const BASE = columns([
  { name: '_id', type: 'STRING' },
  { name: 'qty', type: 'INTEGER' },
]);
const NO_WAIT = { initialMs: 0, maxMs: 0, multiplier: 1, maxAttempts: 2 };

/** A history writer whose appends are answered by the test (or at once, when `held` is false). */
class FakeWriter implements TableWriter {
  readonly appended: HistoryRow[][] = [];
  readonly schemas: (readonly TableField[])[] = [];
  readonly #held: { rows: readonly HistoryRow[]; answer: () => void }[] = [];
  inFlight = 0;
  closed = false;
  /** Appends in flight when `close` was called, and appends made after it. */
  closedWithInFlight = 0;
  appendsAfterClose = 0;

  constructor(
    readonly kind: WriterKind,
    schema: readonly TableField[],
    private readonly held: boolean,
  ) {
    this.schemas.push(schema);
  }

  encode(row: HistoryRow): EncodedRow {
    return { size: rowBytes(row) };
  }

  append(outgoing: readonly OutgoingRow[]): Promise<AppendOutcome> {
    const rows = outgoing.map((r) => r.row());
    if (this.closed) {
      this.appendsAfterClose++;
      return Promise.reject(new Error('append on a closed writer'));
    }
    this.appended.push([...rows]);
    if (!this.held) return Promise.resolve({ rejected: [] });
    this.inFlight++;
    return new Promise<AppendOutcome>((resolve) => {
      this.#held.push({
        rows,
        answer: () => {
          this.inFlight--;
          resolve({ rejected: [] });
        },
      });
    });
  }

  answerAll(): void {
    for (const held of this.#held.splice(0)) held.answer();
  }

  updateSchema(schema: readonly TableField[]): Promise<void> {
    this.schemas.push(schema);
    return Promise.resolve();
  }

  close(): Promise<void> {
    this.closed = true;
    this.closedWithInFlight += this.inFlight;
    return Promise.resolve();
  }
}

function clientsWith(recording: RecordingBigQuery): BigQueryClients {
  return {
    projectId: 'mba-test',
    bigquery: recording.client,
    // The fake writers stand in for the Storage Write writer: nothing reaches this client.
    writerClient: {} as unknown as managedwriter.WriterClient,
    emulator: true,
    close: () => Promise.resolve(),
  };
}

async function openWith(
  recording: RecordingBigQuery,
  options: Partial<DestinationOptions> & { heldFirst?: boolean } = {},
): Promise<{ destination: BigQueryDestination; writers: FakeWriter[] }> {
  const writers: FakeWriter[] = [];
  const destination = await BigQueryDestination.open(
    {
      clients: clientsWith(recording),
      datasetId: 'ds',
      table: 'history',
      mappingId: 'db.history',
      writer: 'storage-write',
      target: 'bqemulator',
      backoff: NO_WAIT,
      schemaBackoff: NO_WAIT,
      decorateWriter: (writer, table) => {
        const fake = new FakeWriter(writer.kind, table.schema, writers.length === 0 && !!options.heldFirst);
        writers.push(fake);
        return fake;
      },
      ...options,
    },
    BASE,
  );
  return { destination, writers };
}

const names = (schema: readonly TableField[] | undefined) => (schema ?? []).map((f) => f.name);
const record = (id: string, extra: Record<string, unknown> = {}) =>
  historyRecord({
    row: { _event_id: `e${id}`, _doc_id: id, _id: id, ...extra },
    document: () => `{"_id":"${id}"}`,
  });
const tick = () => new Promise((resolve) => setImmediate(resolve));

describe('BigQueryDestination with concurrent writes and schema changes (issue 11)', () => {
  it('issue 11 item 2: two concurrent evolutions keep both additions, in the table and in the writer', async () => {
    const recording = new RecordingBigQuery('mba-test');
    const { destination, writers } = await openWith(recording, { target: 'bigquery' });
    const withA = [...BASE, ...columns([{ name: 'a', type: 'STRING' }])];
    const withB = [...BASE, ...columns([{ name: 'b', type: 'STRING' }])];
    // The first evolution to patch the table read it back before the other's patch; its views are then
    // slow to replace, so that it ends last.
    let views = 0;
    recording.delay = ({ json }) => {
      const query = (json as { query?: unknown } | undefined)?.query;
      const view = typeof query === 'string' && query.startsWith('CREATE OR REPLACE VIEW');
      return view && ++views === 1 ? 50 : 0;
    };

    await Promise.all([destination.evolve(withA), destination.evolve(withB)]);

    const table = recording.tables.get('history')?.schema?.fields?.map((f) => f.name);
    expect(table).toEqual(expect.arrayContaining(['a', 'b']));
    // The writer was last given a schema with both: rows carrying either column are written as they are.
    const writer = writers.at(-1);
    expect(names(writer?.schemas.at(-1))).toEqual(expect.arrayContaining(['a', 'b']));
    await destination.close();
  });

  it('issue 11 item 2: a writer switch waits for the append in flight, and a batch handed over meanwhile goes to the new writer', async () => {
    const recording = new RecordingBigQuery('mba-test');
    const { destination, writers } = await openWith(recording, { heldFirst: true });
    const first = writers[0];
    expect(first?.kind).toBe('storage-write');

    const inFlight = destination.write([record('1')]);
    await tick();
    expect(first?.inFlight).toBe(1);
    // A RECORD column: bqemulator cannot take it through Storage Write, so the writer becomes insertAll.
    const evolving = destination.evolve([
      ...BASE,
      ...columns([{ name: 'address', type: 'RECORD', fields: [{ name: 'city', type: 'STRING' }] }]),
    ]);
    // The evolution patches the table and replaces the view (its DDL, then its label: the second label, the
    // first being open's) before the switch.
    const viewLabels = () =>
      recording.requests.filter((r) => r.method === 'PATCH' && r.uri.endsWith('/history_view')).length;
    while (viewLabels() < 2) await tick();
    for (let i = 0; i < 10; i++) await tick();
    const handedOver = destination.write([record('2')]);
    for (let i = 0; i < 10; i++) await tick();

    // The old writer is still open (its append is out) and got nothing more; the new batch waits.
    expect(first?.closed).toBe(false);
    expect(first?.appended).toHaveLength(1);
    expect(writers).toHaveLength(1);

    first?.answerAll();
    expect(await inFlight).toMatchObject({ written: 1 });
    await evolving;
    expect(await handedOver).toMatchObject({ written: 1, deadLettered: 0 });

    const second = writers[1];
    expect(second?.kind).toBe('insert-all');
    expect(second?.appended.map((rows) => rows.map((r) => r._id))).toEqual([['2']]);
    expect(first?.closed).toBe(true);
    expect(first?.closedWithInFlight).toBe(0);
    expect(first?.appendsAfterClose).toBe(0);
    await destination.close();
  });
});
