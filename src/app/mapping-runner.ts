import { type Collection, type Document, type MongoClient } from 'mongodb';
import { type BigQueryClients } from '../bigquery/client.js';
import { BigQueryDestination, type WriterDecorator } from '../bigquery/destination.js';
import { type SinkResult } from '../bigquery/sink.js';
import { viewNames } from '../bigquery/views.js';
import { type StorageWriteTarget } from '../bigquery/storage-write-writer.js';
import { type BootstrapConfig } from '../config/bootstrap.js';
import { type MappingSettings } from '../core/settings.js';
import { DEFAULT_BATCH_LIMITS, type BatchLimits } from '../core/batcher.js';
import {
  DEFAULT_CHECKPOINT_SAVE_TIMEOUT_MS,
  within,
  DEFAULT_FINAL_FLUSH_TIMEOUT_MS,
  deadlineAfter,
} from '../core/deadline.js';
import { backfillRecord, type HistoryRecord } from '../core/history-rows.js';
import { type Position } from '../core/model.js';

import {
  type BackfillProgress,
  type Checkpoint,
  type CheckpointStore,
  type SettingsStore,
  type StreamStart,
} from '../core/ports.js';
import { resumeFrom, rowBytes, runStreamLoop, type RecordSink } from '../core/stream-loop.js';
import { type MappingHooks, type MappingRunner } from '../core/supervisor.js';
import { dispositionOf, errorMessage } from '../errors.js';
import { HistoryLostError, MongoChangeSource } from '../mongodb/change-source.js';
import { decodeId, encodeId, MongoCheckpointStore } from '../mongodb/checkpoint-store.js';
import { DEFAULT_BACKFILL_CHUNK, SnapshotReader } from '../mongodb/snapshot-reader.js';
import { mappingLogger, type Logger } from '../observability/logger.js';
import { type Metrics } from '../observability/metrics.js';
import { inferColumns } from '../schema/infer.js';
import { type ColumnSpec } from '../schema/types.js';
import { compileRowMapper, type RowMapper } from '../transform/row-mapper.js';
import { MappingMetrics } from './mapping-metrics.js';
import { SchemaEvolution } from './schema-evolution.js';

export const DEFAULT_INFER_SAMPLE = 1_000;

/** Draws a bounded sample of a collection for schema inference (never a full scan). */
export type Sampler = (
  collection: Collection,
  maxSamples: number,
  signal: AbortSignal,
) => Promise<readonly Document[]>;

export interface MappingRunnerDeps {
  readonly mongo: MongoClient;
  /** Undefined when every mapping is a dry run: then nothing may touch BigQuery. */
  readonly bigquery: BigQueryClients | undefined;
  readonly target: StorageWriteTarget;
  readonly config: BootstrapConfig;
  readonly store: SettingsStore;
  /** The settings collection (it still receives `lastChangeId`, and held the previous release's checkpoints). */
  readonly settingsCollection: Collection;
  /** Where the checkpoints are kept (see MongoCheckpointStore). */
  readonly checkpointsCollection: Collection;
  readonly sample: Sampler;
  readonly logger: Logger;
  readonly metrics?: Metrics;
  readonly limits?: BatchLimits;
  readonly backfillChunk?: number;
  /** Wraps the history-table writers (tests inject faults here); none in production. */
  readonly decorateWriter?: WriterDecorator;
}

/** A dry run writes nothing and saves no checkpoint: switching it off must start from the real position. */
const NO_CHECKPOINTS: CheckpointStore = {
  load: () => Promise.resolve({ position: undefined }),
  save: () => Promise.resolve(),
};

function dryRunSink(log: Logger): RecordSink {
  let logged = 0;
  return {
    write(records) {
      const first = records[0];
      if (first && logged < 5) {
        logged++;
        log.info({ rows: records.length, example: first.row() }, 'dry run: would write rows');
      } else {
        log.debug({ rows: records.length }, 'dry run: would write rows');
      }
      return Promise.resolve({ written: records.length, deadLettered: 0 });
    },
  };
}

/** Runs mappings: schema, BigQuery objects, backfill, then the change stream (DESIGN sections 5 to 7). */
export function createMappingRunner(deps: MappingRunnerDeps): MappingRunner {
  return async (settings, signal, hooks) => {
    const log = mappingLogger(deps.logger, {
      mapping: settings.id,
      database: settings.mongoDatabase,
      collection: settings.mongoCollection,
      table: settings.bigqueryTable,
    });
    const metrics = deps.metrics && new MappingMetrics(deps.metrics, settings.id);
    try {
      await new MappingRun(deps, settings, hooks, log, metrics).run(signal);
    } catch (error) {
      // What the supervisor restarts or stops the mapping on; an abort is a stop, not a failure.
      if (!signal.aborted) metrics?.failed(error);
      throw error;
    }
  };
}

class MappingRun {
  #columns: readonly ColumnSpec[] = [];
  /** Inferred in this run and not written to the settings yet. */
  #columnsUnsaved = false;
  #mapper: RowMapper = compileRowMapper([]);
  readonly #evolution = new SchemaEvolution([]);
  #destination: BigQueryDestination | undefined;
  #sink: RecordSink;
  readonly #checkpoints: CheckpointStore;
  readonly #collection: Collection;
  readonly #source: MongoChangeSource;

  constructor(
    private readonly deps: MappingRunnerDeps,
    private readonly settings: MappingSettings,
    private readonly hooks: MappingHooks,
    private readonly log: Logger,
    private readonly metrics: MappingMetrics | undefined,
  ) {
    this.#collection = deps.mongo.db(settings.mongoDatabase).collection(settings.mongoCollection);
    this.#source = new MongoChangeSource(deps.mongo, this.#collection, {
      onNotice: (message) => {
        log.warn(message);
      },
    });
    const dataset = settings.bigqueryDataset ?? deps.config.BIGQUERY_DATASET;
    // A checkpoint belongs to its source and its target (change either and it starts over), and to the
    // latest resync request it served (the store keeps that state, and starts over for a newer request).
    // Every checkpoint write carries the lease's fencing token: refused once another instance took over.
    const checkpoints = new MongoCheckpointStore({
      checkpoints: deps.checkpointsCollection,
      settings: deps.settingsCollection,
      settingsId: settings.documentId,
      scope: `${settings.mongoDatabase}.${settings.mongoCollection} -> ${dataset}.${settings.bigqueryTable}`,
      resyncRequestedAt: settings.resyncRequestedAt,
      ...(hooks.fence !== undefined && { fence: hooks.fence }),
    });
    this.#checkpoints = settings.dryrun
      ? NO_CHECKPOINTS
      : (metrics?.observeCheckpoints(checkpoints) ?? checkpoints);
    this.#sink = dryRunSink(log);
  }

  async run(signal: AbortSignal): Promise<void> {
    await this.#prepareSchema(signal);
    try {
      await this.#prepareDestination();
      let checkpoint = await this.#checkpoints.load(signal);
      const wantsBackfill = this.settings.backfillFullCollection || checkpoint.resync === true;
      // A backfill under way is finished whatever started it (a resync, a new snapshot after a lost
      // history): the documents it has not copied yet would be missing from the views otherwise.
      if (checkpoint.backfill ? !checkpoint.backfill.done : wantsBackfill) {
        checkpoint = {
          position: checkpoint.position,
          backfill: await this.#backfill(checkpoint.backfill, checkpoint.position, signal),
        };
      }
      let start: StreamStart = checkpoint.position
        ? resumeFrom(checkpoint.position)
        : {
            kind: 'startAt',
            clusterTime: checkpoint.backfill?.snapshotStart ?? (await this.#source.currentTime(signal)),
          };
      this.hooks.report({ state: this.settings.dryrun ? 'dryrun' : 'streaming' });
      for (;;) {
        let end;
        try {
          end = await runStreamLoop(
            {
              source: this.#source,
              sink: this.#sink,
              encode: (row) => this.#destination?.encode(row) ?? { size: rowBytes(row) },
              checkpoints: this.#checkpoints,
              mapper: () => this.#mapper,
              limits: this.deps.limits ?? DEFAULT_BATCH_LIMITS,
              beforeMap: (events, s) =>
                this.#evolve(
                  events.flatMap((e) => (e.kind === 'upsert' ? [e.document] : [])),
                  s,
                ),
              ...(this.metrics && { observer: this.metrics }),
            },
            start,
            signal,
          );
        } catch (error) {
          if (dispositionOf(error) !== 'history-lost' || !(error instanceof Error)) throw error;
          if (this.settings.onHistoryLost !== 'resnapshot') {
            throw new HistoryLostError(
              `${error.message}. Set on_history_lost: resnapshot in the settings document (or run ` +
                `\`mongo-bigquery-archiver resync ${this.settings.id}\`) to copy the collection again; the views converge.`,
              { cause: error },
            );
          }
          this.log.warn('change stream history lost; taking a new snapshot (on_history_lost: resnapshot)');
          // The lost position goes: the new backfill's first checkpoint replaces it.
          const progress = await this.#backfill(undefined, undefined, signal);
          start = { kind: 'startAt', clusterTime: progress.snapshotStart };
          continue;
        }
        if (!end) return;
        this.log.warn(
          { position: end.position.clusterTime },
          'collection dropped, renamed or invalidated; archiving continues when it is re-created',
        );
        start = { kind: 'startAfter', position: end.position };
      }
    } finally {
      await this.#destination?.close();
    }
  }

  /** The columns from the settings, or inferred from a sample (saved once the table is in line with them). */
  async #prepareSchema(signal: AbortSignal): Promise<void> {
    let columns = this.settings.columns;
    if (columns === undefined) {
      const sample = await this.deps.sample(this.#collection, DEFAULT_INFER_SAMPLE, signal);
      columns = await inferColumns(sample);
      this.#columnsUnsaved = true;
      this.log.info(
        { columns: columns.length, sampled: sample.length },
        'inferred the columns from a sample',
      );
      if (this.settings.dryrun) {
        this.log.info({ columns }, 'dry run: would create the table with these columns');
      }
    }
    this.#setColumns(columns);
  }

  async #saveColumns(columns: readonly ColumnSpec[]): Promise<void> {
    if (this.settings.dryrun) return;
    this.hooks.columnsSaved(columns);
    await this.deps.store.saveColumns(
      this.settings.id,
      columns,
      this.hooks.fence,
      this.settings.columnsOrigin,
    );
    this.#columnsUnsaved = false;
  }

  /**
   * The table's actual schema wins over the columns (BigQuery cannot retype a column): rows are mapped with
   * the table's types. Inferred columns are saved as the table has them. Declared columns stay as the user
   * wrote them, and `lastFailure` says where they differ from the table and what to do.
   */
  async #adoptTableSchema(destination: BigQueryDestination): Promise<void> {
    const conflicts = destination.schemaConflicts;
    const columns = destination.columns;
    if (conflicts.length > 0) {
      this.log.warn(
        { conflicts },
        'the columns differ from the existing table; writing with the table types',
      );
    }
    if (this.settings.columnsOrigin === 'inferred') {
      if (this.#columnsUnsaved || columns !== this.#columns) await this.#saveColumns(columns);
    } else if (conflicts.length > 0) {
      await this.deps.store.reportFailure(
        this.settings.id,
        `columns differ from table ${this.settings.bigqueryTable}: ${conflicts.join('; ')}. BigQuery cannot ` +
          `change a column's type in place, so rows are written with the table's types (values that do not ` +
          `fit go to _unmapped). To archive with the new types, set a new bigquery_table.`,
        this.hooks.fence,
      );
    }
    this.#setColumns(columns);
  }

  #setColumns(columns: readonly ColumnSpec[]): void {
    this.#columns = columns;
    this.#evolution.reset(columns);
    this.#mapper = compileRowMapper(columns, { captureUnmapped: this.settings.captureUnmapped });
  }

  async #prepareDestination(): Promise<void> {
    if (this.settings.dryrun) return;
    const clients = this.deps.bigquery;
    if (!clients) throw new Error('BigQuery clients are missing although the mapping is not a dry run');
    this.#destination = await BigQueryDestination.open(
      {
        clients,
        datasetId: this.settings.bigqueryDataset ?? this.deps.config.BIGQUERY_DATASET,
        table: this.settings.bigqueryTable,
        mappingId: this.settings.id,
        writer: this.settings.writer ?? this.deps.config.BIGQUERY_WRITER,
        target: this.deps.target,
        ...(this.deps.limits && { limits: this.deps.limits }),
        ...(this.deps.decorateWriter && { decorateWriter: this.deps.decorateWriter }),
        onRetry: (error, attempt, delayMs) => {
          this.metrics?.retried(error);
          this.log.warn({ error: errorMessage(error), attempt, delayMs }, 'BigQuery write failed; retrying');
        },
        ...(this.metrics && { observer: this.metrics }),
        onWriterChosen: (kind, reason) => {
          this.log.info({ writer: kind, ...(reason && { reason }) }, 'writer chosen');
        },
      },
      this.#columns,
    );
    const destination = this.#destination;
    await this.#adoptTableSchema(destination);
    this.#sink = {
      write: async (records, signal) => {
        const result = await destination.write(records, signal);
        if (result.deadLettered > 0) await this.#reportDeadLetters(result);
        return result;
      },
    };
  }

  /**
   * Rows BigQuery refused are in the dead-letter table and the pipeline goes on; `lastFailure` and a warning
   * say how many, why, and where to find them.
   */
  async #reportDeadLetters(result: SinkResult): Promise<void> {
    const table = viewNames(this.settings.bigqueryTable).errors;
    const message =
      `${result.deadLettered} row(s) refused by BigQuery were written to ${table} ` +
      `(${new Date().toISOString()}): ${result.reasons.join('; ')}`;
    this.log.warn(
      { rows: result.deadLettered, reasons: result.reasons, table },
      'rows went to the dead-letter table',
    );
    await this.deps.store.reportFailure(this.settings.id, message, this.hooks.fence);
  }

  /** Schema evolution (`add_columns`): new fields become new columns before their rows are written. */
  async #evolve(
    documents: readonly Readonly<Record<string, unknown>>[],
    _signal: AbortSignal,
  ): Promise<void> {
    if (this.settings.schemaEvolution !== 'add_columns' || documents.length === 0) return;
    const change = await this.#evolution.apply(documents, this.#destination);
    if (!change) return;
    this.log.info({ added: change.added }, 'schema evolved: new columns');
    this.#setColumns(change.columns);
    await this.#saveColumns(change.columns);
  }

  /**
   * Records the start point first, copies in `_id` chunks, and saves progress after each flushed chunk.
   * `position` is where the stream continues afterwards (undefined: from the snapshot's start); every
   * backfill checkpoint carries it, and so replaces whatever position was saved before.
   */
  async #backfill(
    resume: BackfillProgress | undefined,
    position: Position | undefined,
    signal: AbortSignal,
  ): Promise<BackfillProgress> {
    const checkpointOf = (backfill: BackfillProgress): Checkpoint => ({ position, backfill });
    const reader = new SnapshotReader(this.#collection, this.deps.backfillChunk ?? DEFAULT_BACKFILL_CHUNK);
    let progress: BackfillProgress = resume ?? {
      snapshotStart: await this.#source.currentTime(signal),
      lastId: undefined,
      copied: 0,
      done: false,
    };
    if (!resume) await this.#checkpoints.save(checkpointOf(progress), signal);
    const estimated = await reader.estimatedCount();
    this.metrics?.backfillStarted(estimated);
    this.hooks.report({ state: 'backfilling', backfillCopied: progress.copied });
    this.log.info(
      { estimated, resumeAfter: progress.lastId },
      resume ? 'resuming the backfill' : 'backfill started',
    );
    // A stop ends the reading at once, but the chunk in hand is still written and its progress saved (like
    // the stream loop's final flush), within a deadline that starts with the stop: otherwise the next owner
    // copies it again.
    const flushing = deadlineAfter(signal, DEFAULT_FINAL_FLUSH_TIMEOUT_MS);
    try {
      for (;;) {
        const chunk = await reader.nextChunk(
          progress.lastId === undefined ? undefined : decodeId(progress.lastId),
          signal,
        );
        const last = chunk.at(-1);
        if (!last) break;
        await this.#evolve(chunk, flushing.signal);
        const now = new Date();
        const records: HistoryRecord[] = chunk.map((doc) =>
          backfillRecord(this.#mapper, doc, progress.snapshotStart, now),
        );
        await this.#sink.write(records, flushing.signal);
        progress = { ...progress, lastId: encodeId(last._id), copied: progress.copied + chunk.length };
        await this.#checkpoints.save(
          checkpointOf(progress),
          within(flushing.signal, DEFAULT_CHECKPOINT_SAVE_TIMEOUT_MS),
        );
        this.metrics?.backfillCopied(chunk.length);
        this.hooks.report({ state: 'backfilling', backfillCopied: progress.copied });
        signal.throwIfAborted();
      }
    } catch (error) {
      // The deadline says more than the sink's or the store's reaction to it.
      if (flushing.signal.aborted) throw flushing.signal.reason;
      throw error;
    } finally {
      flushing.dispose();
    }
    progress = { ...progress, done: true };
    await this.#checkpoints.save(checkpointOf(progress), signal);
    this.log.info({ copied: progress.copied }, 'backfill done');
    return progress;
  }
}
