import { MAPPING_STATES, type MappingState } from '../core/ports.js';
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import { type Disposition, type FailureClass } from '../errors.js';

/** Every metric this service defines; process and Node.js metrics keep their standard names. */
export const METRIC_NAMES = {
  changeEvents: 'mba_change_events_total',
  rowsWritten: 'mba_rows_written_total',
  bytesWritten: 'mba_bytes_written_total',
  batches: 'mba_batches_total',
  batchDuration: 'mba_batch_duration_seconds',
  retries: 'mba_retries_total',
  errors: 'mba_errors_total',
  deadLetteredRows: 'mba_dead_lettered_rows_total',
  replicationLag: 'mba_replication_lag_seconds',
  checkpointAge: 'mba_checkpoint_age_seconds',
  backfillDocumentsCopied: 'mba_backfill_documents_copied_total',
  backfillDocumentsEstimated: 'mba_backfill_documents_estimated',
  backfillDocumentsRemaining: 'mba_backfill_documents_remaining',
  lookupMisses: 'mba_lookup_misses_total',
  mappingState: 'mba_mapping_state',
  leaseRound: 'mba_lease_round_seconds',
  rebalance: 'mba_rebalance_seconds',
  leasesHeld: 'mba_leases_held',
  mappingsPreparing: 'mba_mappings_preparing',
  mappingsWaitingToPrepare: 'mba_mappings_waiting_to_prepare',
  storageWriteConnectionsOpen: 'mba_storage_write_connections_open',
  oplogWindow: 'mba_oplog_window_seconds',
  oplogHeadroom: 'mba_oplog_headroom_seconds',
  verifyRuns: 'mba_verify_runs_total',
  verifyRangesChecked: 'mba_verify_ranges_checked_total',
  verifyRangesDiffering: 'mba_verify_ranges_differing',
  verifyDocumentsMissing: 'mba_verify_documents_missing',
  verifyDocumentsExtra: 'mba_verify_documents_extra',
  verifyDocumentsDiffering: 'mba_verify_documents_differing',
  verifyBytesScanned: 'mba_verify_bytes_scanned_total',
  verifyLastRun: 'mba_verify_last_run_timestamp_seconds',
  repairRows: 'mba_repair_rows_total',
} as const;

/** What one verification found, as the `mba_verify_*` metrics report it (see VerifyReport). */
export interface VerifyRunSummary {
  readonly rangesChecked: number;
  readonly rangesDiffering: number;
  readonly missing: number;
  readonly extra: number;
  readonly differing: number;
  readonly bytesScanned: number;
  readonly finishedAt: Date;
}

/** From a few milliseconds (a small insertAll) to a minute (a large request retried inside the batch). */
export const DEFAULT_BATCH_DURATION_BUCKETS: readonly number[] = [
  0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
];

/**
 * From a few milliseconds (one round trip each for the heartbeat and the renewals) to past the default
 * lease TTL (15 s), where a round is too slow to keep its leases.
 */
export const DEFAULT_LEASE_ROUND_BUCKETS: readonly number[] = [
  0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30,
];

// The states `mba_mapping_state` reports (exactly one of them 1 per mapping) are the supervisor's own:
// MAPPING_STATES in src/core/ports.ts.
export { MAPPING_STATES, type MappingState };

export interface MetricsOptions {
  /** Milliseconds since the epoch; replication lag and checkpoint age are computed from it at each scrape. */
  readonly now?: () => number;
  /** Also register process and Node.js metrics (CPU, memory, event loop lag, GC); default true. */
  readonly processMetrics?: boolean;
  /** Buckets of `mba_batch_duration_seconds`; default DEFAULT_BATCH_DURATION_BUCKETS. */
  readonly batchDurationBuckets?: readonly number[];
}

interface CheckpointMark {
  /** Cluster time (seconds) of the last checkpointed change; undefined while only backfill progress was saved. */
  readonly clusterTimeSeconds: number | undefined;
  readonly atMs: number;
}

/** A running backfill's estimated total and what it copied so far (earlier runs included). */
interface BackfillMark {
  readonly estimated: number;
  readonly copied: number;
}

type MappingLabel = 'mapping';

type Labels = Partial<Record<string, string | number>>;

/** What `forgetMapping` needs of any of the metrics. */
interface RemovableMetric {
  get(): Promise<{ readonly values: readonly { readonly labels: Labels }[] }>;
  remove(labels: Labels): void;
}

/**
 * The service's Prometheus metrics on a registry of their own (never prom-client's global one). Create one
 * per process in the composition root and inject it; tests create as many as they like.
 */
export class Metrics {
  readonly registry: Registry;
  readonly #now: () => number;
  readonly #checkpoints = new Map<string, CheckpointMark>();
  readonly #states = new Map<string, MappingState>();
  readonly #backfills = new Map<string, BackfillMark>();

  readonly #changeEvents: Counter<'mapping' | 'operation'>;
  readonly #rowsWritten: Counter<MappingLabel>;
  readonly #bytesWritten: Counter<MappingLabel>;
  readonly #batches: Counter<MappingLabel>;
  readonly #batchDuration: Histogram<MappingLabel>;
  readonly #retries: Counter<'mapping' | 'class'>;
  readonly #errors: Counter<'mapping' | 'class'>;
  readonly #deadLettered: Counter<MappingLabel>;
  readonly #replicationLag: Gauge<MappingLabel>;
  readonly #checkpointAge: Gauge<MappingLabel>;
  readonly #backfillCopied: Counter<MappingLabel>;
  readonly #backfillEstimated: Gauge<MappingLabel>;
  readonly #backfillRemaining: Gauge<MappingLabel>;
  readonly #lookupMisses: Counter<MappingLabel>;
  readonly #mappingState: Gauge<'mapping' | 'state'>;
  readonly #leaseRound: Histogram;
  readonly #rebalance: Histogram;
  readonly #leasesHeld: Gauge;
  readonly #mappingsPreparing: Gauge;
  readonly #mappingsWaitingToPrepare: Gauge;
  readonly #storageWriteConnectionsOpen: Gauge;
  readonly #oplogWindow: Gauge<'source'>;
  readonly #oplogHeadroom: Gauge<MappingLabel>;
  readonly #verifyRuns: Counter<MappingLabel>;
  readonly #verifyRangesChecked: Counter<MappingLabel>;
  readonly #verifyRangesDiffering: Gauge<MappingLabel>;
  readonly #verifyMissing: Gauge<MappingLabel>;
  readonly #verifyExtra: Gauge<MappingLabel>;
  readonly #verifyDiffering: Gauge<MappingLabel>;
  readonly #verifyBytesScanned: Counter<MappingLabel>;
  readonly #verifyLastRun: Gauge<MappingLabel>;
  readonly #repairRows: Counter<'mapping' | 'kind'>;

  constructor(options: MetricsOptions = {}) {
    this.#now = options.now ?? Date.now;
    const registry = new Registry();
    this.registry = registry;
    const registers = [registry];
    const perMapping = ['mapping'] as const;

    this.#changeEvents = new Counter({
      name: METRIC_NAMES.changeEvents,
      help: 'Change events read from the change stream, by operation type.',
      labelNames: ['mapping', 'operation'] as const,
      registers,
    });
    this.#rowsWritten = new Counter({
      name: METRIC_NAMES.rowsWritten,
      help: 'History rows BigQuery acknowledged.',
      labelNames: perMapping,
      registers,
    });
    this.#bytesWritten = new Counter({
      name: METRIC_NAMES.bytesWritten,
      help: 'Bytes of the history rows BigQuery acknowledged.',
      labelNames: perMapping,
      registers,
    });
    this.#batches = new Counter({
      name: METRIC_NAMES.batches,
      help: 'Batches written to BigQuery.',
      labelNames: perMapping,
      registers,
    });
    this.#batchDuration = new Histogram({
      name: METRIC_NAMES.batchDuration,
      help: 'Time to write one batch to BigQuery, retries included.',
      labelNames: perMapping,
      buckets: [...(options.batchDurationBuckets ?? DEFAULT_BATCH_DURATION_BUCKETS)],
      registers,
    });
    this.#retries = new Counter({
      name: METRIC_NAMES.retries,
      help: 'Retried requests, by failure class.',
      labelNames: ['mapping', 'class'] as const,
      registers,
    });
    this.#errors = new Counter({
      name: METRIC_NAMES.errors,
      help: 'Failures that stopped or restarted a mapping, by failure class.',
      labelNames: ['mapping', 'class'] as const,
      registers,
    });
    this.#deadLettered = new Counter({
      name: METRIC_NAMES.deadLetteredRows,
      help: 'Rows BigQuery refused that went to the dead-letter table.',
      labelNames: perMapping,
      registers,
    });
    this.#replicationLag = this.#clockGauge(
      METRIC_NAMES.replicationLag,
      'Now minus the cluster time of the last checkpointed change.',
      (mark, nowMs) =>
        mark.clusterTimeSeconds === undefined ? undefined : nowMs / 1_000 - mark.clusterTimeSeconds,
    );
    this.#checkpointAge = this.#clockGauge(
      METRIC_NAMES.checkpointAge,
      'Seconds since the last checkpoint was saved.',
      (mark, nowMs) => (nowMs - mark.atMs) / 1_000,
    );
    this.#backfillCopied = new Counter({
      name: METRIC_NAMES.backfillDocumentsCopied,
      help: 'Documents the backfill copied to BigQuery.',
      labelNames: perMapping,
      registers,
    });
    this.#backfillEstimated = new Gauge({
      name: METRIC_NAMES.backfillDocumentsEstimated,
      help: "The collection's estimated document count when its backfill started.",
      labelNames: perMapping,
      registers,
    });
    this.#backfillRemaining = new Gauge({
      name: METRIC_NAMES.backfillDocumentsRemaining,
      help: 'Estimated documents the running backfill has yet to copy (0 once it is done).',
      labelNames: perMapping,
      registers,
    });
    this.#lookupMisses = new Counter({
      name: METRIC_NAMES.lookupMisses,
      help: 'Updates whose full document was gone when looked up (deleted since).',
      labelNames: perMapping,
      registers,
    });
    this.#mappingState = new Gauge({
      name: METRIC_NAMES.mappingState,
      help: `1 for the state the mapping is in, 0 for the others (${MAPPING_STATES.join(', ')}).`,
      labelNames: ['mapping', 'state'] as const,
      registers,
    });
    this.#mappingsPreparing = new Gauge({
      name: METRIC_NAMES.mappingsPreparing,
      help: 'Mappings preparing their tables or copying their collection now (at most MAX_MAPPINGS_PREPARING of each).',
      registers,
    });
    this.#mappingsWaitingToPrepare = new Gauge({
      name: METRIC_NAMES.mappingsWaitingToPrepare,
      help: 'Mappings waiting for a slot to prepare their tables or to copy their collection.',
      registers,
    });
    this.#storageWriteConnectionsOpen = new Gauge({
      name: METRIC_NAMES.storageWriteConnectionsOpen,
      help: 'Storage Write connections open now (an idle one is closed after WRITE_STREAM_IDLE_MS).',
      registers,
    });
    // Set by the oplog headroom guard (src/app/oplog-guard.ts) at each poll; absent where the server does not
    // tell its oplog window (a standalone, mongos, a user without the privilege): no number is better than a
    // made-up one, and `absent()` tells the two apart.
    this.#oplogWindow = new Gauge({
      name: METRIC_NAMES.oplogWindow,
      help: "The source's oplog window: the newest oplog entry's time minus the oldest's, at the last read.",
      labelNames: ['source'] as const,
      registers,
    });
    this.#oplogHeadroom = new Gauge({
      name: METRIC_NAMES.oplogHeadroom,
      help: "How long the oplog still holds the mapping's resume point: the window minus the mapping's lag.",
      labelNames: perMapping,
      registers,
    });
    // Daemon-wide gauges are there from the start, at 0.
    this.#mappingsPreparing.set(0);
    this.#mappingsWaitingToPrepare.set(0);
    this.#storageWriteConnectionsOpen.set(0);

    this.#verifyRuns = new Counter({
      name: METRIC_NAMES.verifyRuns,
      help: 'Verifications of the collection against <table>_view that finished.',
      labelNames: perMapping,
      registers,
    });
    this.#verifyRangesChecked = new Counter({
      name: METRIC_NAMES.verifyRangesChecked,
      help: '_id ranges compared by verifications.',
      labelNames: perMapping,
      registers,
    });
    const lastRun = (name: string, help: string): Gauge<MappingLabel> =>
      new Gauge({ name, help: `${help} (of the last verification).`, labelNames: perMapping, registers });
    this.#verifyRangesDiffering = lastRun(
      METRIC_NAMES.verifyRangesDiffering,
      '_id ranges whose difference persisted when checked again',
    );
    this.#verifyMissing = lastRun(
      METRIC_NAMES.verifyDocumentsMissing,
      'Documents in MongoDB and not in the view',
    );
    this.#verifyExtra = lastRun(
      METRIC_NAMES.verifyDocumentsExtra,
      'Documents in the view and not in MongoDB',
    );
    this.#verifyDiffering = lastRun(
      METRIC_NAMES.verifyDocumentsDiffering,
      'Documents in both with different content',
    );
    this.#verifyBytesScanned = new Counter({
      name: METRIC_NAMES.verifyBytesScanned,
      help: 'Bytes BigQuery reported as processed by verification queries.',
      labelNames: perMapping,
      registers,
    });
    this.#verifyLastRun = new Gauge({
      name: METRIC_NAMES.verifyLastRun,
      help: 'When the last verification finished (seconds since the epoch).',
      labelNames: perMapping,
      registers,
    });
    this.#repairRows = new Counter({
      name: METRIC_NAMES.repairRows,
      help: 'Rows repairs wrote: current documents (kind=document) and delete rows (kind=delete).',
      labelNames: ['mapping', 'kind'] as const,
      registers,
    });
    this.#leaseRound = new Histogram({
      name: METRIC_NAMES.leaseRound,
      help: 'Time of one lease round: the heartbeat and the renewal of the leases held (the rebalancing runs beside it).',
      buckets: [...DEFAULT_LEASE_ROUND_BUCKETS],
      registers,
    });
    this.#rebalance = new Histogram({
      name: METRIC_NAMES.rebalance,
      help: 'Time of one rebalancing: stopping mappings whose lease was lost, handing over leases beyond the fair share, taking free ones.',
      buckets: [...DEFAULT_LEASE_ROUND_BUCKETS],
      registers,
    });
    this.#leasesHeld = new Gauge({
      name: METRIC_NAMES.leasesHeld,
      help: 'Mapping leases this instance holds, as of its last lease round.',
      registers,
    });

    if (options.processMetrics ?? true) collectDefaultMetrics({ register: registry });
  }

  /** The text format's content type, for the `/metrics` response. */
  get contentType(): string {
    return this.registry.contentType;
  }

  /** Every metric in the Prometheus text format. */
  render(): Promise<string> {
    return this.registry.metrics();
  }

  eventsRead(mapping: string, operation: string, n = 1): void {
    this.#changeEvents.inc({ mapping, operation }, n);
  }

  /** A batch BigQuery acknowledged: its rows, their bytes, and how long writing it took. */
  batchWritten(mapping: string, rows: number, bytes: number, seconds: number): void {
    this.#rowsWritten.inc({ mapping }, rows);
    this.#bytesWritten.inc({ mapping }, bytes);
    this.#batches.inc({ mapping });
    this.#batchDuration.observe({ mapping }, seconds);
  }

  /** A BigQuery request is retried; labelled with the sink's failure class (`schema` retries show apart). */
  retried(mapping: string, failureClass: FailureClass): void {
    this.#retries.inc({ mapping, class: failureClass });
  }

  /** The mapping stopped or restarts; labelled with the error's disposition. */
  failed(mapping: string, disposition: Disposition): void {
    this.#errors.inc({ mapping, class: disposition });
  }

  deadLettered(mapping: string, rows: number): void {
    this.#deadLettered.inc({ mapping }, rows);
  }

  /**
   * A checkpoint was saved at `atMs`. `clusterTimeSeconds` is the cluster time of the change it records
   * (undefined when it only records backfill progress, which leaves the lag as it was).
   */
  checkpointed(mapping: string, clusterTimeSeconds: number | undefined, atMs = this.#now()): void {
    const previous = this.#checkpoints.get(mapping);
    this.#checkpoints.set(mapping, {
      clusterTimeSeconds: clusterTimeSeconds ?? previous?.clusterTimeSeconds,
      atMs,
    });
  }

  /**
   * A backfill starts or resumes: `estimatedDocuments` is the collection's estimated count, `copiedBefore`
   * what earlier runs of the same backfill copied (its checkpoint), so that the remaining count is right
   * after a restart although the copied counter starts again from 0 with the process.
   */
  backfillStarted(mapping: string, estimatedDocuments: number, copiedBefore = 0): void {
    this.#backfills.set(mapping, { estimated: estimatedDocuments, copied: copiedBefore });
    this.#backfillEstimated.set({ mapping }, estimatedDocuments);
    this.#backfillRemaining.set({ mapping }, Math.max(0, estimatedDocuments - copiedBefore));
  }

  backfillCopied(mapping: string, documents: number): void {
    this.#backfillCopied.inc({ mapping }, documents);
    const mark = this.#backfills.get(mapping);
    if (!mark) return;
    const copied = mark.copied + documents;
    this.#backfills.set(mapping, { ...mark, copied });
    this.#backfillRemaining.set({ mapping }, Math.max(0, mark.estimated - copied));
  }

  /** Every range is copied: nothing remains, whatever the estimate said. */
  backfillDone(mapping: string): void {
    this.#backfills.delete(mapping);
    this.#backfillRemaining.set({ mapping }, 0);
  }

  lookupMissed(mapping: string, n = 1): void {
    this.#lookupMisses.inc({ mapping }, n);
  }

  /** Moves the mapping to `state`; the first call also starts its per-mapping counters at 0. */
  mappingState(mapping: string, state: MappingState): void {
    if (!this.#states.has(mapping)) {
      for (const counter of [
        this.#rowsWritten,
        this.#bytesWritten,
        this.#batches,
        this.#deadLettered,
        this.#lookupMisses,
      ]) {
        counter.inc({ mapping }, 0);
      }
    }
    this.#states.set(mapping, state);
    for (const candidate of MAPPING_STATES) {
      this.#mappingState.set({ mapping, state: candidate }, candidate === state ? 1 : 0);
    }
  }

  /** A lease round is over: it took `seconds`, and this instance holds `held` leases after it. */
  leaseRound(seconds: number, held: number): void {
    this.#leaseRound.observe(seconds);
    this.#leasesHeld.set(held);
  }

  /** A rebalancing is over (failed ones included): it took `seconds`. */
  rebalance(seconds: number): void {
    this.#rebalance.observe(seconds);
  }

  /** The slots of MAX_MAPPINGS_PREPARING: how many are held, and how many mappings wait for one. */
  preparing(state: { readonly held: number; readonly waiting: number }): void {
    this.#mappingsPreparing.set(state.held);
    this.#mappingsWaitingToPrepare.set(state.waiting);
  }

  /** A Storage Write connection was opened (+1) or closed (-1). */
  storageWriteConnections(delta: 1 | -1): void {
    this.#storageWriteConnectionsOpen.inc(delta);
  }

  /** The oplog window of `source` (a replica set's name), in seconds; undefined drops its series. */
  oplogWindow(source: string, seconds: number | undefined): void {
    if (seconds === undefined) this.#oplogWindow.remove({ source });
    else this.#oplogWindow.set({ source }, seconds);
  }

  /** A mapping's oplog headroom, in seconds (below 0: its resume point is gone); undefined drops its series. */
  oplogHeadroom(mapping: string, seconds: number | undefined): void {
    if (seconds === undefined) this.#oplogHeadroom.remove({ mapping });
    else this.#oplogHeadroom.set({ mapping }, seconds);
  }

  /** A verification of `mapping` finished. */
  verified(mapping: string, run: VerifyRunSummary): void {
    const labels = { mapping };
    this.#verifyRuns.inc(labels);
    this.#verifyRangesChecked.inc(labels, run.rangesChecked);
    this.#verifyRangesDiffering.set(labels, run.rangesDiffering);
    this.#verifyMissing.set(labels, run.missing);
    this.#verifyExtra.set(labels, run.extra);
    this.#verifyDiffering.set(labels, run.differing);
    this.#verifyBytesScanned.inc(labels, run.bytesScanned);
    this.#verifyLastRun.set(labels, run.finishedAt.getTime() / 1_000);
  }

  /** A repair of `mapping` had rows acknowledged: current documents and delete rows. */
  repairWritten(mapping: string, documents: number, deletes: number): void {
    if (documents > 0) this.#repairRows.inc({ mapping, kind: 'document' }, documents);
    if (deletes > 0) this.#repairRows.inc({ mapping, kind: 'delete' }, deletes);
  }

  /**
   * Drops every series of a mapping that was removed from the settings, so that its lag and checkpoint age
   * do not keep growing on dashboards and alerts.
   */
  async forgetMapping(mapping: string): Promise<void> {
    this.#checkpoints.delete(mapping);
    this.#states.delete(mapping);
    this.#backfills.delete(mapping);
    const metrics: readonly RemovableMetric[] = [
      this.#changeEvents,
      this.#rowsWritten,
      this.#bytesWritten,
      this.#batches,
      this.#batchDuration,
      this.#retries,
      this.#errors,
      this.#deadLettered,
      this.#replicationLag,
      this.#checkpointAge,
      this.#backfillCopied,
      this.#backfillEstimated,
      this.#backfillRemaining,
      this.#lookupMisses,
      this.#mappingState,
      this.#oplogHeadroom,
      this.#verifyRuns,
      this.#verifyRangesChecked,
      this.#verifyRangesDiffering,
      this.#verifyMissing,
      this.#verifyExtra,
      this.#verifyDiffering,
      this.#verifyBytesScanned,
      this.#verifyLastRun,
      this.#repairRows,
    ];
    for (const metric of metrics) {
      const { values } = await metric.get();
      const labelSets = new Map<string, Labels>();
      for (const { labels } of values) {
        if (labels.mapping !== mapping) continue;
        // Histogram values carry `le`; the series itself is identified without it.
        const { le: _le, ...own } = labels;
        labelSets.set(JSON.stringify(own), own);
      }
      for (const labels of labelSets.values()) metric.remove(labels);
    }
  }

  /** A per-mapping gauge computed from the checkpoint marks at every scrape, so a stall shows as growth. */
  #clockGauge(
    name: string,
    help: string,
    valueOf: (mark: CheckpointMark, nowMs: number) => number | undefined,
  ): Gauge<MappingLabel> {
    const marks = this.#checkpoints;
    const now = this.#now;
    return new Gauge({
      name,
      help,
      labelNames: ['mapping'] as const,
      registers: [this.registry],
      collect(this: Gauge<MappingLabel>) {
        this.reset();
        const nowMs = now();
        for (const [mapping, mark] of marks) {
          const value = valueOf(mark, nowMs);
          // A cluster clock ahead of ours is skew, not negative lag.
          if (value !== undefined) this.set({ mapping }, Math.max(0, value));
        }
      },
    });
  }
}
