import { describe, expect, it } from 'vitest';
import { MappingMetrics } from '../../../src/app/mapping-metrics.js';
import {
  type BackfillCheckpointStore,
  type BackfillProgress,
  type Checkpoint,
} from '../../../src/core/ports.js';
import { MongoServerError } from 'mongodb';
import { BigQueryError, ConfigError, FencedOutError } from '../../../src/errors.js';
import { MalformedChangeEventError } from '../../../src/mongodb/change-event.js';
import { HistoryLostError, toMongoError } from '../../../src/mongodb/error-mapping.js';
import { METRIC_NAMES, Metrics } from '../../../src/observability/metrics.js';
import { parsePrometheusText, sampleValue } from '../../support/prometheus-text.js';

class RecordingCheckpoints implements BackfillCheckpointStore {
  readonly saved: Checkpoint[] = [];
  readonly progress: BackfillProgress[] = [];
  failNext: Error | undefined;
  load(): Promise<Checkpoint> {
    return Promise.resolve({ position: undefined });
  }
  save(checkpoint: Checkpoint): Promise<void> {
    const failure = this.failNext;
    this.failNext = undefined;
    if (failure) return Promise.reject(failure);
    this.saved.push(checkpoint);
    return Promise.resolve();
  }
  saveBackfill(progress: BackfillProgress): Promise<void> {
    this.progress.push(progress);
    return Promise.resolve();
  }
}

const T0_SECONDS = 1_700_000_000;
const signal = new AbortController().signal;

function setup() {
  const clock = { nowMs: T0_SECONDS * 1_000 };
  const metrics = new Metrics({ now: () => clock.nowMs, processMetrics: false });
  const orders = new MappingMetrics(metrics, 'orders');
  const value = async (name: string, labels: Record<string, string> = {}) =>
    sampleValue(parsePrometheusText(await metrics.render()), name, { mapping: 'orders', ...labels });
  return { clock, orders, value };
}

describe('MappingMetrics', () => {
  it("reports what the stream loop and the sink tell it under the mapping's name", async () => {
    const { orders, value } = setup();
    orders.eventsRead('insert', 3);
    orders.eventsRead('update', 2);
    orders.lookupMissed();
    orders.batchWritten(4, 400, 0.02);
    orders.deadLettered(1);
    orders.backfillStarted(1_000);
    orders.backfillCopied(250);
    expect(await value(METRIC_NAMES.changeEvents, { operation: 'insert' })).toBe(3);
    expect(await value(METRIC_NAMES.changeEvents, { operation: 'update' })).toBe(2);
    expect(await value(METRIC_NAMES.lookupMisses)).toBe(1);
    expect(await value(METRIC_NAMES.rowsWritten)).toBe(4);
    expect(await value(METRIC_NAMES.bytesWritten)).toBe(400);
    expect(await value(METRIC_NAMES.batches)).toBe(1);
    expect(await value(`${METRIC_NAMES.batchDuration}_count`)).toBe(1);
    expect(await value(METRIC_NAMES.deadLetteredRows)).toBe(1);
    expect(await value(METRIC_NAMES.backfillDocumentsEstimated)).toBe(1_000);
    expect(await value(METRIC_NAMES.backfillDocumentsCopied)).toBe(250);
  });

  it('issue 11: a resumed backfill counts what earlier runs copied in the remaining documents; done leaves none', async () => {
    const { orders, value } = setup();
    orders.backfillStarted(1_000, 400);
    orders.backfillCopied(100);
    expect(await value(METRIC_NAMES.backfillDocumentsRemaining)).toBe(500);
    orders.backfillDone();
    expect(await value(METRIC_NAMES.backfillDocumentsRemaining)).toBe(0);
  });

  it("issue 11: labels failures by their disposition only, and retries by the sink's failure class", async () => {
    const { orders, value } = setup();
    orders.retried(new BigQueryError('retryable', 'rate limited'));
    orders.retried(new BigQueryError('retryable', 'unavailable'));
    orders.retried(new BigQueryError('schema', 'no such field: total'));
    orders.failed(new BigQueryError('fatal', 'Access Denied'));
    orders.failed(new HistoryLostError('the resume token is gone'));
    orders.failed(new Error('socket closed'));
    orders.failed(new MalformedChangeEventError('no resume token'));
    orders.failed(new ConfigError('no such dataset setting'));
    orders.failed(new FencedOutError('a newer owner wrote'));
    orders.failed(
      toMongoError(
        new MongoServerError({
          ok: 0,
          code: 18,
          codeName: 'AuthenticationFailed',
          errmsg: 'Authentication failed.',
        }),
      ),
    );
    expect(await value(METRIC_NAMES.retries, { class: 'retryable' })).toBe(2);
    expect(await value(METRIC_NAMES.retries, { class: 'schema' })).toBe(1);
    expect(await value(METRIC_NAMES.errors, { class: 'fatal' })).toBe(2);
    expect(await value(METRIC_NAMES.errors, { class: 'history-lost' })).toBe(1);
    expect(await value(METRIC_NAMES.errors, { class: 'retryable' })).toBe(2);
    expect(await value(METRIC_NAMES.errors, { class: 'config-invalid' })).toBe(1);
    expect(await value(METRIC_NAMES.errors, { class: 'fenced-out' })).toBe(1);
  });

  it('a saved change-stream checkpoint sets the lag and resets the age; backfill progress does neither; a failed save neither', async () => {
    const { clock, orders, value } = setup();
    const store = new RecordingCheckpoints();
    const observed = orders.observeCheckpoints(store);

    await observed.save(
      {
        position: undefined,
        backfill: { snapshotStart: { t: 1, i: 0 }, lastId: undefined, copied: 0, done: false },
      },
      signal,
    );
    clock.nowMs += 4_000;
    // During the initial backfill there is no lag yet, only the age of the last saved progress.
    expect(await value(METRIC_NAMES.replicationLag)).toBeUndefined();
    expect(await value(METRIC_NAMES.checkpointAge)).toBe(4);

    await observed.save({ position: { token: '82aa', clusterTime: { t: T0_SECONDS + 1, i: 7 } } }, signal);
    clock.nowMs += 2_000;
    expect(await value(METRIC_NAMES.replicationLag)).toBe(5);
    expect(await value(METRIC_NAMES.checkpointAge)).toBe(2);

    store.failNext = new Error('not primary');
    await expect(
      observed.save({ position: { token: '82bb', clusterTime: { t: T0_SECONDS + 6, i: 0 } } }, signal),
    ).rejects.toThrow('not primary');
    clock.nowMs += 1_000;
    expect(await value(METRIC_NAMES.replicationLag)).toBe(6);
    expect(await value(METRIC_NAMES.checkpointAge)).toBe(3);
    expect(store.saved.map((c) => c.position?.token)).toEqual([undefined, '82aa']);

    // Issue 11: the backfill saves its progress while the stream runs; that save leaves the lag and the
    // checkpoint age alone (they are the stream's: a stream stuck during a long copy must still show).
    await observed.saveBackfill(
      { snapshotStart: { t: 1, i: 0 }, lastId: undefined, copied: 10, done: false },
      signal,
    );
    clock.nowMs += 1_000;
    expect(await value(METRIC_NAMES.replicationLag)).toBe(7);
    expect(await value(METRIC_NAMES.checkpointAge)).toBe(4);
    expect(store.progress.map((p) => p.copied)).toEqual([10]);
  });
});
