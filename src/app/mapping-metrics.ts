import { type SinkObserver } from '../bigquery/sink.js';
import { type BackfillCheckpointStore } from '../core/ports.js';
import { type StreamObserver } from '../core/stream-loop.js';
import { classifyBigQueryError } from '../bigquery/error-mapping.js';
import { dispositionOf } from '../errors.js';
import { type Metrics } from '../observability/metrics.js';

/**
 * One mapping's metrics in the shapes the stream loop and the sink report through, so that neither
 * knows about Prometheus.
 */
export class MappingMetrics implements StreamObserver, SinkObserver {
  constructor(
    private readonly metrics: Metrics,
    private readonly mapping: string,
  ) {}

  eventsRead(operation: string, count: number): void {
    this.metrics.eventsRead(this.mapping, operation, count);
  }

  lookupMissed(): void {
    this.metrics.lookupMissed(this.mapping);
  }

  batchWritten(rows: number, bytes: number, seconds: number): void {
    this.metrics.batchWritten(this.mapping, rows, bytes, seconds);
  }

  deadLettered(rows: number): void {
    this.metrics.deadLettered(this.mapping, rows);
  }

  /** A request is retried after this error (the sink's `onRetry`). */
  retried(error: unknown): void {
    // Only the sink retries requests, so its own classes label them.
    this.metrics.retried(this.mapping, classifyBigQueryError(error));
  }

  /** The mapping stopped on this error; the supervisor restarts it or waits for new settings. */
  failed(error: unknown): void {
    this.metrics.failed(this.mapping, dispositionOf(error));
  }

  /** `copiedBefore`: what earlier runs of the same backfill copied (a resumed one), for the remaining count. */
  backfillStarted(estimatedDocuments: number, copiedBefore = 0): void {
    this.metrics.backfillStarted(this.mapping, estimatedDocuments, copiedBefore);
  }

  backfillDone(): void {
    this.metrics.backfillDone(this.mapping);
  }

  backfillCopied(documents: number): void {
    this.metrics.backfillCopied(this.mapping, documents);
  }

  /**
   * `store`, reporting every saved checkpoint: a change-stream position sets the replication lag's cluster
   * time and resets the checkpoint age; saving backfill progress alone does neither.
   */
  observeCheckpoints(store: BackfillCheckpointStore): BackfillCheckpointStore {
    return {
      load: (signal) => store.load(signal),
      save: async (checkpoint, signal) => {
        await store.save(checkpoint, signal);
        this.metrics.checkpointed(this.mapping, checkpoint.position?.clusterTime.t);
      },
      // The backfill's progress says nothing of the change stream, which runs next to it: the checkpoint
      // age and the lag stay the stream's, so that a stream stuck during a long copy still shows (its
      // position is what the oplog window threatens).
      saveBackfill: (progress, signal) => store.saveBackfill(progress, signal),
    };
  }
}
