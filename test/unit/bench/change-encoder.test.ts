import { outgoing } from '../../support/outgoing-rows.js';
import { readFileSync } from 'node:fs';
import { type Table } from '@google-cloud/bigquery';
import { deserialize, EJSON, ObjectId, serialize, Timestamp } from 'bson';
import { afterEach, describe, expect, it } from 'vitest';
import { InsertAllWriter } from '../../../src/bigquery/insert-all-writer.js';
import { compileRowEncoder } from '../../../src/bigquery/proto-encoder.js';
import { WRITER_KINDS, type WriterKind } from '../../../src/core/settings.js';
import {
  encodedRow,
  insertAllRequestBody,
  ParallelChangeEncoder,
  type EncodedChanges,
} from '../../../bench/parallel/change-encoder.js';
import { changeRecord } from '../../../src/core/history-rows.js';
import { rowBytes } from '../../../src/core/stream-loop.js';
import { ERROR_CODES } from '../../../src/errors.js';
import { MalformedChangeEventError, normalizeChangeEvent } from '../../../src/mongodb/change-event.js';
import { parseColumnSpecs } from '../../../src/schema/column-spec.js';
import { historyTableSchema } from '../../../src/schema/table-schema.js';
import { BSON_DECODE_OPTIONS } from '../../../src/base/bson-kind.js';
import { compileRowMapper } from '../../../src/transform/row-mapper.js';

const COLUMNS = parseColumnSpecs([
  { name: '_id', type: 'STRING', mongo_field: '_id', primary_key: true },
  { name: 'tracking_code', type: 'INTEGER' },
  { name: 'spend', type: 'FLOAT' },
  { name: 'state', type: 'STRING' },
]).columns;
const NOW = new Date('2026-01-02T03:04:05.678Z');
/** Starting a worker from sources compiles its imports first: seconds on a busy machine. */
const WORKER_TEST = { timeout: 60_000 };

/** Every recorded MongoDB 7.0 shape (insert, update, lookup miss, replace, delete, transaction, drop...), as BSON. */
function recordedEvents(): Uint8Array[] {
  const text = readFileSync(
    new URL('../../fixtures/change-events/real-mongodb-7.json', import.meta.url),
    'utf8',
  );
  const fixtures = EJSON.parse(text, { relaxed: false }) as Record<string, unknown>;
  return Object.entries(fixtures)
    .filter(([key]) => key !== '_comment')
    .flatMap(([, value]) => (Array.isArray(value) ? value : [value]) as Record<string, unknown>[])
    .map((event) => serialize(event));
}

/** Many inserts, enough for several tasks per thread. */
function manyEvents(count: number): Uint8Array[] {
  return Array.from({ length: count }, (_, n) => {
    const id = new ObjectId();
    const data = `82${(1_705_095_875 + n).toString(16).toUpperCase()}000000012B022C0100296E5A1004${id.toHexString()}`;
    return serialize({
      _id: { _data: data },
      operationType: n % 7 === 3 ? 'delete' : 'insert',
      clusterTime: new Timestamp({ t: 1_705_095_875 + n, i: 1 }),
      ...(n % 7 !== 3 && { fullDocument: { _id: id, tracking_code: n, spend: n / 4, extra: { n } } }),
      documentKey: { _id: id },
    });
  });
}

/** An EncodedChanges as plain comparable data (buffers as hex, whatever class they arrive as). */
function plain(encoded: EncodedChanges) {
  return {
    events: encoded.events,
    rows: Buffer.from(encoded.rows).toString('hex'),
    rowEnds: [...encoded.rowEnds],
    rowEvents: [...encoded.rowEvents],
    rowSizes: [...encoded.rowSizes],
    rejected: encoded.rejected,
  };
}

const encoders: ParallelChangeEncoder[] = [];
function encoder(format: WriterKind, threads: number, more: { taskEvents?: number } = {}) {
  const created = new ParallelChangeEncoder({ columns: COLUMNS, format }, { threads, ...more });
  encoders.push(created);
  return created;
}

afterEach(async () => {
  await Promise.all(encoders.splice(0).map((e) => e.close()));
});

/** The history rows the stream loop would build for these events. */
function daemonRows(events: readonly Uint8Array[]) {
  const mapper = compileRowMapper(COLUMNS);
  return events.flatMap((bytes) => {
    const event = normalizeChangeEvent(deserialize(bytes, BSON_DECODE_OPTIONS));
    return event.kind === 'upsert' || event.kind === 'delete' || event.kind === 'collection-gone'
      ? [changeRecord(mapper, event, NOW).row()]
      : [];
  });
}

describe('ParallelChangeEncoder', () => {
  it('summarises every event in order and gives a row to exactly those the stream loop writes', async () => {
    const events = recordedEvents();
    const encoded = await encoder('insert-all', 0).encode(events, NOW);
    const normalized = events.map((bytes) => normalizeChangeEvent(deserialize(bytes, BSON_DECODE_OPTIONS)));
    expect(encoded.events).toEqual(
      normalized.map((e) => ({ kind: e.kind, token: e.token, clusterTime: e.clusterTime })),
    );
    const written = normalized.flatMap((e, i) => (['lookup-missed', 'ignored'].includes(e.kind) ? [] : [i]));
    expect([...encoded.rowEvents]).toEqual(written);
    expect(encoded.events.map((e) => e.kind)).toContain('lookup-missed');
    expect(encoded.events.map((e) => e.kind)).toContain('ignored');
  });

  it('insert-all: the request body is byte for byte what InsertAllWriter sends, and sizes are rowBytes', async () => {
    const events = recordedEvents();
    const encoded = await encoder('insert-all', 0).encode(events, NOW);
    const rows = daemonRows(events);
    let sent: unknown;
    const table = {
      id: 'history',
      request: (options: { body: unknown }) => {
        sent = options.body;
        return Promise.resolve([{}]);
      },
    };
    await new InsertAllWriter(table as unknown as Table).append(outgoing(rows));
    const entries = rows.map((_, k) => encodedRow(encoded, k));
    expect(insertAllRequestBody(entries).toString('utf8')).toBe(sent);
    expect([...encoded.rowSizes]).toEqual(rows.map((row) => rowBytes(row)));
  });

  it('storage-write: each row is the bytes of the production protobuf encoder', async () => {
    const events = recordedEvents();
    const encoded = await encoder('storage-write', 0).encode(events, NOW);
    const expected = compileRowEncoder(historyTableSchema(COLUMNS)).encodeRows(daemonRows(events));
    const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString('hex');
    expect(expected.rejected).toEqual([]);
    expect(encoded.rowEnds.length).toBe(expected.serialized.length);
    expect(expected.serialized.map((_, k) => hex(encodedRow(encoded, k)))).toEqual(
      expected.serialized.map(hex),
    );
    expect([...encoded.rowSizes]).toEqual(expected.serialized.map((row) => row.length));
  });

  it('storage-write: a row the encoder refuses is listed with its reason and has no bytes', async () => {
    // The table says INTEGER where the mapper writes strings: every row with a state is refused.
    const schema = historyTableSchema(COLUMNS).map((f) =>
      f.name === 'state' ? { ...f, type: 'INTEGER' as const } : f,
    );
    const refusing = new ParallelChangeEncoder(
      { columns: COLUMNS, format: 'storage-write', schema },
      { threads: 0 },
    );
    encoders.push(refusing);
    const events = recordedEvents();
    const encoded = await refusing.encode(events, NOW);
    const rows = daemonRows(events);
    const refused = rows.flatMap((row, k) => (typeof row.state === 'string' ? [k] : []));
    expect(refused.length).toBeGreaterThan(0);
    expect(encoded.rejected.map((r) => r.row)).toEqual(refused);
    expect(encoded.rejected[0]?.reason).toMatch(/column state: expected an int64/);
    for (const k of refused) expect(encodedRow(encoded, k).length).toBe(0);
  });

  for (const format of WRITER_KINDS) {
    it(
      `${format}: worker threads give the same bytes as this thread, task for task, in order`,
      WORKER_TEST,
      async () => {
        const events = [...recordedEvents(), ...manyEvents(1_200)];
        const pulls = [events.slice(0, 500), events.slice(500, 1_000), events.slice(1_000)];
        const collect = async (threads: number) => {
          const out = [];
          const running = encoder(format, threads, { taskEvents: 100 });
          for await (const encoded of running.encodeAll(pulls, () => NOW)) out.push(plain(encoded));
          return out;
        };
        const here = await collect(0);
        const threaded = await collect(2);
        expect(here.length).toBe(13);
        expect(threaded).toEqual(here);
      },
    );
  }

  // Rows under 4 KB copied with Buffer.concat land in Node's shared pool, which postMessage cannot transfer
  // (Node 20 copies the whole pool instead, later versions refuse): results must own their buffers.
  it('small batches encoded in a worker come back intact, one after another', WORKER_TEST, async () => {
    const events = manyEvents(40);
    const one = encoder('storage-write', 1, { taskEvents: 2 });
    const here = encoder('storage-write', 0, { taskEvents: 2 });
    const threaded = [];
    for await (const encoded of one.encodeAll([events], () => NOW)) threaded.push(plain(encoded));
    const reference = [];
    for await (const encoded of here.encodeAll([events], () => NOW)) reference.push(plain(encoded));
    expect(threaded).toHaveLength(20);
    expect(threaded).toEqual(reference);
  });

  it('a malformed event fails its batch, on this thread and in a worker alike', WORKER_TEST, async () => {
    const malformed = serialize({ operationType: 'insert', clusterTime: 1, fullDocument: { _id: 1 } });
    const events = [...manyEvents(3), malformed];
    await expect(encoder('insert-all', 0).encode(events, NOW)).rejects.toThrow(MalformedChangeEventError);
    await expect(encoder('insert-all', 1).encode(events, NOW)).rejects.toMatchObject({
      name: 'WorkerTaskError',
      code: ERROR_CODES.source,
      message: expect.stringContaining('without a resume token') as unknown,
    });
  });
});
