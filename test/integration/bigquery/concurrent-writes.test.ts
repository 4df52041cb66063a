// Issue 11: several batches in flight at once through one real BigQueryDestination on the emulator, with
// each writer: every row lands exactly once. What the emulator cannot show (BigQuery's per-connection
// ordering, throttling, slow answers) is covered by the unit tests on a held stream (docs/testing.md).
import { historyRecord } from '../../support/outgoing-rows.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type BigQueryClients } from '../../../src/bigquery/client.js';
import { BigQueryDestination } from '../../../src/bigquery/destination.js';
import { type SinkRecord } from '../../../src/bigquery/sink.js';
import { InFlightWindow } from '../../../src/core/window.js';
import { type WriterKind } from '../../../src/core/settings.js';
import { parseColumnSpecs } from '../../../src/schema/column-spec.js';
import { bigQueryTestEnv, uniqueDatasetId } from '../support/bigquery.js';
import { emulatorClients } from '../support/bigquery-clients.js';

const peer = bigQueryTestEnv().peer;
let clients: BigQueryClients;
const datasetId = uniqueDatasetId('concurrent');

const BATCHES = 20;
const ROWS_PER_BATCH = 25;
const IN_FLIGHT = 8;

beforeAll(async () => {
  clients = await emulatorClients();
});

afterAll(async () => {
  await clients.close();
});

const columns = parseColumnSpecs([
  { name: '_id', type: 'STRING', mongo_field: '_id', primary_key: true },
  { name: 'qty', type: 'INTEGER' },
]).columns;

/** Batch `b`'s rows: complete history rows, with event ids unique across batches. */
function batch(b: number, extra: Record<string, unknown> = {}): SinkRecord[] {
  return Array.from({ length: ROWS_PER_BATCH }, (_, i) => {
    const n = b * ROWS_PER_BATCH + i;
    return historyRecord({
      row: {
        ...extra,
        _id: `"${n}"`,
        qty: n,
        time_archived: new Date(1_732_000_000_000 + n).toISOString(),
        operationType: 'insert',
        _cluster_time: new Date(1_732_000_000_000).toISOString(),
        _seq: `1732000000.${String(n).padStart(10, '0')}`,
        _doc_id: `"${n}"`,
        _event_id: `event-${n}`,
        _unmapped: null,
      },
      document: () => `{"_id":"${n}","qty":${n}}`,
    });
  });
}

async function copiesByEventId(table: string): Promise<Map<string, number>> {
  const [rows] = await clients.bigquery.query({
    query: `SELECT _event_id, COUNT(*) AS copies FROM \`${clients.projectId}.${datasetId}.${table}\` GROUP BY _event_id`,
  });
  return new Map(
    (rows as { _event_id: string; copies: number | string }[]).map((r) => [r._event_id, Number(r.copies)]),
  );
}

function expectEachOnce(copies: ReadonlyMap<string, number>): void {
  const expected = Array.from({ length: BATCHES * ROWS_PER_BATCH }, (_, n) => `event-${n}`);
  expect([...copies.keys()].sort()).toEqual([...expected].sort());
  expect([...copies.values()].every((c) => c === 1)).toBe(true);
}

describe('BigQuery destination with batches written concurrently (issue 11)', () => {
  it.each([
    ['storage-write', 1],
    ['storage-write', 2],
    ['insert-all', 1],
  ] as const)(
    'issue 11 item 5: %s (%i connection(s)): 20 batches, 8 in flight, every row lands exactly once',
    async (writer: WriterKind, connections: number) => {
      const table = `history_${writer.replace('-', '_')}_${connections}`;
      const destination = await BigQueryDestination.open(
        {
          clients,
          datasetId,
          table,
          mappingId: `bidding.${table}`,
          writer,
          target: peer,
          storageWriteConnections: connections,
          backoff: { initialMs: 10, maxMs: 100, multiplier: 2, maxAttempts: 3 },
        },
        columns,
      );
      try {
        expect(destination.writerKind).toBe(writer);
        const window = new InFlightWindow({ maxRequests: IN_FLIGHT, maxBytes: 64_000_000 });
        let inFlight = 0;
        let mostInFlight = 0;
        const writes: Promise<unknown>[] = [];
        for (let b = 0; b < BATCHES; b++) {
          await window.acquire(0);
          inFlight++;
          mostInFlight = Math.max(mostInFlight, inFlight);
          writes.push(
            destination.write(batch(b)).finally(() => {
              inFlight--;
              window.release(0);
            }),
          );
        }
        const results = await Promise.all(writes);
        expect(mostInFlight).toBe(IN_FLIGHT);
        expect(results).toEqual(
          Array.from({ length: BATCHES }, () => ({ written: ROWS_PER_BATCH, deadLettered: 0, reasons: [] })),
        );

        expectEachOnce(await copiesByEventId(table));
      } finally {
        await destination.close();
      }
    },
  );

  it.each(['storage-write', 'insert-all'] as const)(
    'issue 11 item 2: %s: an evolution while batches are in flight waits for them; the batches after it carry the new column',
    async (writer: WriterKind) => {
      const table = `evolving_${writer.replace('-', '_')}`;
      const destination = await BigQueryDestination.open(
        {
          clients,
          datasetId,
          table,
          mappingId: `bidding.${table}`,
          writer,
          target: peer,
          backoff: { initialMs: 10, maxMs: 100, multiplier: 2, maxAttempts: 3 },
        },
        columns,
      );
      try {
        const half = BATCHES / 2;
        const before = Array.from({ length: half }, (_, b) => destination.write(batch(b)));
        await destination.evolve([
          ...columns,
          ...parseColumnSpecs([{ name: 'colour', type: 'STRING' }]).columns,
        ]);
        const after = Array.from({ length: half }, (_, b) =>
          destination.write(batch(half + b, { colour: 'red' })),
        );
        const results = await Promise.all([...before, ...after]);
        expect(results.every((r) => r.written === ROWS_PER_BATCH && r.deadLettered === 0)).toBe(true);

        expectEachOnce(await copiesByEventId(table));
        const [coloured] = await clients.bigquery.query({
          query: `SELECT COUNT(*) AS n FROM \`${clients.projectId}.${datasetId}.${table}\` WHERE colour = 'red'`,
        });
        expect(Number((coloured as { n: number | string }[])[0]?.n)).toBe(half * ROWS_PER_BATCH);
      } finally {
        await destination.close();
      }
    },
  );
});
