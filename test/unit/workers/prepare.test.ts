import { readFileSync } from 'node:fs';
import { BigQuery } from '@google-cloud/bigquery';
import { EJSON, ObjectId, serialize, Timestamp } from 'bson';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InsertAllWriter } from '../../../src/bigquery/insert-all-writer.js';
import { compileRowEncoder } from '../../../src/bigquery/proto-encoder.js';
import {
  backfillRecord,
  changeRecord,
  type EncodedRow,
  type HistoryRecord,
  type HistoryRow,
} from '../../../src/core/history-rows.js';
import { operationTypeOf, type ChangeEvent, type ClusterTime } from '../../../src/core/model.js';
import { type RawChange, type SourceDocument } from '../../../src/core/ports.js';
import {
  type EncodingSpec,
  type MappingSpec,
  type PreparedChange,
  type RowEncoding,
} from '../../../src/core/prepared.js';
import { ArchiverError, BigQueryError, ERROR_CODES } from '../../../src/errors.js';
import { normalizeChangeEvent, reassembleSplitEvent } from '../../../src/mongodb/change-event.js';
import { decodeDocument } from '../../../src/mongodb/raw-documents.js';
import { planEvolution } from '../../../src/schema/evolve.js';
import { inferColumns } from '../../../src/schema/infer.js';
import { historyTableSchema } from '../../../src/schema/table-schema.js';
import { type ColumnSpec } from '../../../src/schema/types.js';
import { compileRowMapper } from '../../../src/transform/row-mapper.js';
import { docIdString } from '../../../src/transform/values.js';
import {
  EncoderPool,
  prepareChanges,
  prepareDocuments,
  type PrepareContext,
  type PrepareState,
} from '../../../src/workers/prepare.js';
import { recordedChangeEvents } from '../../../bench/change-events.js';
import { arbDocument } from '../../support/bson-arbitraries.js';
import { bsonWithBytes } from '../../support/fakes/raw-bson.js';

const NOW = new Date('2026-01-02T03:04:05.678Z');
const SNAPSHOT: ClusterTime = { t: 1_764_000_000, i: 7 };
const FORMATS = ['storage-write', 'insert-all'] as const;
type Format = (typeof FORMATS)[number];
/** Starting a worker from sources compiles its imports first: seconds on a busy machine. */
const WORKER_TEST = { timeout: 120_000 };
const INVALID = new Uint8Array([0x61, 0xff, 0x62, 0xc3, 0x28]);

/** A table handle for InsertAllWriter's `encode`, which never sends anything. */
const TABLE = new BigQuery({ projectId: 'p', apiEndpoint: 'http://127.0.0.1:9' }).dataset('ds').table('t');

/** The test's own EncodedRow: what the prepare handed to `wrap`, and which encoding it was. */
class WrappedRow implements EncodedRow {
  constructor(
    readonly size: number,
    readonly bytes: Uint8Array | undefined,
    readonly spec: EncodingSpec,
  ) {}
}

function encodingFor(spec: EncodingSpec): RowEncoding {
  return { spec, wrap: (bytes, size) => new WrappedRow(size, bytes, spec) };
}

function stateFor(
  columns: readonly ColumnSpec[],
  format: Format,
  planned?: readonly ColumnSpec[],
): PrepareState {
  const mapping: MappingSpec = { columns, captureUnmapped: true, ...(planned && { planned }) };
  const spec: EncodingSpec =
    format === 'storage-write'
      ? { format, schema: historyTableSchema(columns) }
      : { format, idColumn: '_event_id' };
  return {
    mapping,
    mapper: compileRowMapper(columns, { captureUnmapped: true }),
    encoding: encodingFor(spec),
  };
}

function fixed(state: PrepareState): PrepareContext {
  return { current: () => state };
}

/** What the writers make of a row: StorageWriteWriter's protobuf bytes (none for a misfit) or insertAll's entry. */
function writerEncoding(spec: EncodingSpec, row: HistoryRow): { bytes: Buffer | undefined; size: number } {
  if (spec.format === 'insert-all') {
    const encoded = new InsertAllWriter(TABLE, spec.idColumn).encode(row);
    return { bytes: encoded.entry, size: encoded.size };
  }
  try {
    const bytes = compileRowEncoder(spec.schema).encode(row);
    return { bytes: Buffer.from(bytes), size: bytes.length };
  } catch (error) {
    if (!(error instanceof BigQueryError)) throw error;
    return { bytes: undefined, size: Buffer.byteLength(JSON.stringify(row), 'utf8') };
  }
}

function expectEncodedAs(record: HistoryRecord, spec: EncodingSpec, row: HistoryRow): void {
  const encoded = record.encoded;
  expect(encoded).toBeInstanceOf(WrappedRow);
  const wrapped = encoded as WrappedRow;
  expect(wrapped.spec).toBe(spec);
  const expected = writerEncoding(spec, row);
  expect(wrapped.size).toBe(expected.size);
  expect(wrapped.bytes && Buffer.from(wrapped.bytes)).toEqual(expected.bytes);
}

/** The change as the reading thread makes it today: fragments decoded, put together, normalised. */
function referenceEvent(raw: RawChange): ChangeEvent {
  const fragments = raw.map((fragment) => decodeDocument(fragment));
  const event = normalizeChangeEvent(
    fragments.length === 1 ? (fragments[0] ?? {}) : reassembleSplitEvent(fragments),
  );
  return fragments.length > 1 ? { ...event, split: true } : event;
}

/** Asserts that `prepared` is what normalizeChangeEvent and changeRecord make of `raw` for `state`. */
function expectPreparedAs(prepared: PreparedChange | undefined, raw: RawChange, state: PrepareState): void {
  const event = referenceEvent(raw);
  expect(prepared).toBeDefined();
  if (!prepared) return;
  expect({
    kind: prepared.kind,
    operationType: prepared.operationType,
    token: prepared.token,
    clusterTime: prepared.clusterTime,
    split: prepared.split ?? false,
  }).toEqual({
    kind: event.kind,
    operationType: operationTypeOf(event),
    token: event.token,
    clusterTime: event.clusterTime,
    split: event.split ?? false,
  });
  if (event.kind === 'lookup-missed' || event.kind === 'ignored') {
    expect(prepared.record).toBeUndefined();
    return;
  }
  const reference = changeRecord(state.mapper, event, NOW);
  const record = prepared.record;
  expect(record).toBeDefined();
  if (!record) return;
  expect(record.eventId).toBe(reference.eventId);
  expect(record.docId).toBe(reference.docId);
  const row = reference.row();
  expect(record.row()).toEqual(row);
  expect(record.document()).toBe(reference.document());
  expectEncodedAs(record, state.encoding.spec, row);
}

/** Every recorded MongoDB 7.0 shape (insert, update, lookup miss, replace, delete, transaction, drop...). */
function fixtureEvents(): Uint8Array[] {
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

let second = 1_765_000_000;
function token(): { t: number; data: string } {
  const t = second++;
  return {
    t,
    data: `82${t.toString(16).toUpperCase()}000000012B022C0100296E5A1004${new ObjectId().toHexString()}`,
  };
}

/** An insert event's BSON for `document`. */
function insertEvent(document: Record<string, unknown>): Uint8Array {
  const { t, data } = token();
  return serialize({
    _id: { _data: data },
    operationType: 'insert',
    clusterTime: new Timestamp({ t, i: 1 }),
    fullDocument: document,
    documentKey: { _id: document._id },
  });
}

function batchOf(...changes: RawChange[]) {
  return { changes, position: undefined };
}

function chunks<T>(items: readonly T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

/** The columns the recorded events' documents hold (their `_id` included). */
async function recordedColumns(events: readonly Uint8Array[]): Promise<ColumnSpec[]> {
  const documents = events
    .map((raw) => referenceEvent([raw]))
    .flatMap((event) => (event.kind === 'upsert' ? [event.document] : []));
  return inferColumns(documents);
}

let pool: EncoderPool;
beforeAll(() => {
  pool = new EncoderPool({ threads: 2 });
});
afterAll(async () => {
  await pool.close();
});

const WHERE = [
  ['on a 2-thread pool', () => pool],
  ['on this thread', () => undefined],
] as const;

describe.each(WHERE)('prepareChanges %s (issue 11, build 6)', WORKER_TEST, (_where, poolOf) => {
  it.each(FORMATS)(
    '%s: recorded events give the kind, position and split of normalizeChangeEvent, and the ids, row, text and encoding of changeRecord',
    async (format) => {
      const events = [...fixtureEvents(), ...recordedChangeEvents(240)];
      const state = stateFor(await recordedColumns(events), format);
      const prepare = prepareChanges(poolOf(), fixed(state));
      const batches = chunks(
        events.map((raw): RawChange => [raw]),
        50,
      );
      // All at once: with read-ahead, calls overlap; each resolves with its own batch, in order.
      const prepared = await Promise.all(
        batches.map((changes) => prepare(batchOf(...changes), NOW, new AbortController().signal)),
      );
      prepared.forEach((batch, b) => {
        const raws = batches[b] ?? [];
        expect(batch.changes).toHaveLength(raws.length);
        raws.forEach((raw, k) => {
          expectPreparedAs(batch.changes[k], raw, state);
        });
      });
      const kinds = new Set(prepared.flatMap((batch) => batch.changes.map((c) => c.kind)));
      expect([...kinds].sort()).toEqual(['collection-gone', 'delete', 'ignored', 'lookup-missed', 'upsert']);
    },
  );

  it.each(FORMATS)(
    '%s: strings that are not valid UTF-8 keep their bytes in the row and the dead-letter text',
    async (format) => {
      const id = new ObjectId();
      const raw = bsonWithBytes(
        {
          _id: { _data: token().data },
          operationType: 'insert',
          clusterTime: new Timestamp({ t: second, i: 1 }),
          fullDocument: { _id: id, name: '#####', nested: { s: '#####', ok: 'café' } },
          documentKey: { _id: id },
        },
        '#####',
        INVALID,
      );
      const columns: ColumnSpec[] = [
        { name: '_id', type: 'STRING', mongo_field: '_id' },
        { name: 'name', type: 'STRING' },
      ];
      const state = stateFor(columns, format);
      const batch = await prepareChanges(poolOf(), fixed(state))(
        batchOf([raw]),
        NOW,
        new AbortController().signal,
      );
      expectPreparedAs(batch.changes[0], [raw], state);
      const text = batch.changes[0]?.record?.document() ?? '';
      expect(JSON.parse(text)).toMatchObject({
        name: { $invalidUtf8: Buffer.from(INVALID).toString('base64') },
        nested: { s: { $invalidUtf8: Buffer.from(INVALID).toString('base64') }, ok: 'café' },
      });
    },
  );

  it.each(FORMATS)(
    '%s: the fragments of a split event become one change, marked split, with the last token',
    async (format) => {
      const id = new ObjectId();
      const first = token();
      const last = token();
      const fragments = [
        serialize({
          _id: { _data: first.data },
          splitEvent: { fragment: 1, of: 2 },
          operationType: 'replace',
          clusterTime: new Timestamp({ t: first.t, i: 1 }),
          documentKey: { _id: id },
        }),
        serialize({
          _id: { _data: last.data },
          splitEvent: { fragment: 2, of: 2 },
          fullDocument: { _id: id, big: 'x'.repeat(1_000), n: 3 },
        }),
      ];
      const whole = insertEvent({ _id: new ObjectId(), n: 1 });
      const columns: ColumnSpec[] = [
        { name: '_id', type: 'STRING', mongo_field: '_id' },
        { name: 'n', type: 'INTEGER' },
      ];
      const state = stateFor(columns, format);
      const batch = await prepareChanges(poolOf(), fixed(state))(
        batchOf([whole], fragments),
        NOW,
        new AbortController().signal,
      );
      expect(batch.changes).toHaveLength(2);
      expect(batch.changes[1]).toMatchObject({ kind: 'upsert', split: true, token: last.data });
      expect(batch.changes[0]?.split).toBe(false);
      expectPreparedAs(batch.changes[0], [whole], state);
      expectPreparedAs(batch.changes[1], fragments, state);
    },
  );

  it('an idle pull resolves with its position and no changes, after the batch before it', async () => {
    const state = stateFor([{ name: '_id', type: 'STRING', mongo_field: '_id' }], 'insert-all');
    const prepare = prepareChanges(poolOf(), fixed(state));
    const signal = new AbortController().signal;
    const order: string[] = [];
    const position = { token: token().data, clusterTime: { t: second, i: 1 } };
    const busy = prepare(batchOf([insertEvent({ _id: 1 })]), NOW, signal).then(() => order.push('busy'));
    const idle = prepare({ changes: [], position }, NOW, signal).then((batch) => {
      order.push('idle');
      return batch;
    });
    await busy;
    expect(await idle).toEqual({ changes: [], position });
    expect(order).toEqual(['busy', 'idle']);
  });

  it('a change the worker cannot read rejects its own call only, as the error it is (code, disposition)', async () => {
    const state = stateFor([{ name: '_id', type: 'STRING', mongo_field: '_id' }], 'insert-all');
    const prepare = prepareChanges(poolOf(), fixed(state));
    const signal = new AbortController().signal;
    const before = prepare(batchOf([insertEvent({ _id: 1 })]), NOW, signal);
    // No resume token: MalformedChangeEventError in the worker.
    const malformed = serialize({ operationType: 'insert', clusterTime: new Timestamp({ t: second, i: 1 }) });
    const failing = prepare(batchOf([insertEvent({ _id: 2 })], [malformed]), NOW, signal);
    const after = prepare(batchOf([insertEvent({ _id: 3 })]), NOW, signal);
    await expect(failing).rejects.toBeInstanceOf(ArchiverError);
    await expect(failing).rejects.toMatchObject({
      code: ERROR_CODES.source,
      disposition: 'retryable',
      message: expect.stringContaining('resume token') as unknown,
    });
    expect((await before).changes[0]?.record?.docId).toBe(docIdString(1));
    expect((await after).changes[0]?.record?.docId).toBe(docIdString(3));
  });
});

/**
 * A schema coordinator reduced to what prepare needs: evolves the columns for documents by planEvolution
 * (as SchemaEvolution does, without a table), after `gate` opens.
 */
class EvolvingContext implements PrepareContext {
  readonly evolved: (readonly SourceDocument[])[] = [];
  gate: Promise<void> = Promise.resolve();
  #state: PrepareState;
  readonly #format: Format;

  constructor(columns: readonly ColumnSpec[], format: Format) {
    this.#format = format;
    this.#state = stateFor(columns, format, columns);
  }

  current(): PrepareState {
    return this.#state;
  }

  async evolve(documents: readonly SourceDocument[], signal: AbortSignal): Promise<void> {
    this.evolved.push(documents);
    await this.gate;
    signal.throwIfAborted();
    let planned = this.#state.mapping.planned ?? this.#state.mapping.columns;
    for (const document of documents) planned = planEvolution(planned, document).columns;
    if (planned !== this.#state.mapping.columns) this.#state = stateFor(planned, this.#format, planned);
  }
}

const BASE_COLUMNS: readonly ColumnSpec[] = [
  { name: '_id', type: 'INTEGER', mongo_field: '_id' },
  { name: 'n', type: 'INTEGER' },
];

describe.each(WHERE)(
  'prepareChanges with add_columns %s (issue 11, build 6)',
  WORKER_TEST,
  (_where, poolOf) => {
    it.each(FORMATS)(
      '%s: a batch with a new field is evolved once, then mapped and encoded with the new column',
      async (format) => {
        const context = new EvolvingContext(BASE_COLUMNS, format);
        const before = context.current();
        const raw = insertEvent({ _id: 1, n: 1, colour: 'red' });
        const batch = await prepareChanges(poolOf(), context)(
          batchOf([raw]),
          NOW,
          new AbortController().signal,
        );
        expect(context.evolved).toHaveLength(1);
        expect(context.evolved[0]).toEqual([{ _id: 1, n: 1, colour: 'red' }]);
        const after = context.current();
        expect(after).not.toBe(before);
        expect(after.mapping.columns.map((c) => c.name)).toEqual(['_id', 'n', 'colour']);
        const row = batch.changes[0]?.record?.row();
        expect(row).toMatchObject({ colour: 'red' });
        expect(row?._unmapped ?? null).toBeNull();
        expectPreparedAs(batch.changes[0], [raw], after);
      },
    );

    it.each(FORMATS)(
      '%s: a later batch prepared alongside with the old columns is prepared again with the new ones, and resolves after',
      async (format) => {
        const context = new EvolvingContext(BASE_COLUMNS, format);
        let open: () => void = () => undefined;
        context.gate = new Promise((resolve) => {
          open = resolve;
        });
        const prepare = prepareChanges(poolOf(), context);
        const signal = new AbortController().signal;
        const order: string[] = [];
        const first = prepare(batchOf([insertEvent({ _id: 1, n: 1, colour: 'red' })]), NOW, signal).then(
          (b) => {
            order.push('first');
            return b;
          },
        );
        const laterRaw = insertEvent({ _id: 2, n: 2 });
        // Submitted while the first is still evolving: its own task runs with the columns of then.
        const later = prepare(batchOf([laterRaw]), NOW, signal).then((b) => {
          order.push('later');
          return b;
        });
        const old = context.current();
        await new Promise((resolve) => setTimeout(resolve, 200));
        expect(context.evolved).toHaveLength(1);
        expect(order).toEqual([]);
        open();
        const [, laterBatch] = await Promise.all([first, later]);
        expect(order).toEqual(['first', 'later']);
        // Nothing in the later batch asked for columns: it was mapped again, not evolved.
        expect(context.evolved).toHaveLength(1);
        const now = context.current();
        expect(now).not.toBe(old);
        const encoded = laterBatch.changes[0]?.record?.encoded as WrappedRow;
        expect(encoded.spec).toBe(now.encoding.spec);
        expectPreparedAs(laterBatch.changes[0], [laterRaw], now);
      },
    );
  },
);

describe.each(WHERE)('prepareChanges when stopped %s (issue 11, build 6)', WORKER_TEST, (_where, poolOf) => {
  it('a stop rejects the calls still waiting at once, with its reason, while a schema evolution is under way', async () => {
    const context = new EvolvingContext(BASE_COLUMNS, 'insert-all');
    let open: () => void = () => undefined;
    context.gate = new Promise((resolve) => {
      open = resolve;
    });
    const prepare = prepareChanges(poolOf(), context);
    const stop = new AbortController();
    const evolving = prepare(batchOf([insertEvent({ _id: 1, n: 1, colour: 'red' })]), NOW, stop.signal);
    const waiting = prepare(batchOf([insertEvent({ _id: 2, n: 2 })]), NOW, stop.signal);
    await new Promise((resolve) => setTimeout(resolve, 100));
    const reason = new Error('stopping');
    stop.abort(reason);
    await expect(evolving).rejects.toBe(reason);
    await expect(waiting).rejects.toBe(reason);
    // The evolution under way is not left hanging: it ends, and sees the stop.
    open();
    expect(context.evolved).toHaveLength(1);
  });
});

describe.each(WHERE)('prepareDocuments %s (issue 11, build 6)', WORKER_TEST, (_where, poolOf) => {
  it.each(FORMATS)('%s: rows equal backfillRecord, ids, text and encoding included', async (format) => {
    const documents = fc
      .sample(arbDocument, { numRuns: 120, seed: 11 })
      .map((document, n) => serialize({ ...document, _id: n }));
    documents.push(
      bsonWithBytes({ _id: 'bad', name: '#####' }, '#####', INVALID),
      serialize({ _id: new ObjectId(), name: 'plain' }),
    );
    const decoded = documents.map((raw) => decodeDocument(raw));
    const state = stateFor(await inferColumns(decoded), format);
    const prepare = prepareDocuments(poolOf(), fixed(state), SNAPSHOT);
    const parts = chunks(documents, 40);
    const prepared = await Promise.all(parts.map((part) => prepare(part, NOW, new AbortController().signal)));
    const records = prepared.flat();
    expect(records).toHaveLength(documents.length);
    let misfits = 0;
    records.forEach((record, k) => {
      const reference = backfillRecord(state.mapper, decoded[k] ?? {}, SNAPSHOT, NOW);
      expect(record.eventId).toBe(reference.eventId);
      expect(record.docId).toBe(reference.docId);
      const row = reference.row();
      expect(record.row()).toEqual(row);
      expect(record.document()).toBe(reference.document());
      expectEncodedAs(record, state.encoding.spec, row);
      if ((record.encoded as WrappedRow).bytes === undefined) misfits++;
    });
    // insertAll encodes every row; Storage Write may refuse a value, then it is sized by its JSON.
    if (format === 'insert-all') expect(misfits).toBe(0);
  });

  it.each(FORMATS)('%s: a chunk with a new field is evolved before its rows are returned', async (format) => {
    const context = new EvolvingContext(BASE_COLUMNS, format);
    const prepare = prepareDocuments(poolOf(), context, SNAPSHOT);
    const records = await prepare(
      [serialize({ _id: 1, n: 1 }), serialize({ _id: 2, n: 2, size: 4.5 })],
      NOW,
      new AbortController().signal,
    );
    expect(context.evolved).toHaveLength(1);
    const state = context.current();
    expect(state.mapping.columns.map((c) => c.name)).toEqual(['_id', 'n', 'size']);
    const [, evolved] = records;
    expect(evolved).toBeDefined();
    if (!evolved) return;
    expect(evolved.row()).toMatchObject({ size: 4.5, _doc_id: docIdString(2), operationType: 'backfill' });
    expectEncodedAs(evolved, state.encoding.spec, evolved.row());
  });
});
