// Request-encoding benchmark: rows/s of the floor (BSON decode + JSON.stringify of the decoded document)
// versus decode + map + metadata + the wire encoding of each writer, in this process, on one core:
// - insert-all: the JSON body of a tabledata.insertAll request (500 rows, insertId = _event_id);
// - storage-write: our compiled protobuf encoder (src/bigquery/proto-encoder.ts), as the writer calls it;
// - storage-write-library: the client library's way (protobufjs Type.fromObject + encode per row, the
//   TIMESTAMP columns turned into microseconds first, as its JSONWriter needs), for comparison.
import { deserialize } from 'bson';
import protobuf from 'protobufjs';
import { adapt, protos } from '@google-cloud/bigquery-storage';
import { compileRowEncoder } from '../src/bigquery/proto-encoder.js';
import { inferColumns } from '../src/schema/infer.js';
import { historyTableSchema } from '../src/schema/table-schema.js';
import { BSON_DECODE_OPTIONS } from '../src/base/bson-kind.js';
import { compileRowMapper } from '../src/transform/row-mapper.js';
import { docIdString } from '../src/transform/values.js';
import { compare, median, throughput } from './measure.js';
import { shapeDocuments } from './shapes.js';

const DOCUMENTS = 2_000;
const BATCH_ROWS = 500;
const SHAPE = 'nested-1KB';
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const ROUND_MS = Number(process.env.BENCH_ROUND_MS ?? 1_000);

const buffers = shapeDocuments(SHAPE, DOCUMENTS);
const columns = await inferColumns(buffers.slice(0, 200).map((b) => deserialize(b, BSON_DECODE_OPTIONS)));
const mapper = compileRowMapper(columns);
const schema = historyTableSchema(columns);
const encoder = compileRowEncoder(schema);

/** What the pipeline knows about each event besides the document: cluster time and resume token. */
interface Event {
  readonly bson: Uint8Array;
  readonly clusterTime: string;
  readonly seq: string;
  readonly eventId: string;
}
const events: Event[] = buffers.map((bson, i) => {
  const seconds = 1_764_000_000 + Math.floor(i / 3);
  const token = `8269${seconds.toString(16).toUpperCase()}00000${i % 3}2B022C0100296E5A1004${i.toString(16).padStart(8, '0')}`;
  return {
    bson,
    clusterTime: new Date(seconds * 1000).toISOString(),
    seq: `${seconds.toString(16).padStart(8, '0')}${(i % 3).toString(16).padStart(8, '0')}:${token}`,
    eventId: token,
  };
});
const batches: Event[][] = [];
for (let i = 0; i < events.length; i += BATCH_ROWS) batches.push(events.slice(i, i + BATCH_ROWS));

function historyRows(batch: readonly Event[]): Record<string, unknown>[] {
  const archived = new Date().toISOString();
  return batch.map((event) => {
    const document = deserialize(event.bson, BSON_DECODE_OPTIONS);
    const { row } = mapper.map(document);
    row.time_archived = archived;
    row.operationType = 'insert';
    row._cluster_time = event.clusterTime;
    row._seq = event.seq;
    row._doc_id = docIdString(document._id);
    row._event_id = event.eventId;
    return row;
  });
}

function floor(batch: readonly Event[]): number {
  let length = 0;
  for (const event of batch) length += JSON.stringify(deserialize(event.bson)).length;
  return length;
}

// The library's message type, built the way its JSONWriter builds it.
const libraryType = (
  protobuf.Type as unknown as { fromDescriptor(d: protos.google.protobuf.IDescriptorProto): protobuf.Type }
).fromDescriptor(adapt.normalizeDescriptor(new protos.google.protobuf.DescriptorProto(encoder.descriptor)));
// Only top-level TIMESTAMP columns in this shape; the library wants int64 microseconds for them.
const timestampColumns = schema.filter((f) => f.type === 'TIMESTAMP').map((f) => f.name);

function libraryEncode(rows: readonly Record<string, unknown>[]): Uint8Array[] {
  return rows.map((row) => {
    // A shallow copy (JSONWriter deep-copies every row before converting it).
    const copy = { ...row };
    for (const name of timestampColumns) {
      const value = copy[name];
      if (typeof value === 'string') copy[name] = Date.parse(value) * 1000;
    }
    return libraryType.encode(libraryType.fromObject(copy)).finish();
  });
}

type Rows = readonly Record<string, unknown>[];
/** Each writer's encoding of one request; returns its size in bytes. */
const WRITERS = {
  'insert-all': (rows: Rows) =>
    JSON.stringify({
      kind: 'bigquery#tableDataInsertAllRequest',
      skipInvalidRows: true,
      rows: rows.map((row) => ({ insertId: row._event_id, json: row })),
    }).length,
  'storage-write': (rows: Rows) => encoder.encodeRows(rows).bytes,
  'storage-write-library': (rows: Rows) => libraryEncode(rows).reduce((n, bytes) => n + bytes.length, 0),
} as const;
type WriterName = keyof typeof WRITERS;
const WRITER_NAMES = Object.keys(WRITERS) as WriterName[];

// Guard: the two protobuf encodings must agree before their speed means anything.
const [firstBatch = []] = batches;
const firstRows = historyRows(firstBatch);
const ours = encoder.encodeRows(firstRows).serialized.map((b) => Buffer.from(b).toString('hex'));
const theirs = libraryEncode(firstRows).map((b) => Buffer.from(b).toString('hex'));
if (ours.length !== theirs.length || ours.some((hex, i) => hex !== theirs[i])) {
  console.error('storage-write encoding differs from the library encoding; not benchmarking');
  process.exit(1);
}

const avgBson = Math.round(buffers.reduce((n, b) => n + b.length, 0) / buffers.length);
console.log(
  `${SHAPE}: ${DOCUMENTS} documents (avg ${avgBson} B BSON), ${schema.length} top-level columns, ` +
    `batches of ${BATCH_ROWS} rows; ${ROUNDS} rounds of ${ROUND_MS} ms each`,
);
const lines: string[] = [];
for (const writer of WRITER_NAMES) {
  const encode = WRITERS[writer];
  const result = compare(batches, floor, (batch) => encode(historyRows(batch)), {
    rounds: ROUNDS,
    ms: ROUND_MS,
  });
  const floorRows = result.floor * BATCH_ROWS;
  const valueRows = result.value * BATCH_ROWS;
  const ratio = valueRows / floorRows;
  console.log(
    `${writer.padEnd(22)} floor ${Math.round(floorRows).toLocaleString('en')} rows/s  ` +
      `decode+map+encode ${Math.round(valueRows).toLocaleString('en')} rows/s  ratio ${ratio.toFixed(2)}  ` +
      `${Math.round(encode(firstRows) / firstRows.length)} B/row on the wire`,
  );
  lines.push(
    JSON.stringify({
      bench: 'encode',
      writer,
      floor_per_s: Math.round(floorRows),
      value_per_s: Math.round(valueRows),
      ratio: Number(ratio.toFixed(3)),
    }),
  );
}
// The encoding alone, on rows built once (no decode, no mapping): what each wire format costs by itself.
const builtBatches = batches.map((batch) => historyRows(batch));
for (const writer of WRITER_NAMES) {
  const encode = WRITERS[writer];
  const rates = Array.from({ length: ROUNDS }, () => throughput(builtBatches, encode, ROUND_MS) * BATCH_ROWS);
  console.log(`${writer.padEnd(22)} encoding alone ${Math.round(median(rates)).toLocaleString('en')} rows/s`);
}
for (const line of lines) console.log(line);
