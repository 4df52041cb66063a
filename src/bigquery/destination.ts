import { type BackoffPolicy } from '../core/backoff.js';
import { type BatchLimits } from '../core/batcher.js';
import { type HistoryRecord } from '../core/history-rows.js';
import { type RowEncoding } from '../core/prepared.js';
import { alignWithTable, missingFromTable } from '../schema/align.js';
import { METADATA_FIELDS } from '../schema/table-schema.js';
import { type ColumnAddition } from '../schema/evolve.js';
import { type ColumnSpec, type TableField } from '../schema/types.js';
import { type BigQueryClients } from './client.js';
import { InsertAllWriter } from './insert-all-writer.js';
import { BigQuerySink, type SinkObserver, type SinkResult } from './sink.js';
import {
  createStorageWriteWriter,
  storageWriteSupport,
  type StorageWriteTarget,
} from './storage-write-writer.js';
import { TableAdmin, type ExistingField } from './table-admin.js';
import { viewNames } from './views.js';
import { type WriterKind } from '../core/settings.js';
import { SerialQueue, WriterGate } from './writer-gate.js';
import { type EncodedRow, type HistoryRow, type TableWriter } from './writer.js';

export interface DestinationOptions {
  readonly clients: BigQueryClients;
  readonly datasetId: string;
  readonly table: string;
  readonly mappingId: string;
  /** Preferred writer; Storage Write falls back to insertAll for tables the target cannot take that way. */
  readonly writer: WriterKind;
  /** `bigquery`, or the emulator in use (whose gaps decide the fallback). */
  readonly target: StorageWriteTarget;
  /**
   * Connections to the default stream of a Storage Write writer (default DEFAULT_STORAGE_WRITE_CONNECTIONS);
   * see docs/bigquery.md for when to raise it.
   */
  readonly storageWriteConnections?: number;
  /**
   * How long a Storage Write connection may stay idle before it is closed (reopened by the next rows);
   * the writer's default, DEFAULT_WRITE_STREAM_IDLE_MS, when unset.
   */
  readonly storageWriteIdleMs?: number;
  /** Told +1 when a Storage Write connection opens and -1 when one closes (metrics). */
  readonly onStorageWriteConnectionOpenChange?: (delta: 1 | -1) => void;
  readonly limits?: BatchLimits;
  readonly backoff?: BackoffPolicy;
  /** How long rows refused for their schema wait after the repair (the sink's default when unset). */
  readonly schemaBackoff?: BackoffPolicy;
  readonly onRetry?: (error: unknown, attempt: number, delayMs: number) => void;
  /** Told of every batch BigQuery acknowledged and of dead-lettered rows (metrics). */
  readonly observer?: SinkObserver;
  /** Told when a writer is chosen, and why Storage Write was not. */
  readonly onWriterChosen?: (kind: WriterKind, reason: string | undefined) => void;
  /** Wraps every history-table writer made (see `WriterDecorator`); none in production. */
  readonly decorateWriter?: WriterDecorator;
}

/**
 * Wraps the writer of a history table, given the table's schema at the writer's creation: the composition
 * root's seam for tests that put a fault-injecting writer in front of the emulator (for example one that
 * shows a new column to writes only after a delay, as BigQuery does).
 */
export type WriterDecorator = (
  writer: TableWriter,
  table: { readonly datasetId: string; readonly tableId: string; readonly schema: readonly TableField[] },
) => TableWriter;

/** The table's schema as BigQuery reports it, in its column order (the Storage Write descriptor follows it). */
function asTableFields(fields: readonly ExistingField[]): TableField[] {
  return fields.map((f) => ({
    name: f.name,
    type: f.type as TableField['type'],
    mode: f.mode,
    ...(f.fields && { fields: asTableFields(f.fields) }),
  }));
}

/**
 * What the history table lacks of the columns and the metadata columns, at every depth (a RECORD the table
 * has may lack sub-fields), as additions for `TableAdmin.addColumns`.
 */
function historyAdditions(
  columns: readonly ColumnSpec[],
  fields: readonly ExistingField[],
): ColumnAddition[] {
  return missingFromTable([...columns, ...METADATA_FIELDS], fields);
}

/** Whether two schemas read from the table have the same fields (names, types, modes, at every depth). */
function sameFields(a: readonly ExistingField[], b: readonly ExistingField[]): boolean {
  const plain = (fields: readonly ExistingField[]): unknown =>
    fields.map((f) => [f.name, f.type, f.mode, plain(f.fields ?? [])]);
  return JSON.stringify(plain(a)) === JSON.stringify(plain(b));
}

/**
 * Everything one mapping needs in BigQuery: the dataset, the history table, its views and dead-letter table,
 * a writer of the configured kind, and the sink that batches, retries and dead-letters. Schema changes go
 * through `evolve`, which patches the table, regenerates the views and rebuilds the writer.
 *
 * Writes may run concurrently (several batches in flight, a backfill beside the stream). Schema changes
 * (`evolve`, and the repair the sink asks for) run one at a time, each starting from what the previous one
 * left, so that none computes its schema from a table read before another's patch; a writer rebuild pauses
 * sending, waits for the requests in flight, and resumes with the rebuilt writer.
 */
export class BigQueryDestination {
  readonly admin: TableAdmin;
  /**
   * Where the columns given to `open` differ from the existing table (a type changed in the settings, say):
   * one line each. `columns` follow the table there.
   */
  readonly schemaConflicts: readonly string[];
  readonly #gate: WriterGate;
  /** Evolutions and repairs, one at a time. */
  readonly #schemaChanges = new SerialQueue();
  readonly #sink: BigQuerySink;
  #columns: readonly ColumnSpec[];
  #tableFields: readonly ExistingField[];

  private constructor(
    private readonly options: DestinationOptions,
    admin: TableAdmin,
    writer: TableWriter,
    table: { columns: readonly ColumnSpec[]; fields: readonly ExistingField[]; conflicts: readonly string[] },
  ) {
    this.admin = admin;
    this.#gate = new WriterGate(writer);
    this.#columns = table.columns;
    this.#tableFields = table.fields;
    this.schemaConflicts = table.conflicts;
    this.#sink = this.#makeSink();
  }

  /**
   * Ensures dataset, history table, dead-letter table and views exist, then opens the writer. The table's
   * actual schema wins over `columns` where they differ (BigQuery cannot retype a column): `columns` of the
   * destination are the ones rows must be mapped with, and `schemaConflicts` says what differed.
   */
  static async open(
    options: DestinationOptions,
    wanted: readonly ColumnSpec[],
  ): Promise<BigQueryDestination> {
    const admin = new TableAdmin({
      bigquery: options.clients.bigquery,
      projectId: options.clients.projectId,
      datasetId: options.datasetId,
      ...(options.target !== 'bigquery' && {
        emulatorWorkarounds: {
          dropViewBeforeReplace: options.target === 'goccy-bigquery-emulator',
          oneColumnPerAlter: true,
        },
      }),
    });
    // Introspect, diff, apply (the same diff `plan` prints). A table from before (the original service's,
    // an earlier run's, or one edited by hand) lacking columns or RECORD sub-fields gets them added.
    const { columns, conflicts, fields } = await admin.prepare(options.table, wanted);
    const writer = BigQueryDestination.#chooseWriter(options, asTableFields(fields));
    return new BigQueryDestination(options, admin, writer, { columns, fields, conflicts });
  }

  /** Which writer a table of this schema gets, and why not Storage Write when it was preferred. */
  static #writerKindFor(
    options: DestinationOptions,
    schema: readonly TableField[],
  ): { kind: WriterKind; reason: string | undefined } {
    if (options.writer !== 'storage-write') return { kind: 'insert-all', reason: undefined };
    const support = storageWriteSupport(schema, options.target);
    return support.supported
      ? { kind: 'storage-write', reason: undefined }
      : { kind: 'insert-all', reason: support.reason };
  }

  static #chooseWriter(options: DestinationOptions, schema: readonly TableField[]): TableWriter {
    const { kind, reason } = BigQueryDestination.#writerKindFor(options, schema);
    options.onWriterChosen?.(kind, reason);
    const writer =
      kind === 'storage-write'
        ? createStorageWriteWriter({
            clients: options.clients,
            datasetId: options.datasetId,
            tableId: options.table,
            schema,
            ...(options.storageWriteConnections !== undefined && {
              connections: options.storageWriteConnections,
            }),
            ...(options.storageWriteIdleMs !== undefined && { idleMs: options.storageWriteIdleMs }),
            ...(options.onStorageWriteConnectionOpenChange && {
              onConnectionOpenChange: options.onStorageWriteConnectionOpenChange,
            }),
          })
        : new InsertAllWriter(options.clients.bigquery.dataset(options.datasetId).table(options.table));
    return (
      options.decorateWriter?.(writer, { datasetId: options.datasetId, tableId: options.table, schema }) ??
      writer
    );
  }

  #makeSink(): BigQuerySink {
    const o = this.options;
    return new BigQuerySink({
      mappingId: o.mappingId,
      // The writer can change under a write in progress: a schema repair (called by the sink in the middle of
      // a batch) may switch its kind. The batch is then retried through the new writer, never the closed one.
      writer: this.#gate.writer,
      deadLetterWriter: new InsertAllWriter(
        o.clients.bigquery.dataset(o.datasetId).table(viewNames(o.table).errors),
        'event_id',
      ),
      onSchemaMismatch: () => this.#schemaChanges.run(() => this.#repairSchema()),
      encode: (row) => this.encode(row),
      ...(o.limits && { limits: o.limits }),
      ...(o.backoff && { backoff: o.backoff }),
      ...(o.schemaBackoff && { schemaBackoff: o.schemaBackoff }),
      ...(o.onRetry && { onRetry: o.onRetry }),
      ...(o.observer && { observer: o.observer }),
    });
  }

  get writerKind(): WriterKind {
    return this.#gate.current.kind;
  }

  get columns(): readonly ColumnSpec[] {
    return this.#columns;
  }

  /**
   * A row as the current writer sends it (and its size in its requests): what a batch holds until its
   * append. A writer that replaces this one meanwhile builds the row again to send it.
   */
  encode(row: HistoryRow): EncodedRow {
    return this.#gate.encode(row);
  }

  /**
   * How the current writer encodes rows, for worker threads (see RowEncoding); it changes with the writer
   * and its schema, and bytes a worker encoded with an older one are encoded again when they are sent.
   */
  rowEncoding(): RowEncoding {
    return this.#gate.rowEncoding();
  }

  write(records: readonly HistoryRecord[], signal?: AbortSignal): Promise<SinkResult> {
    return this.#sink.write(records, signal);
  }

  /**
   * Evolves the table towards `planned` (the columns plus the additions `planEvolution` found), starting
   * from the table's actual schema: a planned column the table already has (removed from the settings
   * since, added just before a crash lost the saved columns, or of a type the archiver cannot write) is
   * taken with the table's type and mode, or left out, and only what the table lacks is added (patch,
   * views). Returns the columns rows must now be mapped with.
   *
   * The schema last read is asked first: a planned field it settles costs no request (a field the table
   * holds as GEOGRAPHY, say, whose values go to `_unmapped`). Only when it
   * lacks something is the table read again, since another owner (a lease handover) or a manual ALTER may
   * have added it; whenever that read shows a schema other than the writer's, the writer gets it, additions
   * or not, or the new column's values would be written with a schema that lacks them.
   *
   * Concurrent calls (and repairs) run one after the other: each starts from the schema the previous one
   * left, so none undoes another's additions in the writer.
   */
  evolve(planned: readonly ColumnSpec[]): Promise<readonly ColumnSpec[]> {
    return this.#schemaChanges.run(() => this.#evolve(planned));
  }

  async #evolve(planned: readonly ColumnSpec[]): Promise<readonly ColumnSpec[]> {
    let fields = this.#tableFields;
    let { columns } = alignWithTable(planned, fields);
    if (missingFromTable(columns, fields).length > 0) {
      fields = (await this.admin.historyTableFields(this.options.table)) ?? fields;
      ({ columns } = alignWithTable(planned, fields));
      const additions = missingFromTable(columns, fields);
      if (additions.length > 0) {
        fields = (await this.admin.addColumns(this.options.table, { columns, additions })).fields;
      }
      if (!sameFields(fields, this.#tableFields)) {
        this.#tableFields = fields;
        await this.#replaceWriter(asTableFields(fields));
      }
    }
    this.#columns = columns;
    return columns;
  }

  /**
   * BigQuery said a column is missing: add whatever the columns expect and the table lacks (RECORD
   * sub-fields included), and give the writer the table's schema.
   */
  async #repairSchema(): Promise<void> {
    const state = await this.admin.ensureHistoryTable(this.options.table, this.#columns);
    let fields = state.fields;
    const additions = historyAdditions(this.#columns, fields);
    if (additions.length > 0) {
      fields = (await this.admin.addColumns(this.options.table, { columns: this.#columns, additions }))
        .fields;
    }
    this.#tableFields = fields;
    await this.#replaceWriter(asTableFields(fields));
  }

  /**
   * Gives the writer the table's schema: sending pauses, the requests in flight are answered, then the writer
   * is rebuilt (or replaced by one of the other kind, the old one closed) and sending resumes with it.
   */
  async #replaceWriter(schema: readonly TableField[]): Promise<void> {
    await this.#gate.rebuild(async (current) => {
      if (BigQueryDestination.#writerKindFor(this.options, schema).kind === current.kind) {
        await current.updateSchema(schema);
        return current;
      }
      const next = BigQueryDestination.#chooseWriter(this.options, schema);
      await current.close();
      return next;
    });
  }

  /** Closes the writer once the schema change under way (if any) is over, so that it closes the last one. */
  async close(): Promise<void> {
    await this.#schemaChanges.run(() => this.#gate.current.close());
  }
}
