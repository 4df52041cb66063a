import { deserialize } from 'bson';
import { INSERT_ALL_BODY_HEAD, INSERT_ALL_BODY_TAIL } from '../../src/bigquery/insert-all-writer.js';
import { compileRowEncoder } from '../../src/bigquery/proto-encoder.js';
import { type WriterKind } from '../../src/core/settings.js';
import { normalizeChangeEvent } from '../../src/mongodb/change-event.js';
import { historyTableSchema } from '../../src/schema/table-schema.js';
import { type ColumnSpec, type TableField } from '../../src/schema/types.js';
import { BSON_DECODE_OPTIONS } from '../../src/base/bson-kind.js';
import { compileRowMapper } from '../../src/transform/row-mapper.js';
import { changeRecord, isWritable } from '../../src/core/history-rows.js';
import { changeEventId, type ChangeEvent, type ClusterTime } from '../../src/core/model.js';
import { mapOrdered, siblingModule, WorkerPool, type Transfer } from '../../src/workers/pool.js';

/** What a change encoder is compiled from; plain data, so it can be handed to worker threads. */
export interface ChangeEncoderConfig {
  readonly columns: readonly ColumnSpec[];
  /** As the row mapper's option (default true). */
  readonly captureUnmapped?: boolean;
  /** The wire format rows are encoded for: the insertAll JSON body or Storage Write protobuf rows. */
  readonly format: WriterKind;
  /** Storage Write: the table's schema in its column order (default: `historyTableSchema(columns)`). */
  readonly schema?: readonly TableField[];
}

/** What the consumer of a change needs besides its row: what became of it, and its position. */
export interface EventSummary {
  readonly kind: ChangeEvent['kind'];
  readonly token: string;
  readonly clusterTime: ClusterTime;
}

/**
 * Change events decoded, mapped to history rows and encoded for the wire. Row `k` is
 * `rows.subarray(rowEnds[k - 1] ?? 0, rowEnds[k])`: for insert-all the UTF-8 JSON of one `rows[]` entry of
 * an insertAll body (`{"insertId":…,"json":…}`), for storage-write one serialized protobuf row. Events
 * without a row (lookup misses, ignored events) have none; every other event has exactly one.
 */
export interface EncodedChanges {
  readonly events: readonly EventSummary[];
  readonly rows: Uint8Array;
  readonly rowEnds: Uint32Array;
  /** For each row, the index of its event. */
  readonly rowEvents: Uint32Array;
  /**
   * For each row, its size for the batch byte limit: the length of the row's JSON (as the stream loop
   * measures it) for insert-all, of its protobuf bytes for storage-write.
   */
  readonly rowSizes: Uint32Array;
  /** Rows the protobuf encoder refused (a value that does not fit its column): they have no bytes. */
  readonly rejected: readonly { readonly row: number; readonly reason: string }[];
}

/** One row of an EncodedChanges. */
export function encodedRow(encoded: EncodedChanges, row: number): Uint8Array {
  return encoded.rows.subarray(row === 0 ? 0 : (encoded.rowEnds[row - 1] ?? 0), encoded.rowEnds[row] ?? 0);
}

const INSERT_ALL_HEAD = Buffer.from(INSERT_ALL_BODY_HEAD);
const INSERT_ALL_TAIL = Buffer.from(INSERT_ALL_BODY_TAIL);
const COMMA = Buffer.from(',');

/** The JSON body of an insertAll request of these encoded `rows[]` entries, as InsertAllWriter sends it. */
export function insertAllRequestBody(entries: readonly Uint8Array[]): Buffer {
  const parts: Uint8Array[] = [INSERT_ALL_HEAD];
  entries.forEach((entry, i) => {
    if (i > 0) parts.push(COMMA);
    parts.push(entry);
  });
  parts.push(INSERT_ALL_TAIL);
  return Buffer.concat(parts);
}

/** A growable byte buffer for UTF-8 text; its ArrayBuffer is handed over whole (never reused). */
class TextSink {
  bytes: Buffer;
  pos = 0;

  constructor(size: number) {
    this.bytes = Buffer.allocUnsafeSlow(Math.max(size, 1024));
  }

  write(text: string): number {
    // A UTF-16 unit takes at most 3 bytes in UTF-8.
    const needed = this.pos + text.length * 3;
    if (needed > this.bytes.length) {
      const grown = Buffer.allocUnsafeSlow(Math.max(needed, this.bytes.length * 2));
      this.bytes.copy(grown, 0, 0, this.pos);
      this.bytes = grown;
    }
    const written = this.bytes.write(text, this.pos, 'utf8');
    this.pos += written;
    return written;
  }
}

type Encode = (events: readonly Uint8Array[], now: Date) => EncodedChanges;

/**
 * Compiles the per-schema work of the stream loop's hot path into one function: BSON decode of each raw
 * change event, `normalizeChangeEvent`, `changeRecord` (row mapper and metadata columns), and the row's
 * wire encoding; the same production functions the daemon runs, whether called here or in a worker.
 */
export function compileChangeEncoder(config: ChangeEncoderConfig): Encode {
  const mapper = compileRowMapper(config.columns, { captureUnmapped: config.captureUnmapped ?? true });
  const decode = (raw: Uint8Array): ChangeEvent =>
    normalizeChangeEvent(deserialize(raw, BSON_DECODE_OPTIONS));
  const summarize = (event: ChangeEvent): EventSummary => ({
    kind: event.kind,
    token: event.token,
    clusterTime: event.clusterTime,
  });

  if (config.format === 'storage-write') {
    const encoder = compileRowEncoder(config.schema ?? historyTableSchema(config.columns));
    return (raws, now) => {
      const events: EventSummary[] = [];
      const rows: Readonly<Record<string, unknown>>[] = [];
      const rowEvents: number[] = [];
      raws.forEach((raw, index) => {
        const event = decode(raw);
        events.push(summarize(event));
        if (!isWritable(event)) return;
        rows.push(changeRecord(mapper, event, now).row());
        rowEvents.push(index);
      });
      const encoded = encoder.encodeRows(rows);
      const rowEnds = new Uint32Array(rows.length);
      const rowSizes = new Uint32Array(rows.length);
      // One copy into a buffer of its own (never Node's shared pool), which can then be transferred whole.
      const all = new Uint8Array(encoded.bytes);
      let end = 0;
      let next = 0;
      for (let row = 0; row < rows.length; row++) {
        const bytes = encoded.indexes[next] === row ? encoded.serialized[next++] : undefined;
        if (bytes) {
          all.set(bytes, end);
          end += bytes.length;
          rowSizes[row] = bytes.length;
        }
        rowEnds[row] = end;
      }
      return {
        events,
        rows: all,
        rowEnds,
        rowEvents: Uint32Array.from(rowEvents),
        rowSizes,
        rejected: encoded.rejected.map((r) => ({ row: r.index, reason: r.reason })),
      };
    };
  }

  return (raws, now) => {
    const events: EventSummary[] = [];
    const sink = new TextSink(raws.reduce((n, raw) => n + raw.length, 0) * 2);
    const rowEnds: number[] = [];
    const rowEvents: number[] = [];
    const rowSizes: number[] = [];
    raws.forEach((raw, index) => {
      const event = decode(raw);
      events.push(summarize(event));
      if (!isWritable(event)) return;
      const row = changeRecord(mapper, event, now).row();
      // Written piecewise so the row's own JSON length (the batch size measure) comes for free; the bytes
      // are those of JSON.stringify({ insertId, json: row }).
      sink.write(`{"insertId":${JSON.stringify(changeEventId(event))},"json":`);
      rowSizes.push(sink.write(JSON.stringify(row)));
      sink.write('}');
      rowEnds.push(sink.pos);
      rowEvents.push(index);
    });
    return {
      events,
      rows: new Uint8Array(sink.bytes.buffer, sink.bytes.byteOffset, sink.pos),
      rowEnds: Uint32Array.from(rowEnds),
      rowEvents: Uint32Array.from(rowEvents),
      rowSizes: Uint32Array.from(rowSizes),
      rejected: [],
    };
  };
}

/** The buffers of an EncodedChanges, to transfer rather than copy. */
export function transferablesOf(encoded: EncodedChanges): ArrayBuffer[] {
  const buffers = new Set<ArrayBuffer>();
  for (const view of [encoded.rows, encoded.rowEnds, encoded.rowEvents, encoded.rowSizes]) {
    if (view.buffer instanceof ArrayBuffer && view.buffer.byteLength > 0) buffers.add(view.buffer);
  }
  return [...buffers];
}

/** A batch of raw change events in one buffer (BSON documents are self-delimiting), and the write time. */
export interface PackedEvents {
  readonly bytes: Uint8Array<ArrayBuffer>;
  readonly now: number;
}

export function packEvents(events: readonly Uint8Array[], now: Date): PackedEvents {
  const bytes = new Uint8Array(events.reduce((n, event) => n + event.length, 0));
  let offset = 0;
  for (const event of events) {
    bytes.set(event, offset);
    offset += event.length;
  }
  return { bytes, now: now.getTime() };
}

export function unpackEvents(packed: PackedEvents): Uint8Array[] {
  const { bytes } = packed;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const events: Uint8Array[] = [];
  for (let offset = 0; offset < bytes.length;) {
    const length = view.getInt32(offset, true);
    if (length < 5 || offset + length > bytes.length) throw new Error('a packed change event is cut short');
    events.push(bytes.subarray(offset, offset + length));
    offset += length;
  }
  return events;
}

export const DEFAULT_TASK_EVENTS = 250;

export interface ParallelChangeEncoderOptions {
  /** Worker threads; 0 encodes on the calling thread (the reference the workers must match). */
  readonly threads: number;
  /** Events per task handed to a worker (default 250). */
  readonly taskEvents?: number;
  /** Tasks in flight per thread (default 2: one running, one queued). */
  readonly tasksPerThread?: number;
}

/**
 * The stream loop's CPU-bound stage (decode, map, encode) spread over worker threads, results in input
 * order. Not wired into the daemon yet: its stream loop and sink map and encode on the main thread (see
 * docs/bigquery.md, "Pipeline benchmark"). One encoder serves one schema; a schema change needs a new one.
 */
export class ParallelChangeEncoder {
  readonly #encode: Encode;
  readonly #pool: WorkerPool<PackedEvents, EncodedChanges> | undefined;
  readonly #taskEvents: number;
  readonly #window: number;

  constructor(config: ChangeEncoderConfig, options: ParallelChangeEncoderOptions) {
    this.#encode = compileChangeEncoder(config);
    this.#taskEvents = options.taskEvents ?? DEFAULT_TASK_EVENTS;
    this.#window = Math.max(1, options.threads) * (options.tasksPerThread ?? 2);
    this.#pool =
      options.threads > 0
        ? new WorkerPool({
            module: siblingModule(import.meta.url, 'change-encoder-worker'),
            threads: options.threads,
            workerData: config,
          })
        : undefined;
  }

  get threads(): number {
    return this.#pool?.threads ?? 0;
  }

  /** Encodes one batch of raw change events (on this thread when there are no workers). */
  encode(events: readonly Uint8Array[], now: Date): Promise<EncodedChanges> {
    if (!this.#pool) {
      const encode = this.#encode;
      return new Promise((resolve) => {
        resolve(encode(events, now));
      });
    }
    const packed = packEvents(events, now);
    return this.#pool.run({ value: packed, transfer: [packed.bytes.buffer] });
  }

  /**
   * Encodes a stream of event batches, each cut into tasks, yielding one EncodedChanges per task in input
   * order while later tasks run.
   */
  encodeAll(
    batches: Iterable<readonly Uint8Array[]> | AsyncIterable<readonly Uint8Array[]>,
    now: () => Date,
  ): AsyncGenerator<EncodedChanges> {
    const size = this.#taskEvents;
    async function* tasks() {
      for await (const batch of batches) {
        for (let i = 0; i < batch.length; i += size) yield batch.slice(i, i + size);
      }
    }
    return mapOrdered(tasks(), (events) => this.encode(events, now()), this.#window);
  }

  close(): Promise<void> {
    return this.#pool?.close() ?? Promise.resolve();
  }
}

/** The worker side (change-encoder-worker.ts): the task function for a config received as workerData. */
export function changeEncoderTask(
  config: ChangeEncoderConfig,
): (packed: PackedEvents) => Transfer<EncodedChanges> {
  const encode = compileChangeEncoder(config);
  return (packed) => {
    const encoded = encode(unpackEvents(packed), new Date(packed.now));
    return { value: encoded, transfer: transferablesOf(encoded) };
  };
}
