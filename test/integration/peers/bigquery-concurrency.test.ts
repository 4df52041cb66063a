// The BigQuery peer under what the daemon's tests do to it: Storage Write appends on ten streams at once while
// REST queries and table lookups run. bqemulator 1.4.0 as installed fails this twice over (see
// scripts/peers/bqemulator/serial_start.py): it deadlocked when an append overlapped a query (one DuckDB
// connection used from its gRPC threads and its event loop at once), which hung a CI run until its time ran
// out; and it served only six open streams, the seventh writer waiting forever. Each call below has its own
// deadline, so a hang fails the test quickly.
import { outgoing } from '../../support/outgoing-rows.js';
import { type Dataset, type TableField as ApiTableField } from '@google-cloud/bigquery';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type BigQueryClients } from '../../../src/bigquery/client.js';
import { StorageWriteWriter } from '../../../src/bigquery/storage-write-writer.js';
import { type HistoryRow } from '../../../src/bigquery/writer.js';
import { historyTableSchema } from '../../../src/schema/table-schema.js';
import { type ColumnSpec, type TableField } from '../../../src/schema/types.js';
import { bigQueryTestEnv, uniqueDatasetId } from '../support/bigquery.js';
import { emulatorClients } from '../support/bigquery-clients.js';

const env = bigQueryTestEnv();
const COLUMNS: ColumnSpec[] = [
  { name: '_id', type: 'STRING', mongo_field: '_id', primary_key: true },
  { name: 'n', type: 'INTEGER' },
  { name: 'note', type: 'STRING' },
];
const TABLES = ['t0', 't1', 't2', 't3', 't4', 't5', 't6', 't7', 't8', 't9'] as const;
const ROUNDS = 20;
const ROWS_PER_APPEND = 50;
/** Far above what one call takes on this machine (tens of milliseconds), far below the test's timeout. */
const CALL_DEADLINE_MS = 15_000;

let clients: BigQueryClients;
let dataset: Dataset;
const writers: StorageWriteWriter[] = [];

beforeAll(async () => {
  clients = await emulatorClients();
  [dataset] = await clients.bigquery.createDataset(uniqueDatasetId('concurrency'));
});

afterAll(async () => {
  for (const writer of writers) await writer.close();
  await dataset.delete({ force: true });
  await clients.close();
});

/** Rejects when `call` has not settled within the deadline: a peer that stopped answering. */
async function within<T>(what: string, call: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      reject(new Error(`${what}: no answer within ${CALL_DEADLINE_MS} ms`));
    }, CALL_DEADLINE_MS);
  });
  try {
    return await Promise.race([call, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

function row(table: string, round: number, index: number): HistoryRow {
  const id = `${table}-${round}-${index}`;
  return {
    _id: id,
    n: round * ROWS_PER_APPEND + index,
    note: 'x'.repeat(200),
    time_archived: '2026-11-25T10:00:01.250Z',
    operationType: 'insert',
    _cluster_time: '2026-11-25T10:00:00Z',
    _seq: `0000000069258a40:${id}`,
    _doc_id: id,
    _event_id: `event-${id}`,
    _unmapped: null,
  };
}

describe(`the BigQuery peer under concurrent appends and queries (${env.peer})`, () => {
  it('answers every append, query and table lookup while they overlap', async () => {
    const schema: readonly TableField[] = historyTableSchema(COLUMNS);
    for (const table of TABLES) {
      await dataset
        .table(table)
        .create({ schema: { fields: JSON.parse(JSON.stringify(schema)) as ApiTableField[] } });
      writers.push(new StorageWriteWriter({ clients, datasetId: dataset.id ?? '', tableId: table, schema }));
    }
    const ref = (table: string) => `\`${clients.projectId}.${dataset.id ?? ''}.${table}\``;

    const appending = writers.map(async (writer, w) => {
      const table = TABLES[w] ?? '';
      for (let round = 0; round < ROUNDS; round += 1) {
        const rows = Array.from({ length: ROWS_PER_APPEND }, (_, i) => row(table, round, i));
        const outcome = await within(`append ${table} #${round}`, writer.append(outgoing(rows)));
        expect(outcome.rejected).toEqual([]);
      }
    });
    let queries = 0;
    const appended = new AbortController();
    const querying = (async () => {
      while (!appended.signal.aborted) {
        for (const table of TABLES) {
          await within(
            `query ${table}`,
            clients.bigquery.query({ query: `SELECT COUNT(*) AS n FROM ${ref(table)}` }),
          );
          await within(`lookup ${table}`, dataset.table(table).getMetadata());
          queries += 1;
        }
      }
    })();
    try {
      await Promise.all(appending);
    } finally {
      appended.abort();
      await querying;
    }

    expect(queries).toBeGreaterThan(0);
    for (const table of TABLES) {
      const [rows] = await clients.bigquery.query({ query: `SELECT COUNT(*) AS n FROM ${ref(table)}` });
      expect(rows).toEqual([{ n: ROUNDS * ROWS_PER_APPEND }]);
    }
  }, 120_000);
});
