import { type Collection, type Document, type MongoClient } from 'mongodb';
import { type BigQueryClients } from '../bigquery/client.js';
import { BigQueryDestination, type WriterDecorator } from '../bigquery/destination.js';
import { type SinkResult } from '../bigquery/sink.js';
import { viewNames } from '../bigquery/views.js';
import { type StorageWriteTarget } from '../bigquery/storage-write-writer.js';
import { windowLimits, type BootstrapConfig } from '../config/bootstrap.js';
import { DEFAULT_BACKFILL_PARALLELISM, type MappingSettings } from '../core/settings.js';
import { DEFAULT_BATCH_LIMITS, type BatchLimits } from '../core/batcher.js';
import {
  type BackfillCheckpointStore,
  type BackfillProgress,
  type ChangeSource,
  type RawChangeBatch,
  type SettingsStore,
  type StreamStart,
} from '../core/ports.js';
import { type ChangeEvent, type Position } from '../core/model.js';
import { type HistoryRow } from '../core/history-rows.js';
import { type Slot, type Slots } from '../core/slots.js';
import { prepareInThread, resumeFrom, rowBytes, type RecordSink } from '../core/stream-loop.js';
import { type RowEncoding } from '../core/prepared.js';
import { type MappingHooks, type MappingRunner } from '../core/supervisor.js';
import { dispositionOf } from '../errors.js';
import { HistoryLostError, MongoChangeSource } from '../mongodb/change-source.js';
import { MongoCheckpointStore, recordVerification } from '../mongodb/checkpoint-store.js';
import { docIdValue, MongoExistingIds } from '../mongodb/existing-ids.js';
import { type MappingVerifier, type ViewReader } from '../core/verify-model.js';
import { MongoRawChangeSource } from '../mongodb/raw-change-source.js';
import {
  prepareChanges,
  prepareDocuments,
  type EncoderPool,
  type PrepareContext,
} from '../workers/prepare.js';
import { prepareRawInThread } from '../workers/in-thread.js';
import { DEFAULT_BACKFILL_CHUNK, MongoSnapshotSource } from '../mongodb/snapshot-reader.js';
import { mappingLogger, type Logger } from '../observability/logger.js';
import { type Metrics } from '../observability/metrics.js';
import { inferColumns } from '../schema/infer.js';
import { type ColumnSpec } from '../schema/types.js';
import { runBackfill } from './backfill-role.js';
import { beginRepair, keepServing, runRepair } from './repair-role.js';
import { verificationSummary } from './background-verifier.js';
import { chooseRawStream, type DatabaseStreams } from './database-streams.js';
import { runRoles, type Role } from './roles.js';
import { MappingMetrics } from './mapping-metrics.js';
import { InferredColumns } from './inferred-columns.js';
import { DIGEST_GAPS_MESSAGE, digestGaps } from './digest-gaps.js';
import { logPlan } from './plan.js';
import { abortable } from '../core/deadline.js';
import { collectionSize } from '../mongodb/collection-size.js';
import { SchemaCoordinator } from './schema-coordinator.js';
import { runStream } from './stream-role.js';

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
  /** Wraps the change source (tests inject a shorter oplog window here); none in production. */
  readonly decorateChangeSource?: ChangeSourceDecorator;
  /**
   * The daemon's worker threads (WORKER_THREADS), shared by every mapping: with them, changes are read raw
   * and decoded, mapped and encoded there, and so are the backfill's documents. Undefined: all on this thread.
   */
  readonly encoderPool?: EncoderPool;
  /**
   * Why change streams cannot be read raw on this deployment (see rawChangeStreamsUnavailable), if so: then
   * the stream is read decoded on this thread even with worker threads (the backfill still uses them).
   */
  readonly rawChangeStreamsUnavailable?: string;
  /** Wraps the history-table writers (tests inject faults here); none in production. */
  readonly decorateWriter?: WriterDecorator;
  /**
   * The daemon's shared change streams, one per source database (CHANGE_STREAM_SCOPE `database`): a mapping
   * reads its share of its database's stream where it is shared and the server allows it. Undefined: every
   * mapping reads its own stream.
   */
  readonly databaseStreams?: DatabaseStreams;
  /**
   * The daemon's slots for preparing tables (MAX_MAPPINGS_PREPARING), shared by every mapping and held only
   * while preparing; without them nothing waits.
   */
  readonly preparing?: Slots;
  /**
   * The daemon's slots for backfill copies (as many as `preparing`), held for a whole copy: apart from
   * `preparing`, so that copies hours long never keep other mappings, or restarts, from preparing and
   * streaming. Without them copies do not wait.
   */
  readonly copying?: Slots;
  /**
   * The reader of a mapping's `<table>_view` (the BigQuery side of verify and repair): a repair's delete
   * pass asks it which ids the view has in a range. Without it, repair requests wait (a warning says so).
   */
  readonly viewReader?: (settings: MappingSettings, columns: readonly ColumnSpec[]) => ViewReader;
  /**
   * The verifier of a mapping (collection against view), for `on_history_lost: repair`: without it, that
   * policy fails as `fail` does, saying why.
   */
  readonly verifier?: (settings: MappingSettings) => MappingVerifier;
  /** How long a dry-run mapping waits for its plan before it starts (DEFAULT_DRYRUN_PLAN_TIMEOUT_MS). */
  readonly planTimeoutMs?: number;
}

/**
 * How long a dry-run mapping's start waits for its plan: the plan reads BigQuery and a sample of the
 * collection, and either may hang (a half-open connection); past this the mapping starts without it.
 */
export const DEFAULT_DRYRUN_PLAN_TIMEOUT_MS = 60_000;

/**
 * Wraps a change source, decoded or raw (tests put a shorter oplog window in front of MongoDB): whatever
 * its pulls are, they have a position.
 */
export type ChangeSourceDecorator = <B extends { readonly position: Position | undefined }>(
  source: ChangeSource<B>,
) => ChangeSource<B>;

/**
 * The encoding of rows nothing will send (a dry run has no writer): their size only, so batches are cut as
 * they would be.
 */
const SIZE_ONLY: RowEncoding = {
  spec: { format: 'insert-all', idColumn: '_event_id' },
  wrap: (_bytes, size) => ({ size }),
};

/** A dry run writes nothing and saves no checkpoint: switching it off must start from the real position. */
const NO_CHECKPOINTS: BackfillCheckpointStore = {
  load: () => Promise.resolve({ position: undefined }),
  save: () => Promise.resolve(),
  saveBackfill: () => Promise.resolve(),
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

/**
 * Runs mappings: schema, BigQuery objects, then the backfill and the change stream side by side
 * (docs/architecture.md, "The mapping run").
 */
export function createMappingRunner(deps: MappingRunnerDeps): MappingRunner & ForgetsMappings {
  const inferred = new InferredColumns();
  /** Dry-run configurations whose plan was logged (`<id>\n<configurationKey>`): once each, not per restart. */
  const planned = new Set<string>();
  /** Configurations warned of what verification cannot see (`digestGaps`): once each, not per restart. */
  const warnedGaps = new Set<string>();
  const run: MappingRunner = async (settings, signal, hooks) => {
    const log = mappingLogger(deps.logger, {
      mapping: settings.id,
      database: settings.mongoDatabase,
      collection: settings.mongoCollection,
      table: settings.bigqueryTable,
    });
    const metrics = deps.metrics && new MappingMetrics(deps.metrics, settings.id);
    const planKey = `${settings.id}\n${settings.configurationKey}`;
    const gaps = digestGaps(settings);
    if (gaps && !warnedGaps.has(planKey)) {
      warnedGaps.add(planKey);
      log.warn(gaps, DIGEST_GAPS_MESSAGE);
    }
    if (settings.dryrun && !planned.has(planKey)) {
      planned.add(planKey);
      const collection = deps.mongo.db(settings.mongoDatabase).collection(settings.mongoCollection);
      const deadline = AbortSignal.timeout(deps.planTimeoutMs ?? DEFAULT_DRYRUN_PLAN_TIMEOUT_MS);
      const plan = logPlan(
        settings,
        {
          bigquery: deps.bigquery,
          defaultDataset: deps.config.BIGQUERY_DATASET,
          sample: (max, s) => deps.sample(collection, max, s),
          size: () => collectionSize(collection),
          log,
        },
        AbortSignal.any([signal, deadline]),
      );
      // Not every read of the plan takes a signal (the size estimate): the wait is bounded here as well.
      await abortable(plan, deadline).catch(() => {
        log.warn(
          { timeoutMs: deps.planTimeoutMs ?? DEFAULT_DRYRUN_PLAN_TIMEOUT_MS },
          'dry run: the plan took too long; the mapping starts without it',
        );
      });
    }
    try {
      await new MappingRun(deps, settings, hooks, log, metrics, inferred).run(signal);
    } catch (error) {
      // What the supervisor restarts or stops the mapping on; an abort is a stop, not a failure.
      if (!signal.aborted) metrics?.failed(error);
      throw error;
    }
  };
  return Object.assign(run, {
    forget: (id: string) => {
      inferred.forget(id);
      for (const key of planned) if (key.startsWith(`${id}\n`)) planned.delete(key);
    },
  });
}

/** What the runner keeps of a mapping across its runs (inferred columns), dropped when it leaves this process. */
export interface ForgetsMappings {
  /**
   * The mapping no longer runs here (removed, handed over, lease lost): should it come back, it starts
   * afresh (samples its collection again) rather than from what this process kept of it long ago.
   */
  forget(id: string): void;
}

/** The roles of one run, and whether the backfill is among them. */
interface RunPlan {
  readonly start: StreamStart;
  /** The backfill under way (saved, at least its snapshot start), if one is owed. */
  readonly backfill: BackfillProgress | undefined;
}

/**
 * One run of a mapping: prepares the schema and the table, then runs its roles until it stops or fails. The
 * roles are the schema coordinator (every change of the columns, one at a time), the backfill (when one is
 * owed) and the stream, which runs from the moment the backfill's snapshot starts, alongside the copy: a
 * copy longer than the oplog window loses nothing, because the stream's position moves on as it goes.
 */
class MappingRun {
  #destination: BigQueryDestination | undefined;
  #sink: RecordSink;
  readonly #checkpoints: BackfillCheckpointStore;
  /** Where repair requests and progress are kept; undefined for a dry run (it repairs nothing). */
  readonly #repairs: MongoCheckpointStore | undefined;
  readonly #collection: Collection;
  readonly #source: ChangeSource;
  /**
   * The same stream read raw (undecorated), for worker threads or for catching up with the database's shared
   * stream; undefined when it is not read raw (see constructor).
   */
  readonly #rawSource: ChangeSource<RawChangeBatch> | undefined;
  /**
   * The preparation slot, held from the start of `#prepareSchema` to the end of `#prepareDestination` (`run`
   * calls one right after the other): inference and the table and view requests count as one preparation.
   */
  #preparing: Slot | undefined;

  constructor(
    private readonly deps: MappingRunnerDeps,
    private readonly settings: MappingSettings,
    private readonly hooks: MappingHooks,
    private readonly log: Logger,
    private readonly metrics: MappingMetrics | undefined,
    private readonly inferred: InferredColumns,
  ) {
    this.#collection = deps.mongo.db(settings.mongoDatabase).collection(settings.mongoCollection);
    const source = new MongoChangeSource(deps.mongo, this.#collection, {
      onNotice: (message) => {
        log.warn(message);
      },
    });
    this.#source = deps.decorateChangeSource?.(source) ?? source;
    // Read raw for the worker threads, or to share the database's stream (which the daemon allows only
    // where raw streams can be read); decorated once chosen (see #stream).
    const forWorkers = deps.encoderPool !== undefined && deps.rawChangeStreamsUnavailable === undefined;
    if (forWorkers || deps.databaseStreams?.shared === true) {
      this.#rawSource = new MongoRawChangeSource(deps.mongo, this.#collection, {
        onNotice: (message) => {
          log.warn(message);
        },
      });
    }
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
    this.#repairs = settings.dryrun ? undefined : checkpoints;
    this.#sink = dryRunSink(log);
  }

  async run(signal: AbortSignal): Promise<void> {
    const schema = await this.#prepareSchema(signal);
    try {
      await this.#prepareDestination(schema);
      const checkpoint = await this.#checkpoints.load(signal);
      const wantsBackfill = this.settings.backfillFullCollection || checkpoint.resync === true;
      // A backfill under way is finished whatever started it (a resync, a new snapshot after a lost
      // history): the documents it has not copied yet would be missing from the views otherwise.
      const owed = checkpoint.backfill ? !checkpoint.backfill.done : wantsBackfill;
      const resumed = owed ? checkpoint.backfill : undefined;
      // A backfill the settings ask for (backfill_full_collection turned on for a mapping that streams)
      // keeps the stream's position: the changes since it, deletes included, are still archived, and the
      // copy's rows sort after them. A resync starts over (the store cleared the position as it loaded).
      const kept = checkpoint.resync === true ? undefined : checkpoint.position;
      const backfill = owed ? (resumed ?? (await this.#beginBackfill(signal, kept))) : undefined;
      const position = owed && !resumed ? kept : checkpoint.position;
      const snapshotStart = (backfill ?? checkpoint.backfill)?.snapshotStart;
      let plan: RunPlan = {
        backfill,
        start: position
          ? resumeFrom(position)
          : { kind: 'startAt', clusterTime: snapshotStart ?? (await this.#source.currentTime(signal)) },
      };
      for (;;) {
        try {
          await this.#runRoles(schema, plan, signal);
          return;
        } catch (error) {
          if (dispositionOf(error) !== 'history-lost' || !(error instanceof Error)) throw error;
          const repairs = this.#repairs;
          if (this.settings.onHistoryLost === 'repair' && repairs && this.deps.verifier) {
            this.log.warn(
              { err: error },
              'change stream history lost; restarting the stream now and repairing what differs (on_history_lost: repair)',
            );
            // Saved before the stream's new position: the verification owed survives a restart.
            await repairs.markHistoryLost(new Date(), signal);
            plan = {
              backfill: undefined,
              start: { kind: 'startAt', clusterTime: await this.#source.currentTime(signal) },
            };
            continue;
          }
          if (this.settings.onHistoryLost === 'repair') {
            throw new HistoryLostError(
              `${error.message}. on_history_lost: repair needs a verifier of the view, which this daemon was ` +
                `built without; set on_history_lost: resnapshot (or run \`mongo-bigquery-archiver resync ` +
                `${this.settings.id}\`) to copy the collection again.`,
              { cause: error },
            );
          }
          if (this.settings.onHistoryLost !== 'resnapshot') {
            throw new HistoryLostError(
              `${error.message}. Set on_history_lost: resnapshot in the settings document (or run ` +
                `\`mongo-bigquery-archiver resync ${this.settings.id}\`) to copy the collection again; the views converge.`,
              { cause: error },
            );
          }
          this.log.warn(
            { err: error },
            'change stream history lost; taking a new snapshot (on_history_lost: resnapshot)',
          );
          // Both roles start over from a new snapshot; its first checkpoint clears the lost position.
          const progress = await this.#beginBackfill(signal);
          plan = { backfill: progress, start: { kind: 'startAt', clusterTime: progress.snapshotStart } };
        }
      }
    } finally {
      await this.#destination?.close();
    }
  }

  /**
   * A new backfill: its snapshot starts now, and the checkpoint becomes that start and `position` (none after
   * a lost history or for a resync: the stream of this snapshot starts at it, and an older position must not
   * be resumed from any more).
   */
  async #beginBackfill(signal: AbortSignal, position?: Position): Promise<BackfillProgress> {
    const progress: BackfillProgress = {
      snapshotStart: await this.#source.currentTime(signal),
      lastId: undefined,
      copied: 0,
      done: false,
    };
    await this.#checkpoints.save({ position, backfill: progress }, signal);
    return progress;
  }

  /**
   * The stream and, when one is owed, the backfill, concurrently, the repairs after the backfill. The first
   * real error wins: the other role is then stopped and awaited (its abort is no error), and that error is
   * thrown; a failed repair or verification is none (keepServing). Resolves when `signal` aborted and both
   * roles ended.
   */
  async #runRoles(schema: SchemaCoordinator, plan: RunPlan, signal: AbortSignal): Promise<void> {
    const streaming = { state: this.settings.dryrun ? ('dryrun' as const) : ('streaming' as const) };
    const { backfill } = plan;
    this.hooks.report(backfill ? { state: this.#copyState, backfillCopied: backfill.copied } : streaming);
    const stream: Role = (s) => this.#stream(schema, plan.start, s);
    // Repairs (and the verification owed after a lost history) wait until no backfill is owed: the view is
    // not comparable with the collection before the copy is done, and a resync's copy makes them moot.
    const copyThenRepair: Role = async (s) => {
      if (backfill) {
        await this.#backfill(schema, backfill, s);
        this.hooks.report(streaming);
      }
      await keepServing(
        (r) => this.#serveRepairs(schema, r),
        {
          log: this.log,
          reportFailure: (error) =>
            this.deps.store.reportFailure(
              this.settings.id,
              `repair or verification failed (tried again later; the stream goes on): ${error instanceof Error ? error.message : String(error)}`,
              this.hooks.fence,
            ),
        },
        s,
      );
    };
    await runRoles([stream, copyThenRepair], signal);
  }

  /**
   * The repair role: the verification owed after a lost history (`on_history_lost: repair`), which records a
   * repair request for the ranges that differ, then every repair request not served yet, one repair at a
   * time, alongside the stream (which keeps its position). Returns when none is left.
   */
  async #serveRepairs(schema: SchemaCoordinator, signal: AbortSignal): Promise<void> {
    const repairs = this.#repairs;
    if (!repairs) return;
    for (;;) {
      let state = await repairs.loadRepair(signal);
      const lostAt = state.historyLostAt;
      if (lostAt) {
        await this.#verifyAfterHistoryLost(schema, repairs, lostAt, signal);
        state = await repairs.loadRepair(signal);
      }
      if (!state.progress && state.pending.length === 0) return;
      const view = this.deps.viewReader?.(this.settings, schema.columns);
      if (!view) {
        this.log.warn(
          { pending: state.pending.length },
          'repair requested, but this daemon was built without a reader of the view; the request waits',
        );
        return;
      }
      // The copy and the existence check read the primary, majority-committed, whatever the connection
      // string says (PRIMARY_MAJORITY_READ, set on each of their reads).
      const source = new MongoSnapshotSource(this.#collection, {
        chunkSize: this.deps.backfillChunk ?? DEFAULT_BACKFILL_CHUNK,
      });
      let progress = state.progress;
      if (!progress) {
        const snapshotStart = await this.#source.currentTime(signal);
        progress = beginRepair(state.pending, snapshotStart, await source.lastId());
        if (!progress) return;
        // The snapshot start is saved before anything is written: the delete pass relies on it.
        await repairs.saveRepair(progress, signal);
      }
      this.log.info(
        { ranges: progress.backfill.ranges?.length ?? 0, reason: progress.reason },
        state.progress ? 'resuming the repair' : 'repair started',
      );
      const slot = await this.#slot(this.deps.copying, 'repair ranges', signal);
      try {
        const pool = this.deps.encoderPool;
        await runRepair(
          {
            source,
            ...(pool && {
              records: prepareDocuments(pool, this.#prepareContext(schema), progress.backfill.snapshotStart),
            }),
            sink: this.#sink,
            store: repairs,
            schema,
            view,
            existing: new MongoExistingIds(this.#collection),
            idValue: docIdValue,
            log: this.log,
            onWritten: (documents, deletes) => {
              this.deps.metrics?.repairWritten(this.settings.id, documents, deletes);
            },
          },
          progress,
          signal,
        );
      } finally {
        slot.release();
      }
    }
  }

  /**
   * Verifies every range after the history was lost at `lostAt`, while the stream runs from where it
   * restarted (a difference is checked again once the checkpoint passed the first read, so changes in
   * flight raise no alarm), and records a repair request for the ranges that differ.
   */
  async #verifyAfterHistoryLost(
    schema: SchemaCoordinator,
    repairs: MongoCheckpointStore,
    lostAt: Date,
    signal: AbortSignal,
  ): Promise<void> {
    // With the columns the table has now (they may have been inferred or evolved since the settings were read).
    const verifier = this.deps.verifier?.({ ...this.settings, columns: schema.columns });
    if (!verifier) return;
    const report = await verifier.verify({}, signal);
    const summary = verificationSummary(report);
    this.deps.metrics?.verified(this.settings.id, summary);
    // Shown by `status` as the last verification, as the background verifier's are.
    await recordVerification(this.deps.checkpointsCollection, this.settings.documentId, summary);
    this.log.info(
      {
        rangesChecked: report.rangesChecked,
        rangesDiffering: report.differingRanges.length,
        missing: report.missing.count,
        extra: report.extra.count,
        differing: report.differing.count,
        bytesScanned: report.bytesScanned,
      },
      'verified the collection after the lost history',
    );
    if (report.differingRanges.length > 0) {
      await repairs.requestRepair(
        { ranges: report.differingRanges, reason: 'history-lost', requestedAt: new Date() },
        signal,
      );
    }
    await repairs.historyLostVerified(lostAt, signal);
  }

  async #stream(schema: SchemaCoordinator, start: StreamStart, signal: AbortSignal): Promise<void> {
    const common = {
      sink: this.#sink,
      checkpoints: this.#checkpoints,
      limits: this.deps.limits ?? DEFAULT_BATCH_LIMITS,
      window: windowLimits(this.deps.config),
      idleCheckpointIntervalMs: this.deps.config.IDLE_CHECKPOINT_INTERVAL_MS,
      ...(this.metrics && { observer: this.metrics }),
    };
    const pool = this.deps.encoderPool;
    const inThread = {
      encode: (row: HistoryRow) => this.#destination?.encode(row) ?? { size: rowBytes(row) },
      mapper: () => schema.mapper,
      beforeMap: (events: readonly ChangeEvent[], s: AbortSignal) =>
        schema.evolve(
          events.flatMap((e) => (e.kind === 'upsert' ? [e.document] : [])),
          s,
        ),
    };
    // The database's shared stream where the daemon shares them and the server allows it, else the
    // collection's own raw stream for the worker threads; the decoration applies to what is read.
    const raw = await chooseRawStream({
      streams: this.deps.databaseStreams,
      database: this.settings.mongoDatabase,
      collection: this.settings.mongoCollection,
      own: this.#rawSource,
      ownAlone: pool !== undefined,
      decorate: this.deps.decorateChangeSource,
    });
    if (raw) {
      // Read raw; decoded, mapped and encoded on the worker threads (as many pulls ahead as there are), or
      // on this thread where there are none.
      const prepare = pool
        ? prepareChanges(pool, this.#prepareContext(schema))
        : prepareRawInThread(inThread);
      this.log.info(
        { workerThreads: pool?.threads ?? 0, sharedDatabaseStream: raw.shared },
        raw.shared
          ? "reads its share of the database's change stream, as BSON bytes"
          : 'change stream read as BSON bytes; decoded, mapped and encoded on the worker threads',
      );
      return runStream(
        { ...common, source: raw.source, prepare, readAhead: pool?.threads ?? 0 },
        start,
        signal,
        this.log,
      );
    }
    const prepare = prepareInThread(inThread);
    return runStream({ ...common, source: this.#source, prepare }, start, signal, this.log);
  }

  /** What the worker threads map and encode with now, and who evolves the schema for them. */
  #prepareContext(schema: SchemaCoordinator): PrepareContext {
    return {
      current: () => ({
        mapping: schema.mappingSpec,
        mapper: schema.mapper,
        encoding: this.#destination?.rowEncoding() ?? SIZE_ONLY,
      }),
      evolve: (documents, signal) => schema.evolve(documents, signal),
    };
  }

  async #backfill(schema: SchemaCoordinator, resume: BackfillProgress, signal: AbortSignal): Promise<void> {
    // The copy waits its turn among the mappings copying (not those preparing); the stream runs meanwhile.
    const slot = await this.#slot(this.deps.copying, 'copy the collection', signal);
    try {
      await this.#copy(schema, resume, signal);
    } finally {
      slot.release();
    }
    this.metrics?.backfillDone();
  }

  /** The state while the collection is copied: a dry run says so all along (it copies nothing, it only logs). */
  get #copyState(): 'dryrun' | 'backfilling' {
    return this.settings.dryrun ? 'dryrun' : 'backfilling';
  }

  async #copy(schema: SchemaCoordinator, resume: BackfillProgress, signal: AbortSignal): Promise<void> {
    const chunk = this.deps.backfillChunk ?? DEFAULT_BACKFILL_CHUNK;
    const source = new MongoSnapshotSource(this.#collection, { chunkSize: chunk });
    const pool = this.deps.encoderPool;
    const state = this.#copyState;
    await runBackfill(
      {
        source,
        // With worker threads, chunks are read as BSON bytes and mapped there (schema evolution included).
        ...(pool && {
          records: prepareDocuments(pool, this.#prepareContext(schema), resume.snapshotStart),
        }),
        sink: this.#sink,
        checkpoints: this.#checkpoints,
        schema,
        log: this.log,
        parallelism: this.settings.backfillParallelism ?? DEFAULT_BACKFILL_PARALLELISM,
        onStarted: (progress) => {
          this.metrics?.backfillStarted(progress.estimated ?? 0, progress.copied);
          this.hooks.report({
            state,
            backfillCopied: progress.copied,
            ...(progress.estimated !== undefined && { backfillEstimated: progress.estimated }),
          });
        },
        onCopied: (documents, shown) => {
          this.metrics?.backfillCopied(documents);
          this.hooks.report({
            state,
            backfillCopied: shown.copied,
            ...(shown.estimated !== undefined && { backfillEstimated: shown.estimated }),
            ...(shown.rate !== undefined && { backfillRate: shown.rate }),
            ...(shown.etaSeconds !== undefined && { backfillEtaSeconds: shown.etaSeconds }),
          });
        },
      },
      resume,
      signal,
    );
  }

  /**
   * One of `slots` (the daemon's slots for preparing, or those for copying; MAX_MAPPINGS_PREPARING each): at
   * once when one is free, otherwise after the mappings ahead in line, with one log line saying that it waits.
   */
  async #slot(slots: Slots | undefined, work: string, signal: AbortSignal): Promise<Slot> {
    if (slots === undefined) return { release: () => undefined };
    let slot = slots.tryAcquire();
    if (slot === undefined) {
      this.log.info(
        { maxMappingsPreparing: slots.capacity, ahead: slots.waiting },
        `waiting for a slot to ${work} (MAX_MAPPINGS_PREPARING)`,
      );
      slot = await slots.acquire(signal);
    }
    this.log.debug(`took a slot to ${work}`);
    const held = slot;
    let released = false;
    return {
      release: () => {
        if (released) return;
        released = true;
        held.release();
        this.log.debug(`gave back the slot to ${work}`);
      },
    };
  }

  /**
   * Takes the preparation slot (given back by `#prepareDestination`, or here on a failure), then the schema.
   */
  async #prepareSchema(signal: AbortSignal): Promise<SchemaCoordinator> {
    const slot = await this.#slot(this.deps.preparing, 'prepare the tables', signal);
    this.#preparing = slot;
    try {
      return await this.#schema(signal);
    } catch (error) {
      this.#preparing = undefined;
      slot.release();
      throw error;
    }
  }

  /** The columns from the settings, or inferred from a sample (saved once the table is in line with them). */
  async #schema(signal: AbortSignal): Promise<SchemaCoordinator> {
    let columns = this.settings.columns;
    if (columns !== undefined) this.inferred.forget(this.settings.id);
    else {
      const inference = await this.inferred.columns(this.settings, async () => {
        const sample = await this.deps.sample(this.#collection, DEFAULT_INFER_SAMPLE, signal);
        const found = await inferColumns(sample);
        this.log.info(
          { columns: found.length, sampled: sample.length },
          'inferred the columns from a sample',
        );
        return found;
      });
      columns = inference.columns;
      if (inference.reused) {
        this.log.debug(
          { columns: columns.length },
          'columns inferred by an earlier run of this configuration; no new sample',
        );
      }
      if (this.settings.dryrun) {
        this.log.info({ columns }, 'dry run: would create the table with these columns');
      }
    }
    return new SchemaCoordinator({
      columns,
      columnsUnsaved: this.settings.columns === undefined,
      origin: this.settings.columnsOrigin,
      evolution: this.settings.schemaEvolution,
      captureUnmapped: this.settings.captureUnmapped,
      saveColumns: (saved) => this.#saveColumns(saved),
      reportConflicts: (conflicts) =>
        this.deps.store.reportFailure(
          this.settings.id,
          `columns differ from table ${this.settings.bigqueryTable}: ${conflicts.join('; ')}. BigQuery cannot ` +
            `change a column's type in place, so rows are written with the table's types (values that do not ` +
            `fit go to _unmapped). To archive with the new types, set a new bigquery_table.`,
          this.hooks.fence,
        ),
      log: this.log,
    });
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
  }

  /** The BigQuery objects and the writer; gives back the preparation slot `#prepareSchema` took. */
  async #prepareDestination(schema: SchemaCoordinator): Promise<void> {
    try {
      await this.#openDestination(schema);
    } finally {
      this.#preparing?.release();
      this.#preparing = undefined;
    }
  }

  async #openDestination(schema: SchemaCoordinator): Promise<void> {
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
        storageWriteConnections: this.deps.config.BIGQUERY_STORAGE_WRITE_CONNECTIONS,
        storageWriteIdleMs: this.deps.config.WRITE_STREAM_IDLE_MS,
        onStorageWriteConnectionOpenChange: (delta) => {
          this.deps.metrics?.storageWriteConnections(delta);
        },
        ...(this.deps.limits && { limits: this.deps.limits }),
        ...(this.deps.decorateWriter && { decorateWriter: this.deps.decorateWriter }),
        onRetry: (error, attempt, delayMs) => {
          this.metrics?.retried(error);
          this.log.warn({ err: error, attempt, delayMs }, 'BigQuery write failed; retrying');
        },
        ...(this.metrics && { observer: this.metrics }),
        onWriterChosen: (kind, reason) => {
          this.log.info({ writer: kind, ...(reason && { reason }) }, 'writer chosen');
        },
      },
      schema.columns,
    );
    const destination = this.#destination;
    await schema.adoptTable(destination);
    // The one sink of both roles, so that dead letters are reported in one place.
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
}
