import { protos } from '@google-cloud/bigquery-storage';
import { BigQueryError, errorMessage } from '../errors.js';
import { type TableField } from '../schema/types.js';
import { type BigQueryClients } from './client.js';
import { classifyBigQueryError, toBigQueryError } from './error-mapping.js';
import { assertDatasetId, assertTableId } from '../schema/identifiers.js';
import { type RowEncoding } from '../core/prepared.js';
import { DEFAULT_WRITE_STREAM_IDLE_MS } from '../core/settings.js';
import { compileExceeds, compileRowEncoder, descriptorProblem, type RowEncoder } from './proto-encoder.js';
import {
  AppendStatusError,
  GRPC_INTERNAL,
  StorageWriteConnection,
  type AppendRowsResponse,
  type DescriptorProto,
} from './storage-write-connection.js';
import {
  type AppendOutcome,
  type EncodedRow,
  type HistoryRow,
  type OutgoingRow,
  type RowRejection,
  type TableWriter,
} from './writer.js';

type RowError = protos.google.cloud.bigquery.storage.v1.IRowError;
type StorageTableField = protos.google.cloud.bigquery.storage.v1.ITableFieldSchema;

/**
 * BigQuery's limit on one AppendRows request (10 MB; the decimal reading, the stricter one). The caller's
 * batches must stay under it; `append` refuses a larger one instead of letting BigQuery fail it.
 */
export const MAX_APPEND_REQUEST_BYTES = 10_000_000;
/** Room for what a request carries besides the rows and the descriptor: stream name, trace id, framing. */
const REQUEST_ENVELOPE_BYTES = 4_096;
/** Opening the default stream (a unary GetWriteStream call) must not hang a writer forever. */
const DEFAULT_OPEN_TIMEOUT_MS = 30_000;
/**
 * The fields BigQuery names when it refuses a writer schema it does not take yet, comma-separated, nested
 * ones by dotted path: "Input schema has more fields than BigQuery schema, extra fields: 'a,rec.b' Entity: ...".
 */
const EXTRA_FIELDS = /more fields than BigQuery schema, extra fields: '([^']*)'/i;
/** An append unanswered this long is given up (and retried by the sink on a new connection). */
export const DEFAULT_APPEND_TIMEOUT_MS = 60_000;
/**
 * Connections to the default stream per writer. One connection carries several appends at once (they are
 * not awaited one by one), which is enough until the connection's own throughput is the limit: Google's
 * best practices say a connection takes at least 1 MB/s, often more than 10 MB/s.
 */
export const DEFAULT_STORAGE_WRITE_CONNECTIONS = 1;
/**
 * How long `close` waits for appends still in flight. A flush has already waited for its own appends; what
 * is left belongs to a caller that stopped waiting (an abort), whose rows were not checkpointed and will be
 * sent again. A few seconds let an answer that was on its way arrive; no more, or a settings change or a
 * lost lease would hold the mapping's stop for the whole append deadline.
 */
export const DEFAULT_CLOSE_TIMEOUT_MS = 10_000;

/** Where a Storage Write writer runs: Google's BigQuery, or one of the emulators the tests use. */
export const STORAGE_WRITE_TARGETS = ['bigquery', 'bqemulator', 'goccy-bigquery-emulator'] as const;
export type StorageWriteTarget = (typeof STORAGE_WRITE_TARGETS)[number];

export type StorageWriteSupport =
  { readonly supported: true } | { readonly supported: false; readonly reason: string };

/**
 * Whether a table with this schema can be written through the Storage Write API on `target`; when it cannot,
 * the caller writes it with insertAll (docs/bigquery.md, "Writers"). On BigQuery the only obstacle is a
 * client-library defect (RECORD paths that collide in its descriptor); bqemulator 1.4.0 cannot take any
 * RECORD column on this path.
 */
export function storageWriteSupport(
  schema: readonly TableField[],
  target: StorageWriteTarget,
): StorageWriteSupport {
  const problem = descriptorProblem(schema);
  if (problem !== undefined) return { supported: false, reason: problem };
  if (target === 'bqemulator') {
    const record = schema.find((field) => field.type === 'RECORD');
    if (record !== undefined) {
      return {
        supported: false,
        reason: `bqemulator cannot take RECORD columns (${record.name}) through the Storage Write API`,
      };
    }
  }
  return { supported: true };
}

export interface StorageWriteWriterOptions {
  readonly clients: Pick<BigQueryClients, 'projectId' | 'writerClient'>;
  readonly datasetId: string;
  readonly tableId: string;
  /** The table's current schema (user columns and metadata columns), in the table's column order. */
  readonly schema: readonly TableField[];
  /** Deadline of the GetWriteStream call that opens the stream (default 30 s). */
  readonly openTimeoutMs?: number;
  /** How long an append may go unanswered before it fails as retryable (default DEFAULT_APPEND_TIMEOUT_MS). */
  readonly appendTimeoutMs?: number;
  /** How long `close` waits for appends in flight before giving them up (default DEFAULT_CLOSE_TIMEOUT_MS). */
  readonly closeTimeoutMs?: number;
  /**
   * Connections to the default stream over which appends are spread (default
   * DEFAULT_STORAGE_WRITE_CONNECTIONS). Rows of one append always travel together on one connection.
   */
  readonly connections?: number;
  /**
   * How long a connection may sit with nothing to send or await before it is closed, to be opened again by
   * the next append (default DEFAULT_WRITE_STREAM_IDLE_MS; WRITE_STREAM_IDLE_MS in the daemon). No row is
   * lost or delayed beyond the reopening: a connection with appends in flight is never closed.
   */
  readonly idleMs?: number;
  /** Told +1 when a connection opens and -1 when one closes (metrics). */
  readonly onConnectionOpenChange?: (delta: 1 | -1) => void;
}

function rowErrorReason(error: RowError): string {
  const code = typeof error.code === 'number' ? `code ${error.code}` : (error.code ?? 'row error');
  return `${error.message ?? 'refused'} (${code})`;
}

/** A table schema compiled for Storage Write: its encoder (and descriptor), and what it covers. */
interface WriterSchema {
  readonly schema: readonly TableField[];
  readonly encoder: RowEncoder;
  readonly descriptorBytes: number;
  /** Whether a row carries a non-NULL value this schema has no field for (at any depth). */
  readonly exceeds: (row: HistoryRow) => boolean;
  /** This schema's encoding for worker threads: their bytes become ProtoRows of this schema. */
  readonly encoding: RowEncoding;
}

function writerSchema(schema: readonly TableField[]): WriterSchema {
  const encoder = compileRowEncoder(schema);
  const compiled: WriterSchema = {
    schema,
    encoder,
    descriptorBytes: descriptorSize(encoder),
    exceeds: compileExceeds(schema),
    encoding: {
      spec: { format: 'storage-write', schema },
      wrap: (bytes, size) => new ProtoRow(size, bytes, compiled),
    },
  };
  return compiled;
}

/** Whether a table schema BigQuery reports (`updatedSchema`) has every field, at every depth, of `fields`. */
function covers(reported: readonly StorageTableField[], fields: readonly TableField[]): boolean {
  const byName = new Map(reported.map((f) => [f.name?.toLowerCase(), f]));
  return fields.every((field) => {
    const other = byName.get(field.name.toLowerCase());
    return other !== undefined && covers(other.fields ?? [], field.fields ?? []);
  });
}

/**
 * A row encoded by `encode`: its protobuf bytes (a view into the encoder's slab, outside the JavaScript heap)
 * and the writer schema they were encoded with. The bytes are sent only with that schema's descriptor: the
 * client library numbers a message's fields by their position in it, so the same row is other bytes under a
 * schema that lacks a field before one of its own (a narrowed one, see `#withoutRefusedFields`).
 */
class ProtoRow implements EncodedRow {
  constructor(
    readonly size: number,
    /** Undefined when a value does not fit its column: the append encodes the row again and refuses it. */
    readonly bytes: Uint8Array | undefined,
    readonly schema: WriterSchema,
    /** The accepted schema the row was found to have a value beyond (so it needs `schema`), if any. */
    readonly beyond?: WriterSchema,
  ) {}
}

/** The rows of one request: their bytes and their indexes among the rows given to `append`. */
interface Batch {
  readonly serialized: readonly Uint8Array[];
  readonly indexes: readonly number[];
}

/**
 * Writes rows into one table through the Storage Write API's default stream (committed as soon as BigQuery
 * acknowledges them; at-least-once, deduplicated downstream by `_event_id`/`_seq`). Rows are encoded into
 * protobuf by a compiled encoder (see proto-encoder.ts) and appended as serialized rows.
 *
 * Delivery: BigQuery refuses a whole request when some of its rows are invalid and names them in
 * `rowErrors`; this writer then resends the other rows (which were not written) and reports the named ones
 * as rejected. Nothing else is retried here; the library's own write retries stay off.
 *
 * Schema changes: BigQuery takes a new column on the default stream only some time after the table patch
 * (minutes, per Google) and until then refuses every request whose writer schema has it ("Input schema has
 * more fields than BigQuery schema"). So the writer keeps the schema BigQuery last accepted next to the
 * newest one and splits each append: the rows that carry nothing beyond the accepted schema go out with it
 * and land; the rows that need the new column are sent with the new schema and, while BigQuery refuses it,
 * come back as `schema` rejections (the sink waits and retries them alone). The new schema becomes the
 * accepted one when a request with it lands, or when an append response's `updatedSchema` shows its
 * columns. A new writer cannot know what the stream takes and starts from the table's schema; when BigQuery
 * refuses it and names the fields ("extra fields: 'colour'"), the accepted schema becomes the newest one
 * without them.
 *
 * Concurrency: several appends may be in flight at once. Each request goes out on one of `connections`
 * connections (see StorageWriteConnection): the least busy one already carrying the request's writer
 * schema, else the least busy one, which switches schema once its requests in flight are answered.
 */
export class StorageWriteWriter implements TableWriter {
  readonly kind = 'storage-write' as const;
  readonly #clients: StorageWriteWriterOptions['clients'];
  readonly #destinationTable: string;
  readonly #closeTimeoutMs: number;
  readonly #connections: readonly StorageWriteConnection[];
  /** The newest schema (`updateSchema`); rows are encoded with it. */
  #current: WriterSchema;
  /** The newest schema BigQuery is known to take on this stream (a request with it landed). */
  #accepted: WriterSchema;
  /** rowEncoding's encoding of the newest and the accepted schema while they differ. */
  #pairEncoding:
    | { readonly current: WriterSchema; readonly accepted: WriterSchema; readonly encoding: RowEncoding }
    | undefined;
  #closed = false;

  constructor(options: StorageWriteWriterOptions) {
    this.#clients = options.clients;
    this.#destinationTable = `projects/${options.clients.projectId}/datasets/${assertDatasetId(options.datasetId)}/tables/${assertTableId(options.tableId)}`;
    this.#closeTimeoutMs = options.closeTimeoutMs ?? DEFAULT_CLOSE_TIMEOUT_MS;
    const count = options.connections ?? DEFAULT_STORAGE_WRITE_CONNECTIONS;
    if (!Number.isInteger(count) || count < 1) {
      throw new Error(`Storage Write connections must be a whole number of at least 1 (got ${count})`);
    }
    this.#connections = Array.from(
      { length: count },
      () =>
        new StorageWriteConnection({
          writerClient: this.#clients.writerClient,
          destinationTable: this.#destinationTable,
          openTimeoutMs: options.openTimeoutMs ?? DEFAULT_OPEN_TIMEOUT_MS,
          appendTimeoutMs: options.appendTimeoutMs ?? DEFAULT_APPEND_TIMEOUT_MS,
          idleMs: options.idleMs ?? DEFAULT_WRITE_STREAM_IDLE_MS,
          ...(options.onConnectionOpenChange && { onOpenChange: options.onConnectionOpenChange }),
        }),
    );
    // The table's schema as read when the writer was made: taken as accepted until BigQuery says otherwise.
    this.#current = writerSchema(options.schema);
    this.#accepted = this.#current;
  }

  /**
   * The row's protobuf bytes under the schema it is to be sent with, sent as they are while that schema is
   * the accepted one: the current schema, or, while BigQuery does not take that one yet, the accepted one
   * for a row that needs nothing beyond it.
   */
  encode(row: HistoryRow): ProtoRow {
    const accepted = this.#accepted;
    const beyond = accepted !== this.#current && accepted.exceeds(row) ? accepted : undefined;
    const schema = accepted !== this.#current && beyond === undefined ? accepted : this.#current;
    try {
      const bytes = schema.encoder.encode(row);
      return new ProtoRow(bytes.length, bytes, schema, beyond);
    } catch (error) {
      // A value that does not fit its column: `append` reports the row as rejected; size it by its JSON.
      if (error instanceof BigQueryError)
        return new ProtoRow(Buffer.byteLength(JSON.stringify(row), 'utf8'), undefined, schema, beyond);
      throw error;
    }
  }

  /**
   * The newest schema's encoding, with the accepted one while BigQuery does not take the newest yet: a
   * worker then encodes as `encode` does (the accepted schema for rows with nothing beyond it), so that no
   * row needs encoding again when it is sent. The same object until either schema changes.
   */
  rowEncoding(): RowEncoding {
    const current = this.#current;
    const accepted = this.#accepted;
    if (accepted === current) return current.encoding;
    const cached = this.#pairEncoding;
    if (cached?.current === current && cached.accepted === accepted) return cached.encoding;
    const encoding: RowEncoding = {
      spec: { format: 'storage-write', schema: current.schema, accepted: accepted.schema },
      wrap: (bytes, size, schema) =>
        schema === 'accepted'
          ? new ProtoRow(size, bytes, accepted)
          : new ProtoRow(size, bytes, current, schema === 'beyond-accepted' ? accepted : undefined),
    };
    this.#pairEncoding = { current, accepted, encoding };
    return encoding;
  }

  async append(rows: readonly OutgoingRow[], signal?: AbortSignal): Promise<AppendOutcome> {
    signal?.throwIfAborted();
    if (this.#closed)
      throw new BigQueryError('fatal', `Storage Write writer for ${this.#destinationTable} is closed`);
    const values = new RowValues(rows);
    // Rows that need nothing beyond the accepted schema go out with it: they land while a new column is
    // still on its way to the default stream. Only the rows that need the new schema are sent with it, and
    // first: should it land, it becomes the accepted one. A row encoded with the accepted schema fits it
    // (encoding refuses a value without a field); any other is built again to be looked at.
    let fits: number[] = [];
    let needs: number[] = [];
    rows.forEach((row, index) => {
      const needsCurrent =
        this.#accepted === this.#current ||
        (!this.#encodedWith(row, this.#accepted) &&
          (this.#foundBeyond(row, this.#accepted) || this.#accepted.exceeds(values.at(index))));
      (needsCurrent ? needs : fits).push(index);
    });
    const rejected: RowRejection[] = [];
    // The rows that fit were checked against (and mostly encoded with) the accepted schema of now: they go
    // out with it even when the rows needing the new one land first and make that one accepted (a schema
    // with fewer fields than the table is always taken), so their bytes are sent as they are.
    let fitsWith = this.#accepted;
    if (needs.length > 0) {
      try {
        rejected.push(...(await this.#appendWith(this.#current, values, needs, signal)));
      } catch (error) {
        const narrowed = this.#withoutRefusedFields(error);
        if (narrowed === undefined) throw error;
        // BigQuery named the fields it does not show to this stream yet: what is left of the new schema is
        // what it takes. The rows that carry a value for a named field wait (the sink retries them as
        // `schema`); the others go out now without it.
        this.#accepted = narrowed;
        fitsWith = narrowed;
        const waiting = needs.filter((index) => narrowed.exceeds(values.at(index)));
        fits = [...fits, ...needs.filter((index) => !narrowed.exceeds(values.at(index)))];
        needs = waiting;
        if (fits.length === 0) throw error;
        const reason = errorMessage(error);
        for (const index of waiting) rejected.push({ index, reason });
      }
    }
    if (fits.length > 0) rejected.push(...(await this.#appendWith(fitsWith, values, fits, signal)));
    return { rejected: rejected.sort((a, b) => a.index - b.index) };
  }

  /** Whether the row's encoding found a value beyond `accepted` (so it needs the newest schema). */
  #foundBeyond(row: OutgoingRow, accepted: WriterSchema): boolean {
    const encoded = row.encoded;
    return encoded instanceof ProtoRow && encoded.beyond === accepted;
  }

  /** Whether the row was encoded by this writer with `schema` (and could be). */
  #encodedWith(row: OutgoingRow, schema: WriterSchema): boolean {
    const encoded = row.encoded;
    return encoded instanceof ProtoRow && encoded.schema === schema && encoded.bytes !== undefined;
  }

  /** Sends `rows[indexes]` with `schema`; returns the refused ones, by their index among `rows`. */
  async #appendWith(
    schema: WriterSchema,
    values: RowValues,
    indexes: readonly number[],
    signal: AbortSignal | undefined,
  ): Promise<RowRejection[]> {
    const encoded = this.#encode(schema, values, indexes);
    const rejected: RowRejection[] = [...encoded.rejected];
    let batch = this.#withinRequestLimit(encoded, schema.descriptorBytes, rejected);
    while (batch.serialized.length > 0) {
      const response = await this.#send(batch.serialized, schema.encoder.descriptor, signal);
      this.#noteTableSchema(response);
      const rowErrors = response.rowErrors ?? [];
      if (rowErrors.length === 0) {
        const status = response.error;
        if (status && (status.code ?? 0) !== 0) {
          throw toBigQueryError(
            new AppendStatusError(status.code ?? GRPC_INTERNAL, status.message ?? 'append failed'),
            `Storage Write append to ${this.#destinationTable}`,
          );
        }
        // BigQuery took a request with this schema: it takes the schema.
        if (schema === this.#current) this.#accepted = schema;
        break;
      }
      batch = this.#withoutRefusedRows(batch, rowErrors, rejected);
    }
    return rejected;
  }

  /**
   * After BigQuery refused a request sent with the current schema as "Input schema has more fields than
   * BigQuery schema, extra fields: 'a,rec.b'": the current schema without those fields, which the stream
   * does take (the accepted one when it is the same). Undefined for any other failure, or when the named
   * fields are not in the current schema (nothing to narrow: the failure stands as it is).
   */
  #withoutRefusedFields(error: unknown): WriterSchema | undefined {
    if (classifyBigQueryError(error) !== 'schema') return undefined;
    const message = errorMessage(error);
    const named = EXTRA_FIELDS.exec(message)?.[1];
    if (named === undefined) return undefined;
    const paths = named
      .split(',')
      .map((path) => path.trim().toLowerCase())
      .filter((path) => path.length > 0);
    const narrowed = withoutPaths(this.#current.schema, paths, '');
    if (sameSchema(narrowed, this.#current.schema)) return undefined;
    return sameSchema(narrowed, this.#accepted.schema) ? this.#accepted : writerSchema(narrowed);
  }

  async updateSchema(schema: readonly TableField[]): Promise<void> {
    // A repair hands the same schema again: keep what is compiled (and whether BigQuery took it).
    if (sameSchema(schema, this.#accepted.schema)) this.#current = this.#accepted;
    else if (!sameSchema(schema, this.#current.schema)) this.#current = writerSchema(schema);
    // Each open connection switches once its requests in flight are answered.
    const descriptor = this.#current.encoder.descriptor;
    await Promise.all(this.#connections.map((connection) => connection.use(descriptor)));
  }

  /** `updatedSchema` in a response: the table's schema as the stream now sees it. */
  #noteTableSchema(response: AppendRowsResponse): void {
    const fields = response.updatedSchema?.fields;
    if (fields && this.#accepted !== this.#current && covers(fields, this.#current.schema)) {
      this.#accepted = this.#current;
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await Promise.all(this.#connections.map((connection) => connection.close(this.#closeTimeoutMs)));
  }

  /**
   * `rows[indexes]` as protobuf rows of `schema`: the bytes made at batching when they were made with it,
   * the others encoded now from the row built again (misfits as rejections). Indexes are among `rows`.
   */
  #encode(
    schema: WriterSchema,
    values: RowValues,
    indexes: readonly number[],
  ): { serialized: Uint8Array[]; indexes: number[]; rejected: RowRejection[] } {
    const serialized: Uint8Array[] = [];
    const kept: number[] = [];
    const rejected: RowRejection[] = [];
    for (const index of indexes) {
      const encoded = values.rows[index]?.encoded;
      let bytes = encoded instanceof ProtoRow && encoded.schema === schema ? encoded.bytes : undefined;
      if (bytes === undefined) {
        try {
          bytes = schema.encoder.encode(values.at(index));
        } catch (error) {
          if (!(error instanceof BigQueryError)) throw error;
          rejected.push({ index, reason: error.message });
          continue;
        }
      }
      serialized.push(bytes);
      kept.push(index);
    }
    return { serialized, indexes: kept, rejected };
  }

  /** Rows too large for any request are refused on their own; a batch too large as a whole is a caller bug. */
  #withinRequestLimit(
    encoded: { readonly serialized: readonly Uint8Array[]; readonly indexes: readonly number[] },
    descriptorBytes: number,
    rejected: RowRejection[],
  ): Batch {
    const fixed = descriptorBytes + REQUEST_ENVELOPE_BYTES;
    const serialized: Uint8Array[] = [];
    const indexes: number[] = [];
    let total = fixed;
    encoded.serialized.forEach((row, i) => {
      const index = encoded.indexes[i] ?? i;
      const size = row.length + lengthDelimitedOverhead(row.length);
      if (fixed + size > MAX_APPEND_REQUEST_BYTES) {
        rejected.push({
          index,
          reason: `row of ${row.length} bytes does not fit in one Storage Write request (limit ${MAX_APPEND_REQUEST_BYTES} bytes)`,
        });
        return;
      }
      serialized.push(row);
      indexes.push(index);
      total += size;
    });
    if (total > MAX_APPEND_REQUEST_BYTES) {
      throw new BigQueryError(
        'fatal',
        `Storage Write append of ${serialized.length} rows to ${this.#destinationTable} would be ${total} bytes, ` +
          `over the ${MAX_APPEND_REQUEST_BYTES}-byte request limit: the batcher must send smaller batches`,
      );
    }
    return { serialized, indexes };
  }

  /** BigQuery wrote none of the request's rows: keep the ones it did not name, for a resend. */
  #withoutRefusedRows(batch: Batch, rowErrors: readonly RowError[], rejected: RowRejection[]): Batch {
    const refused = new Set<number>();
    for (const error of rowErrors) {
      const position = Number(error.index);
      const index = batch.indexes[position];
      if (!Number.isInteger(position) || index === undefined || refused.has(position)) {
        throw toBigQueryError(
          new AppendStatusError(
            GRPC_INTERNAL,
            `row error for row ${String(error.index)} of ${batch.indexes.length}`,
          ),
          `Storage Write append to ${this.#destinationTable}`,
        );
      }
      refused.add(position);
      rejected.push({ index, reason: rowErrorReason(error) });
    }
    const keep = (_: unknown, position: number) => !refused.has(position);
    return { serialized: batch.serialized.filter(keep), indexes: batch.indexes.filter(keep) };
  }

  async #send(
    serialized: readonly Uint8Array[],
    descriptor: DescriptorProto,
    signal: AbortSignal | undefined,
  ): Promise<AppendRowsResponse> {
    try {
      return await this.#connectionFor(descriptor).append(serialized, descriptor, signal);
    } catch (error) {
      if (signal?.aborted && error === signal.reason) throw error;
      throw toBigQueryError(error, `Storage Write append to ${this.#destinationTable}`);
    }
  }

  /**
   * The least busy connection already carrying `descriptor` (or not used yet), else the least busy one: the
   * requests of one writer schema gather on the connections that carry it, and a switch is rare.
   */
  #connectionFor(descriptor: DescriptorProto): StorageWriteConnection {
    const least = (candidates: readonly StorageWriteConnection[]) =>
      candidates.reduce<StorageWriteConnection | undefined>(
        (best, connection) => (best === undefined || connection.load < best.load ? connection : best),
        undefined,
      );
    const carrying = this.#connections.filter(
      (connection) => connection.descriptor === undefined || connection.descriptor === descriptor,
    );
    const chosen = least(carrying) ?? least(this.#connections);
    if (chosen === undefined) throw new Error('a Storage Write writer has at least one connection');
    return chosen;
  }
}

/** The fields of `fields` whose dotted path (lower case) is not among `paths`; a RECORD left empty goes too. */
function withoutPaths(fields: readonly TableField[], paths: readonly string[], prefix: string): TableField[] {
  return fields.flatMap((field) => {
    const path = `${prefix}${field.name.toLowerCase()}`;
    if (paths.includes(path)) return [];
    if (field.type !== 'RECORD' || field.fields === undefined) return [field];
    const nested = withoutPaths(field.fields, paths, `${path}.`);
    if (nested.length === 0) return [];
    return [nested.length === field.fields.length ? field : { ...field, fields: nested }];
  });
}

function sameSchema(a: readonly TableField[], b: readonly TableField[]): boolean {
  const plain = (fields: readonly TableField[]): unknown =>
    fields.map((f) => [f.name, f.type, f.mode, plain(f.fields ?? [])]);
  return JSON.stringify(plain(a)) === JSON.stringify(plain(b));
}

/** Every request carries the descriptor as its writer schema. */
function descriptorSize(encoder: RowEncoder): number {
  return protos.google.protobuf.DescriptorProto.encode(encoder.descriptor).finish().length;
}

function lengthDelimitedOverhead(length: number): number {
  let size = 2;
  for (let v = length >>> 7; v !== 0; v >>>= 7) size++;
  return size;
}

/**
 * The rows of one append as objects, each built (again) only when the append needs it, and once: in the
 * common case, every row's bytes are sent as encoded and no row is built at all.
 */
class RowValues {
  readonly #built = new Map<number, HistoryRow>();

  constructor(readonly rows: readonly OutgoingRow[]) {}

  at(index: number): HistoryRow {
    let row = this.#built.get(index);
    if (row === undefined) {
      row = this.rows[index]?.row() ?? {};
      this.#built.set(index, row);
    }
    return row;
  }
}

/** A Storage Write writer for one table; see `storageWriteSupport` for the tables it cannot take. */
export function createStorageWriteWriter(options: StorageWriteWriterOptions): StorageWriteWriter {
  return new StorageWriteWriter(options);
}
