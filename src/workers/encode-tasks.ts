import { insertAllEntry } from '../bigquery/insert-all-writer.js';
import { compileExceeds, compileRowEncoder, type RowEncoder } from '../bigquery/proto-encoder.js';
import { backfillRecord, changeRecord, isWritable, type HistoryRow } from '../core/history-rows.js';
import { operationTypeOf, type ChangeEvent, type ClusterTime } from '../core/model.js';
import { type RawChange } from '../core/ports.js';
import { type EncodingSpec, type MappingSpec, type RowSchema } from '../core/prepared.js';
import { BigQueryError } from '../errors.js';
import {
  CHANGE_EVENT_FIELDS,
  MalformedChangeEventError,
  normalizeChangeEvent,
  SplitEventAssembler,
} from '../mongodb/change-event.js';
import { decodeDocument, decodeDocumentFields } from '../mongodb/raw-documents.js';
import { planEvolution } from '../schema/evolve.js';
import { compileRowMapper, type RowMapper } from '../transform/row-mapper.js';

/*
 * The work of a worker thread as pure functions of plain data: what goes in (BSON bytes packed into one
 * buffer, the mapping and encoding as specs) and what comes out (summaries, and the rows' ids, sizes and
 * bytes packed into a few buffers) cross the thread boundary by transfer. The calling thread runs the same
 * functions when there are no workers.
 */

/** Compiled mappings and encoders a worker keeps (by config id), the least recently used dropped first. */
export const MAX_COMPILED_CONFIGS = 64;

interface TaskBase {
  /** Names the mapping and encoding below: a worker compiles them once per id. */
  readonly configId: number;
  readonly mapping: MappingSpec;
  readonly encoding: EncodingSpec;
  /** `time_archived` of the rows, epoch milliseconds. */
  readonly nowMs: number;
  /**
   * Report documents with fields planning would add to `mapping.planned` (and then encode nothing). Off
   * when the batch was evolved already, so that a field the table turned down cannot ask again forever.
   */
  readonly checkEvolution: boolean;
  /** BSON documents one after the other (each says its own length), in a buffer of their own. */
  readonly bytes: Uint8Array<ArrayBuffer>;
}

/** A pull of raw change events: `fragments[k]` of the documents in `bytes` are change k. */
export interface ChangesTask extends TaskBase {
  readonly kind: 'changes';
  readonly fragments: Uint32Array<ArrayBuffer>;
}

/** Documents of one backfill chunk, each one row. */
export interface DocumentsTask extends TaskBase {
  readonly kind: 'documents';
  readonly snapshotStart: ClusterTime;
}

export type EncodeTask = ChangesTask | DocumentsTask;

/** What became of one change: PreparedChange's fields, and the index of its row (-1: none). */
export interface ChangeSummary {
  readonly kind: ChangeEvent['kind'];
  readonly operationType: string;
  readonly token: string;
  readonly clusterTime: ClusterTime;
  readonly split: boolean;
  readonly row: number;
}

/**
 * History rows, each its `_event_id`, `_doc_id`, encoded size and bytes, in a few buffers. Row k's ids are
 * `text` from `textEnds[2k - 1]` (0 for k = 0) to `textEnds[2k]` and on to `textEnds[2k + 1]`; its bytes
 * `bytes` from `byteEnds[k - 1]` to `byteEnds[k]`.
 */
export interface EncodedRows {
  readonly count: number;
  readonly text: Uint8Array<ArrayBuffer>;
  readonly textEnds: Uint32Array<ArrayBuffer>;
  /** 1 where `_doc_id` is null (a collection-gone marker). */
  readonly nullDocIds: Uint8Array<ArrayBuffer>;
  readonly sizes: Uint32Array<ArrayBuffer>;
  readonly bytes: Uint8Array<ArrayBuffer>;
  readonly byteEnds: Uint32Array<ArrayBuffer>;
  /** 0 where a value did not fit its column (Storage Write): the row has no bytes, its size is its JSON's. */
  readonly encoded: Uint8Array<ArrayBuffer>;
  /** Which schema of the spec each row was encoded with (ROW_SCHEMAS' index; see RowSchema). */
  readonly schemas: Uint8Array<ArrayBuffer>;
}

/** RowSchema by its code in EncodedRows' `schemas`. */
const ROW_SCHEMAS: readonly RowSchema[] = ['schema', 'accepted', 'beyond-accepted'];

/** `evolve`: a document has fields planning would add; nothing was encoded (no changes, no rows). */
export interface ChangesResult {
  readonly kind: 'changes';
  readonly evolve: boolean;
  readonly changes: readonly ChangeSummary[];
  readonly rows: EncodedRows;
}

/** As ChangesResult, for documents: row k is document k (none when `evolve`). */
export interface DocumentsResult {
  readonly kind: 'documents';
  readonly evolve: boolean;
  readonly rows: EncodedRows;
}

export type EncodeResult = ChangesResult | DocumentsResult;

/** One row encoded as its writer encodes it: bytes undefined when a value does not fit its column. */
interface RowBytes {
  readonly bytes: Uint8Array | undefined;
  readonly size: number;
  /** Storage Write with an accepted schema in the spec: which schema the row was encoded with. */
  readonly schema?: RowSchema;
}

/** A mapping and an encoding compiled once for the tasks that name them. */
export interface CompiledConfig {
  readonly mapper: RowMapper;
  readonly encode: (row: HistoryRow) => RowBytes;
}

/**
 * The encoding of a writer as a pure function: Storage Write's protobuf bytes, sized by them, or, for a
 * value that does not fit its column, no bytes and the row's JSON length (as StorageWriteWriter.encode);
 * insertAll's body entry, sized by the row's JSON (insertAllEntry, as InsertAllWriter.encode).
 */
export function compileRowBytes(spec: EncodingSpec): (row: HistoryRow) => RowBytes {
  switch (spec.format) {
    case 'storage-write': {
      const newest = storageWriteBytes(compileRowEncoder(spec.schema));
      if (spec.accepted === undefined) return newest;
      // As StorageWriteWriter.encode while BigQuery does not take the newest schema yet.
      const accepted = storageWriteBytes(compileRowEncoder(spec.accepted));
      const exceeds = compileExceeds(spec.accepted);
      return (row) =>
        exceeds(row)
          ? { ...newest(row), schema: 'beyond-accepted' }
          : { ...accepted(row), schema: 'accepted' };
    }
    case 'insert-all': {
      const idColumn = spec.idColumn;
      return (row) => {
        const { size, entry } = insertAllEntry(row, idColumn);
        return { bytes: entry, size };
      };
    }
    default:
      return spec satisfies never;
  }
}

/** Storage Write's bytes of a row, or, for a value that does not fit its column, none and its JSON's length. */
function storageWriteBytes(encoder: RowEncoder): (row: HistoryRow) => RowBytes {
  return (row) => {
    try {
      const bytes = encoder.encode(row);
      return { bytes, size: bytes.length };
    } catch (error) {
      if (!(error instanceof BigQueryError)) throw error;
      return { bytes: undefined, size: Buffer.byteLength(JSON.stringify(row), 'utf8') };
    }
  };
}

/** Configs compiled by id; a worker's cache, or the calling thread's when there are no workers. */
export class CompiledConfigs {
  readonly #entries = new Map<number, CompiledConfig>();
  readonly #max: number;

  constructor(max = MAX_COMPILED_CONFIGS) {
    this.#max = max;
  }

  get(id: number, mapping: MappingSpec, encoding: EncodingSpec): CompiledConfig {
    let config = this.#entries.get(id);
    if (config) {
      // Most recently used last: Map keeps insertion order.
      this.#entries.delete(id);
    } else {
      config = {
        mapper: compileRowMapper(mapping.columns, { captureUnmapped: mapping.captureUnmapped }),
        encode: compileRowBytes(encoding),
      };
    }
    this.#entries.set(id, config);
    for (const oldest of this.#entries.keys()) {
      if (this.#entries.size <= this.#max) break;
      this.#entries.delete(oldest);
    }
    return config;
  }
}

/** BSON documents one after the other in one buffer of their own (transferable). */
export function packDocuments(documents: readonly Uint8Array[]): Uint8Array<ArrayBuffer> {
  let total = 0;
  for (const document of documents) total += document.length;
  // Not zero-filled (every byte is written next) and never from Node's shared pool (it is transferred).
  const packed: Uint8Array<ArrayBuffer> = Buffer.allocUnsafeSlow(total);
  let offset = 0;
  for (const document of documents) {
    packed.set(document, offset);
    offset += document.length;
  }
  return packed;
}

/**
 * The same bytes as a Buffer (no copy): a transferred buffer arrives as a plain Uint8Array, and bson decodes
 * views of a Buffer faster (it wraps anything else in a Buffer first, for every document).
 */
function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** The documents of `packDocuments`, as views into its buffer. */
export function unpackDocuments(packed: Uint8Array): Uint8Array[] {
  const view = new DataView(packed.buffer, packed.byteOffset, packed.byteLength);
  const documents: Uint8Array[] = [];
  for (let offset = 0; offset < packed.length;) {
    const length = view.getInt32(offset, true);
    if (length < 5 || offset + length > packed.length) throw new Error('a packed BSON document is cut short');
    documents.push(packed.subarray(offset, offset + length));
    offset += length;
  }
  return documents;
}

/** The fragment counts of changes, for ChangesTask's `fragments`. */
export function fragmentCounts(changes: readonly RawChange[]): Uint32Array<ArrayBuffer> {
  return Uint32Array.from(changes, (change) => change.length);
}

/**
 * One change event from its BSON: each fragment decoded without loss (invalid UTF-8 kept), fragments put
 * together, then normalised; marked `split` when it came in more than one fragment (as the change source
 * marks it). Only the fields normalising reads are decoded (CHANGE_EVENT_FIELDS): an update's
 * `updateDescription`, a pre-image, `ns` and `wallTime` are skipped unread.
 */
export function decodeChange(fragments: readonly Uint8Array[]): ChangeEvent {
  const assembler = new SplitEventAssembler();
  let whole: Readonly<Record<string, unknown>> | undefined;
  for (const fragment of fragments)
    whole = assembler.add(decodeDocumentFields(fragment, CHANGE_EVENT_FIELDS));
  if (whole === undefined) {
    throw new MalformedChangeEventError(
      `a change event came in ${fragments.length} fragments without its last one`,
    );
  }
  const event = normalizeChangeEvent(whole);
  return fragments.length > 1 ? { ...event, split: true } : event;
}

/**
 * Asks whether a document has fields planning would add (`mapping.planned`), when the task says to check.
 * Nothing is asked of a mapping without planning or of a task that was evolved already.
 */
function evolutionCheck(
  mapping: MappingSpec,
  check: boolean,
): ((document: Readonly<Record<string, unknown>>) => boolean) | undefined {
  const planned = mapping.planned;
  if (!check || planned === undefined) return undefined;
  return (document) => planEvolution(planned, document).additions.length > 0;
}

/**
 * Decodes, maps and encodes a pull of raw change events (see ChangesTask), one change at a time: a change's
 * decoded event and row are garbage before the next one is decoded, so the young generation never holds a
 * whole pull of them and a scavenge copies next to nothing (decoding the pull first and mapping it after
 * cost a third more per change, in the collector). A document asking for evolution ends the task with
 * nothing encoded.
 */
export function encodeChanges(task: ChangesTask, configs: CompiledConfigs): ChangesResult {
  const documents = unpackDocuments(asBuffer(task.bytes));
  const asks = evolutionCheck(task.mapping, task.checkEvolution);
  const config = configs.get(task.configId, task.mapping, task.encoding);
  const now = new Date(task.nowMs);
  const rows = new RowCollector();
  const changes: ChangeSummary[] = [];
  let next = 0;
  for (const count of task.fragments) {
    const event = decodeChange(documents.slice(next, next + count));
    next += count;
    if (asks !== undefined && event.kind === 'upsert' && asks(event.document)) {
      return { kind: 'changes', evolve: true, changes: [], rows: new RowCollector().finish() };
    }
    let row = -1;
    if (isWritable(event)) {
      const record = changeRecord(config.mapper, event, now);
      row = rows.add(record.eventId, record.docId, config.encode(record.row()));
    }
    changes.push({
      kind: event.kind,
      operationType: operationTypeOf(event),
      token: event.token,
      clusterTime: event.clusterTime,
      split: event.split === true,
      row,
    });
  }
  if (next !== documents.length) throw new Error('a change task holds documents its fragment counts omit');
  return { kind: 'changes', evolve: false, changes, rows: rows.finish() };
}

/** Decodes, maps and encodes the documents of a backfill chunk (see DocumentsTask), one at a time. */
export function encodeDocuments(task: DocumentsTask, configs: CompiledConfigs): DocumentsResult {
  const asks = evolutionCheck(task.mapping, task.checkEvolution);
  const config = configs.get(task.configId, task.mapping, task.encoding);
  const now = new Date(task.nowMs);
  const rows = new RowCollector();
  for (const bytes of unpackDocuments(asBuffer(task.bytes))) {
    const document = decodeDocument(bytes);
    if (asks?.(document) === true) {
      return { kind: 'documents', evolve: true, rows: new RowCollector().finish() };
    }
    const record = backfillRecord(config.mapper, document, task.snapshotStart, now);
    rows.add(record.eventId, record.docId, config.encode(record.row()));
  }
  return { kind: 'documents', evolve: false, rows: rows.finish() };
}

/** Runs either task (what a worker thread does with each). */
export function runEncodeTask(task: EncodeTask, configs: CompiledConfigs): EncodeResult {
  switch (task.kind) {
    case 'changes':
      return encodeChanges(task, configs);
    case 'documents':
      return encodeDocuments(task, configs);
    default:
      return task satisfies never;
  }
}

/** The buffers of a task, to transfer rather than copy. */
export function taskTransferables(task: EncodeTask): ArrayBuffer[] {
  return task.kind === 'changes' ? [task.bytes.buffer, task.fragments.buffer] : [task.bytes.buffer];
}

/** The buffers of a result, to transfer rather than copy. */
export function resultTransferables(result: EncodeResult): ArrayBuffer[] {
  const { rows } = result;
  return [
    rows.text.buffer,
    rows.textEnds.buffer,
    rows.nullDocIds.buffer,
    rows.sizes.buffer,
    rows.bytes.buffer,
    rows.byteEnds.buffer,
    rows.encoded.buffer,
    rows.schemas.buffer,
  ];
}

/** Rows as they are encoded, packed into EncodedRows at the end (one copy, into buffers of their own). */
class RowCollector {
  readonly #ids: string[] = [];
  readonly #nullDocIds: number[] = [];
  readonly #rows: RowBytes[] = [];

  /** Adds a row; returns its index. */
  add(eventId: string, docId: string | null, encoded: RowBytes): number {
    this.#ids.push(eventId, docId ?? '');
    this.#nullDocIds.push(docId === null ? 1 : 0);
    this.#rows.push(encoded);
    return this.#rows.length - 1;
  }

  finish(): EncodedRows {
    const count = this.#rows.length;
    // Typed arrays made here own their ArrayBuffers (never Node's shared pool), so they can be transferred.
    const textEnds = new Uint32Array(this.#ids.length);
    let textLength = 0;
    this.#ids.forEach((id, k) => {
      textLength += Buffer.byteLength(id, 'utf8');
      textEnds[k] = textLength;
    });
    const text = new Uint8Array(textLength);
    const textView = Buffer.from(text.buffer, 0, textLength);
    let at = 0;
    for (const id of this.#ids) at += textView.write(id, at, 'utf8');

    const sizes = new Uint32Array(count);
    const byteEnds = new Uint32Array(count);
    const encoded = new Uint8Array(count);
    const schemas = new Uint8Array(count);
    const bytes = new Uint8Array(this.#rows.reduce((n, row) => n + (row.bytes?.length ?? 0), 0));
    let end = 0;
    this.#rows.forEach((row, k) => {
      sizes[k] = row.size;
      if (row.bytes !== undefined) {
        bytes.set(row.bytes, end);
        end += row.bytes.length;
        encoded[k] = 1;
      }
      if (row.schema !== undefined) {
        schemas[k] = ROW_SCHEMAS.indexOf(row.schema);
      }
      byteEnds[k] = end;
    });
    return {
      count,
      text,
      textEnds,
      nullDocIds: Uint8Array.from(this.#nullDocIds),
      sizes,
      bytes,
      byteEnds,
      encoded,
      schemas,
    };
  }
}

/** Reads row k of EncodedRows back. */
export class EncodedRowsReader {
  readonly #rows: EncodedRows;
  readonly #text: Buffer;

  constructor(rows: EncodedRows) {
    this.#rows = rows;
    this.#text = Buffer.from(rows.text.buffer, rows.text.byteOffset, rows.text.byteLength);
  }

  get count(): number {
    return this.#rows.count;
  }

  eventId(k: number): string {
    const ends = this.#rows.textEnds;
    return this.#text.toString('utf8', k === 0 ? 0 : (ends[2 * k - 1] ?? 0), ends[2 * k] ?? 0);
  }

  docId(k: number): string | null {
    if (this.#rows.nullDocIds[k] === 1) return null;
    const ends = this.#rows.textEnds;
    return this.#text.toString('utf8', ends[2 * k] ?? 0, ends[2 * k + 1] ?? 0);
  }

  size(k: number): number {
    return this.#rows.sizes[k] ?? 0;
  }

  /** Which schema of the spec the row was encoded with. */
  schema(k: number): RowSchema {
    return ROW_SCHEMAS[this.#rows.schemas[k] ?? 0] ?? 'schema';
  }

  /** The row's bytes (a view into the batch's buffer); undefined when a value did not fit its column. */
  bytes(k: number): Uint8Array | undefined {
    const rows = this.#rows;
    if (rows.encoded[k] !== 1) return undefined;
    return rows.bytes.subarray(k === 0 ? 0 : (rows.byteEnds[k - 1] ?? 0), rows.byteEnds[k] ?? 0);
  }
}
