import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type BigQueryClients } from '../../../src/bigquery/client.js';
import { BigQueryDestination, type DestinationOptions } from '../../../src/bigquery/destination.js';
import { changeRecord } from '../../../src/core/history-rows.js';
import { type ChangeEvent } from '../../../src/core/model.js';
import { parseColumnSpecs } from '../../../src/schema/column-spec.js';
import { planEvolution } from '../../../src/schema/evolve.js';
import { type ColumnSpec } from '../../../src/schema/types.js';
import { compileRowMapper } from '../../../src/transform/row-mapper.js';
import { bigQueryTestEnv, uniqueDatasetId } from '../support/bigquery.js';
import { emulatorClients } from '../support/bigquery-clients.js';

const peer = bigQueryTestEnv().peer;
let clients: BigQueryClients;
const datasetId = uniqueDatasetId('dest');

beforeAll(async () => {
  clients = await emulatorClients();
});

afterAll(async () => {
  await clients.close();
});

function options(table: string, chosen: string[]): DestinationOptions {
  return {
    clients,
    datasetId,
    table,
    mappingId: `bidding.${table}`,
    writer: 'storage-write',
    target: peer,
    backoff: { initialMs: 10, maxMs: 100, multiplier: 2, maxAttempts: 3 },
    onWriterChosen: (kind, reason) => chosen.push(`${kind}${reason ? `: ${reason}` : ''}`),
  };
}

let tick = 0;
function upsert(
  id: number,
  document: Record<string, unknown>,
  op: 'insert' | 'update' = 'insert',
): Extract<ChangeEvent, { kind: 'upsert' }> {
  tick++;
  return {
    kind: 'upsert',
    operationType: op,
    token: `tok${String(tick).padStart(6, '0')}`,
    clusterTime: { t: 1_732_000_000, i: tick },
    documentId: id,
    document: { _id: id, ...document },
  };
}

async function view(table: string, columns: string): Promise<Record<string, unknown>[]> {
  const [rows] = await clients.bigquery.query({
    query: `SELECT ${columns} FROM \`${clients.projectId}.${datasetId}.${table}_view\` ORDER BY _doc_id`,
  });
  return rows as Record<string, unknown>[];
}

describe('BigQuery destination', () => {
  it('writes changes through the preferred writer, then evolves the schema and keeps writing', async () => {
    const chosen: string[] = [];
    const columns = parseColumnSpecs([
      { name: '_id', type: 'STRING', mongo_field: '_id', primary_key: true },
      { name: 'name', type: 'STRING' },
      { name: 'qty', type: 'INTEGER' },
    ]).columns;
    const destination = await BigQueryDestination.open(options('orders', chosen), columns);
    try {
      // A flat table goes through the Storage Write API on both emulators.
      expect(chosen).toEqual(['storage-write']);
      const mapper = compileRowMapper(columns);
      const first = [
        upsert(1, { name: 'a', qty: 1 }),
        upsert(2, { name: 'b', qty: 2 }),
        upsert(1, { name: 'a', qty: 5 }, 'update'),
      ];
      const result = await destination.write(first.map((e) => changeRecord(mapper, e, new Date())));
      expect(result).toMatchObject({ written: 3, deadLettered: 0 });
      expect(await view('orders', '_id, name, CAST(qty AS STRING) AS qty')).toEqual([
        { _id: '{"$numberInt":"1"}', name: 'a', qty: '5' },
        { _id: '{"$numberInt":"2"}', name: 'b', qty: '2' },
      ]);

      // A document brings a new field: the table gets a column, the writer its new schema.
      const next = { _id: 3, name: 'c', qty: 3, colour: 'red' };
      const evolution = planEvolution(destination.columns, next);
      expect(evolution.additions.map((a) => a.column.name)).toEqual(['colour']);
      const evolvedColumns = await destination.evolve(evolution.columns);
      expect(evolvedColumns).toEqual(evolution.columns);
      const evolved = compileRowMapper(evolvedColumns);
      const more = await destination.write([
        changeRecord(evolved, upsert(3, { name: 'c', qty: 3, colour: 'red' }), new Date()),
      ]);
      expect(more).toMatchObject({ written: 1, deadLettered: 0 });
      expect(await view('orders', '_id, colour')).toEqual([
        { _id: '{"$numberInt":"1"}', colour: null },
        { _id: '{"$numberInt":"2"}', colour: null },
        { _id: '{"$numberInt":"3"}', colour: 'red' },
      ]);
    } finally {
      await destination.close();
    }
  });

  it('issue 10 item 16: evolution adding several top-level columns at once leaves a table every writer can use', async () => {
    const chosen: string[] = [];
    const columns = parseColumnSpecs([
      { name: '_id', type: 'STRING', mongo_field: '_id', primary_key: true },
    ]).columns;
    const destination = await BigQueryDestination.open(options('several', chosen), columns);
    try {
      const document = { _id: 1, a: 'x', b: 2, c: true };
      const planned = planEvolution(destination.columns, document);
      expect(planned.additions.map((a) => a.column.name)).toEqual(['a', 'b', 'c']);
      const evolved = await destination.evolve(planned.columns);
      const result = await destination.write([
        changeRecord(compileRowMapper(evolved), upsert(1, { a: 'x', b: 2, c: true }), new Date()),
      ]);
      expect(result).toMatchObject({ written: 1, deadLettered: 0 });
      expect(await view('several', '_id, a, CAST(b AS STRING) AS b, c')).toEqual([
        { _id: '{"$numberInt":"1"}', a: 'x', b: '2', c: true },
      ]);
    } finally {
      await destination.close();
    }
  });

  it('falls back to insertAll where the emulator cannot take the table through Storage Write', async () => {
    const chosen: string[] = [];
    const columns: readonly ColumnSpec[] = parseColumnSpecs([
      { name: '_id', type: 'STRING', mongo_field: '_id', primary_key: true },
      { name: 'address', type: 'RECORD', fields: [{ name: 'city', type: 'STRING' }] },
    ]).columns;
    const destination = await BigQueryDestination.open(options('people', chosen), columns);
    try {
      if (peer === 'bqemulator') {
        // Gap (bqemulator): no RECORD column on the Storage Write path.
        expect(chosen).toEqual([
          'insert-all: bqemulator cannot take RECORD columns (address) through the Storage Write API',
        ]);
      } else {
        expect(chosen).toEqual(['storage-write']);
      }
      const mapper = compileRowMapper(columns);
      await destination.write([changeRecord(mapper, upsert(7, { address: { city: 'Oslo' } }), new Date())]);
      expect(await view('people', '_id, address.city AS city')).toEqual([
        { _id: '{"$numberInt":"7"}', city: 'Oslo' },
      ]);
    } finally {
      await destination.close();
    }
  });

  it('issue 12: a second start runs no view DDL; a changed column set does', async () => {
    // Every statement the REST client sends, seen on its way out (a request interceptor of the library).
    const statements: string[] = [];
    const seen = (request: { readonly uri?: unknown; readonly json?: { readonly query?: unknown } }) => {
      const query = request.json?.query;
      if (String(request.uri).endsWith('/queries') && typeof query === 'string') statements.push(query);
      return request;
    };
    // The library's request options type is a union the interceptor only reads from.
    const interceptor = { request: seen } as unknown as BigQueryClients['bigquery']['interceptors'][number];
    const viewDdl = () => statements.filter((s) => /^(CREATE OR REPLACE|DROP) VIEW/.test(s));
    clients.bigquery.interceptors.push(interceptor);
    try {
      const chosen: string[] = [];
      const columns = parseColumnSpecs([
        { name: '_id', type: 'STRING', mongo_field: '_id', primary_key: true },
        { name: 'city', type: 'STRING' },
      ]).columns;
      await (await BigQueryDestination.open(options('restarts', chosen), columns)).close();
      expect(viewDdl().filter((s) => s.startsWith('CREATE'))).toHaveLength(2);

      statements.length = 0;
      await (await BigQueryDestination.open(options('restarts', chosen), columns)).close();
      expect(statements).toEqual([]);

      const wider = parseColumnSpecs([
        { name: '_id', type: 'STRING', mongo_field: '_id', primary_key: true },
        { name: 'city', type: 'STRING' },
        { name: 'zip', type: 'STRING' },
      ]).columns;
      const destination = await BigQueryDestination.open(options('restarts', chosen), wider);
      try {
        expect(viewDdl().filter((s) => s.startsWith('CREATE'))).toHaveLength(2);
        await destination.write([
          changeRecord(compileRowMapper(wider), upsert(11, { city: 'Lyon', zip: '69001' }), new Date()),
        ]);
        // The views created again show the new column.
        expect(await view('restarts', '_id, city, zip')).toEqual([
          { _id: '{"$numberInt":"11"}', city: 'Lyon', zip: '69001' },
        ]);
      } finally {
        await destination.close();
      }
    } finally {
      clients.bigquery.interceptors.splice(clients.bigquery.interceptors.indexOf(interceptor), 1);
    }
  });

  it('adds the columns an existing table lacks when it is opened with more columns', async () => {
    const chosen: string[] = [];
    const narrow = parseColumnSpecs([
      { name: '_id', type: 'STRING', mongo_field: '_id', primary_key: true },
    ]).columns;
    await (await BigQueryDestination.open(options('legacy', chosen), narrow)).close();
    const wide = parseColumnSpecs([
      { name: '_id', type: 'STRING', mongo_field: '_id', primary_key: true },
      { name: 'extra', type: 'STRING' },
    ]).columns;
    const destination = await BigQueryDestination.open(options('legacy', chosen), wide);
    try {
      await destination.write([
        changeRecord(compileRowMapper(wide), upsert(9, { extra: 'yes' }), new Date()),
      ]);
      expect(await view('legacy', '_id, extra')).toEqual([{ _id: '{"$numberInt":"9"}', extra: 'yes' }]);
    } finally {
      await destination.close();
    }
  });
});
