import { encodedBy, historyRecord, outgoing } from '../../support/outgoing-rows.js';
import {
  Binary,
  BSONRegExp,
  Code,
  DBRef,
  Decimal128,
  Int32,
  Long,
  MinKey,
  ObjectId,
  Timestamp,
  UUID,
  deserialize,
  serialize,
} from 'bson';
import { type Dataset, type Table, type TableField as TableFieldSchema } from '@google-cloud/bigquery';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type BigQueryClients } from '../../../src/bigquery/client.js';
import { InsertAllWriter } from '../../../src/bigquery/insert-all-writer.js';
import { BigQuerySink } from '../../../src/bigquery/sink.js';
import { parseColumnSpecs } from '../../../src/schema/column-spec.js';
import { historyTableSchema } from '../../../src/schema/table-schema.js';
import { type TableField } from '../../../src/schema/types.js';
import { BSON_DECODE_OPTIONS } from '../../../src/base/bson-kind.js';
import { relaxedEjsonText } from '../../../src/transform/ejson.js';
import { compileRowMapper } from '../../../src/transform/row-mapper.js';
import { docIdString } from '../../../src/transform/values.js';
import { bigQueryTestEnv, uniqueDatasetId } from '../support/bigquery.js';
import { emulatorClients } from '../support/bigquery-clients.js';

const peer = bigQueryTestEnv().peer;
let clients: BigQueryClients;
let dataset: Dataset;

beforeAll(async () => {
  clients = await emulatorClients();
  [dataset] = await clients.bigquery.createDataset(uniqueDatasetId('writer'));
});

afterAll(async () => {
  await clients.close();
});

const DEAD_LETTER_SCHEMA: TableField[] = [
  { name: 'mapping_id', type: 'STRING', mode: 'NULLABLE' },
  { name: 'event_id', type: 'STRING', mode: 'NULLABLE' },
  { name: '_doc_id', type: 'STRING', mode: 'NULLABLE' },
  { name: 'reason', type: 'STRING', mode: 'NULLABLE' },
  { name: 'document', type: 'STRING', mode: 'NULLABLE' },
  { name: 'failed_at', type: 'TIMESTAMP', mode: 'NULLABLE' },
];

async function createTable(name: string, fields: readonly TableField[]): Promise<Table> {
  // The client's field type is mutable; ours is read-only.
  const apiFields = JSON.parse(JSON.stringify(fields)) as TableFieldSchema[];
  const [table] = await dataset.createTable(name, { schema: { fields: apiFields } });
  return table;
}

function metadata(doc: Record<string, unknown>, n: number): Record<string, unknown> {
  return {
    time_archived: '2024-05-01T00:00:00.000Z',
    operationType: 'insert',
    _cluster_time: '2024-05-01T00:00:00.000Z',
    _seq: `00000000665186800000000${n}`,
    _doc_id: docIdString(doc._id),
    _event_id: `event-${n}`,
  };
}

async function selectAll(
  table: string,
  expressions: Record<string, string>,
): Promise<Record<string, unknown>[]> {
  const list = Object.entries(expressions)
    .map(([alias, expression]) => `${expression} AS ${alias}`)
    .join(', ');
  const [rows] = await clients.bigquery.query({
    query: `SELECT ${list} FROM \`${clients.projectId}.${dataset.id ?? ''}.${table}\` ORDER BY _event_id`,
  });
  return rows as Record<string, unknown>[];
}

describe('insertAll writer against the emulator', () => {
  it('writes every BSON type and reads back the expected BigQuery value', async () => {
    const { columns } = parseColumnSpecs([
      { name: '_id', type: 'STRING', mongo_field: '_id', primary_key: true },
      { name: 's', type: 'STRING' },
      { name: 'oid', type: 'STRING' },
      { name: 'uuid', type: 'STRING' },
      { name: 'code', type: 'STRING' },
      { name: 'i32', type: 'INTEGER' },
      { name: 'i64', type: 'INTEGER' },
      { name: 'bts', type: 'INTEGER' },
      { name: 'dbl', type: 'FLOAT' },
      { name: 'nan', type: 'FLOAT' },
      { name: 'inf', type: 'FLOAT' },
      { name: 'flag', type: 'BOOLEAN' },
      { name: 'happened', type: 'TIMESTAMP' },
      { name: 'day', type: 'DATE' },
      { name: 'local', type: 'DATETIME' },
      { name: 'clock', type: 'TIME' },
      { name: 'price', type: 'NUMERIC' },
      { name: 'bin', type: 'BYTES' },
      { name: 're', type: 'JSON' },
      { name: 'lo', type: 'JSON' },
      { name: 'ref', type: 'JSON' },
      { name: 'nums', type: 'INTEGER', mode: 'REPEATED' },
      {
        name: 'sub',
        type: 'RECORD',
        fields: [
          { name: 'a', type: 'STRING' },
          { name: 'n', type: 'INTEGER' },
        ],
      },
      { name: 'subs', type: 'RECORD', mode: 'REPEATED', fields: [{ name: 'k', type: 'STRING' }] },
      { name: 'missing', type: 'STRING' },
      { name: 'future', type: 'TIMESTAMP' },
    ]);
    const oid = new ObjectId('65a1b2c3d4e5f60718293a4b');
    const future = new Date(0);
    future.setUTCFullYear(10_000);
    const doc = deserialize(
      serialize({
        _id: oid,
        s: 'grüße \u0000 😀',
        oid,
        uuid: new UUID('a1b2c3d4-e5f6-4718-9a0b-1c2d3e4f5a6b'),
        code: new Code('return 1'),
        i32: new Int32(-7),
        i64: Long.fromString('9223372036854775807'),
        bts: new Timestamp({ t: 1, i: 2 }),
        dbl: 0.1,
        nan: Number.NaN,
        inf: Number.POSITIVE_INFINITY,
        flag: true,
        happened: new Date('2024-02-29T12:34:56.789Z'),
        day: new Date('2024-03-01T00:00:00Z'),
        local: new Date('2024-03-01T10:11:12.013Z'),
        clock: '10:11:12.5',
        price: Decimal128.fromString('12.34'),
        bin: new Binary(Buffer.from([0, 1, 2, 255])),
        re: new BSONRegExp('^a', 'ix'),
        lo: new MinKey(),
        ref: new DBRef('users', oid),
        nums: [1, 2, 3],
        sub: { a: 'x', n: 5, extra: true },
        subs: [{ k: 'a' }, { k: 'b' }],
        future,
      }),
      BSON_DECODE_OPTIONS,
    );
    const { row } = compileRowMapper(columns).map(doc);
    await createTable('types', historyTableSchema(columns));
    const writer = new InsertAllWriter(dataset.table('types'));
    expect(await writer.append(outgoing([{ ...row, ...metadata(doc, 1) }]))).toEqual({ rejected: [] });

    const [back] = await selectAll('types', {
      _id: '_id',
      s: 's',
      oid: 'oid',
      uuid: 'uuid',
      code: 'code',
      i32: 'CAST(i32 AS STRING)',
      i64: 'CAST(i64 AS STRING)',
      bts: 'CAST(bts AS STRING)',
      dbl: 'dbl',
      nan: 'IS_NAN(nan)',
      inf: 'IS_INF(inf) AND inf > 0',
      flag: 'flag',
      // Not `at`: bqemulator's translation turns a column named at into an empty result.
      happened: 'UNIX_MILLIS(happened)',
      day: 'CAST(day AS STRING)',
      local: 'CAST(local AS STRING)',
      clock: 'CAST(clock AS STRING)',
      price: 'CAST(price AS FLOAT64)',
      bin: 'TO_BASE64(bin)',
      re: 'TO_JSON_STRING(re)',
      lo: 'TO_JSON_STRING(lo)',
      ref: 'TO_JSON_STRING(ref)',
      nums: 'ARRAY_LENGTH(nums)',
      nums0: 'nums[OFFSET(2)]',
      sub_a: 'sub.a',
      sub_n: 'sub.n',
      subs1: 'subs[OFFSET(1)].k',
      missing: 'missing',
      future: 'future',
      unmapped: 'TO_JSON_STRING(_unmapped)',
      _event_id: '_event_id',
    });
    const json = (text: unknown) => JSON.parse(String(text)) as unknown;
    expect({
      ...back,
      re: json(back?.re),
      lo: json(back?.lo),
      ref: json(back?.ref),
      unmapped: json(back?.unmapped),
      happened: Number(back?.happened),
      nums0: Number(back?.nums0),
      sub_n: Number(back?.sub_n),
      nums: Number(back?.nums),
    }).toEqual({
      _id: '65a1b2c3d4e5f60718293a4b',
      s: 'grüße \u0000 😀',
      oid: '65a1b2c3d4e5f60718293a4b',
      uuid: 'a1b2c3d4-e5f6-4718-9a0b-1c2d3e4f5a6b',
      code: 'return 1',
      i32: '-7',
      i64: '9223372036854775807',
      bts: '4294967298',
      dbl: 0.1,
      nan: true,
      inf: true,
      flag: true,
      happened: Date.parse('2024-02-29T12:34:56.789Z'),
      day: '2024-03-01',
      // BigQuery prints DATETIME with a T; the emulator with a space.
      local: peer === 'bqemulator' ? '2024-03-01 10:11:12.013' : '2024-03-01T10:11:12.013000',
      clock: '10:11:12.5',
      price: 12.34,
      bin: 'AAEC/w==',
      re: { $regularExpression: { pattern: '^a', options: 'ix' } },
      lo: { $minKey: 1 },
      ref: { $ref: 'users', $id: { $oid: '65a1b2c3d4e5f60718293a4b' } },
      nums: 3,
      nums0: 3,
      sub_a: 'x',
      sub_n: 5,
      subs1: 'b',
      missing: null,
      future: null,
      unmapped: { sub: { extra: true }, future: { $date: { $numberLong: '253402300800000' } } },
      _event_id: 'event-1',
    });
  });

  // The client library replaces `{{projectId}}` in every string of a `json` request body with the project id
  // (a convenience for its own URLs and bodies), which would rewrite archived data. Rows go as a JSON text.
  it('archives text holding `{{projectId}}` as it is, and leaves the row objects it was given untouched', async () => {
    await createTable('placeholders', [
      { name: 's', type: 'STRING', mode: 'NULLABLE' },
      { name: 'tags', type: 'STRING', mode: 'REPEATED' },
      { name: '_event_id', type: 'STRING', mode: 'NULLABLE' },
    ]);
    const writer = new InsertAllWriter(dataset.table('placeholders'));
    const row = { s: 'a {{projectId}} b', tags: ['{{projectId}}'], _event_id: 'p{{projectId}}' };
    const given = structuredClone(row);
    const encoded = encodedBy(writer, [row]);
    expect(encoded[0]?.encoded.size).toBe(Buffer.byteLength(JSON.stringify(row), 'utf8'));
    expect(await writer.append(encoded)).toEqual({ rejected: [] });
    expect(row).toEqual(given);
    expect(await selectAll('placeholders', { s: 's', tags: 'tags', id: '_event_id' })).toEqual([
      { s: 'a {{projectId}} b', tags: ['{{projectId}}'], id: 'p{{projectId}}' },
    ]);
  });

  it('issue 10 item 6: -0.0 keeps its sign in FLOAT columns (scalar, repeated, nested) as in _unmapped', async () => {
    const { columns } = parseColumnSpecs([
      { name: '_id', type: 'STRING', mongo_field: '_id', primary_key: true },
      { name: 'neg', type: 'FLOAT' },
      { name: 'pos', type: 'FLOAT' },
      { name: 'negs', type: 'FLOAT', mode: 'REPEATED' },
      { name: 'sub', type: 'RECORD', fields: [{ name: 'z', type: 'FLOAT' }] },
      { name: 'whole', type: 'INTEGER' },
    ]);
    // `extra` has no column: _unmapped keeps it as {"$numberDouble":"-0.0"}.
    const doc = deserialize(
      serialize({ _id: 'z', neg: -0, pos: 0, negs: [-0, 1.5], sub: { z: -0 }, whole: -0, extra: -0 }),
      BSON_DECODE_OPTIONS,
    );
    const { row } = compileRowMapper(columns).map(doc);
    await createTable('negative_zero', historyTableSchema(columns));
    const writer = new InsertAllWriter(dataset.table('negative_zero'));
    expect(await writer.append(encodedBy(writer, [{ ...row, ...metadata(doc, 1) }]))).toEqual({
      rejected: [],
    });

    // The sign of a zero shows only through division: 1 / -0 is -Infinity.
    const [back] = await selectAll('negative_zero', {
      neg: 'IEEE_DIVIDE(1, neg) < 0',
      pos: 'IEEE_DIVIDE(1, pos) < 0',
      negs0: 'IEEE_DIVIDE(1, negs[OFFSET(0)]) < 0',
      negs1: 'negs[OFFSET(1)]',
      sub: 'IEEE_DIVIDE(1, sub.z) < 0',
      whole: 'whole',
      unmapped: 'TO_JSON_STRING(_unmapped)',
      _event_id: '_event_id',
    });
    expect({ ...back, unmapped: JSON.parse(String(back?.unmapped)) as unknown }).toEqual({
      neg: true,
      pos: false,
      negs0: true,
      negs1: 1.5,
      sub: true,
      // An INTEGER has no negative zero: -0 is the integer 0.
      whole: 0,
      unmapped: { extra: { $numberDouble: '-0.0' } },
      _event_id: 'event-1',
    });
  });

  it('BIGNUMERIC: BigQuery stores 76 digits; bqemulator cannot create the column (DuckDB decimals stop at 38)', async () => {
    const fields: TableField[] = [{ name: 'big', type: 'BIGNUMERIC', mode: 'NULLABLE' }];
    if (peer === 'bqemulator') {
      // Gap (bqemulator): a BIGNUMERIC column fails table creation with "DECIMAL type width must be
      // between 1 and 38"; inferred schemas use BIGNUMERIC for Decimal128, so such tables need real BigQuery
      // or goccy.
      await expect(createTable('bignumeric', fields)).rejects.toThrow();
      return;
    }
    await createTable('bignumeric', fields);
    const writer = new InsertAllWriter(dataset.table('bignumeric'));
    await writer.append(outgoing([{ big: '0.' + '1'.repeat(38), _event_id: 'b1' }]));
    const [rows] = await clients.bigquery.query({
      query: `SELECT CAST(big AS STRING) AS big FROM \`${clients.projectId}.${dataset.id ?? ''}.bignumeric\``,
    });
    expect(rows).toEqual([{ big: '0.' + '1'.repeat(38) }]);
  });

  it('lands a batch with one poison row and dead-letters that row with its reason', async () => {
    const { columns } = parseColumnSpecs([{ name: 'n', type: 'INTEGER' }]);
    await createTable('poison', historyTableSchema(columns));
    await createTable('poison_errors', DEAD_LETTER_SCHEMA);
    const sink = new BigQuerySink({
      mappingId: 'bidding.ad_cpta',
      writer: new InsertAllWriter(dataset.table('poison')),
      deadLetterWriter: new InsertAllWriter(dataset.table('poison_errors'), 'event_id'),
      backoff: { initialMs: 10, maxMs: 50, multiplier: 2, maxAttempts: 3 },
    });
    const docs = [1, 2, 3, 4].map((i) => ({ _id: i, n: i }));
    const records = docs.map((doc, i) =>
      historyRecord({
        // Row 3 claims a value BigQuery cannot store in an INTEGER column (the mapper never produces it).
        row: { n: i === 2 ? 'not a number' : doc.n, _unmapped: null, ...metadata(doc, i) },
        document: () => relaxedEjsonText(doc),
      }),
    );
    const result = await sink.write(records);
    expect(result.written).toBe(3);
    expect(result.deadLettered).toBe(1);
    expect(result.reasons[0]).toBeTruthy();
    const landed = await selectAll('poison', { n: 'n', _event_id: '_event_id' });
    expect(landed.map((r) => Number(r.n))).toEqual([1, 2, 4]);
    const [dead] = await clients.bigquery.query({
      query: `SELECT mapping_id, event_id, _doc_id, reason, document FROM \`${clients.projectId}.${dataset.id ?? ''}.poison_errors\``,
    });
    expect(dead).toEqual([
      {
        mapping_id: 'bidding.ad_cpta',
        event_id: 'event-2',
        _doc_id: '{"$numberInt":"3"}',
        reason: result.reasons[0],
        document: '{"_id":3,"n":3}',
      },
    ]);
  });
});
