import { readFileSync } from 'node:fs';
import { register as globalRegistry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { MAPPING_STATES, METRIC_NAMES, Metrics } from '../../../src/observability/metrics.js';
import { parsePrometheusText, sampleValue } from '../../support/prometheus-text.js';

async function valueOf(
  metrics: Metrics,
  name: string,
  labels: Record<string, string>,
): Promise<number | undefined> {
  return sampleValue(parsePrometheusText(await metrics.registry.metrics()), name, labels);
}

function testMetrics(now: () => number = () => 0): Metrics {
  return new Metrics({ now, processMetrics: false });
}

describe('Metrics', () => {
  it('counts change events by mapping and operation type', async () => {
    const metrics = testMetrics();
    metrics.eventsRead('orders', 'insert', 3);
    metrics.eventsRead('orders', 'insert');
    metrics.eventsRead('orders', 'delete');
    metrics.eventsRead('users', 'insert', 2);
    const name = METRIC_NAMES.changeEvents;
    expect(await valueOf(metrics, name, { mapping: 'orders', operation: 'insert' })).toBe(4);
    expect(await valueOf(metrics, name, { mapping: 'orders', operation: 'delete' })).toBe(1);
    expect(await valueOf(metrics, name, { mapping: 'users', operation: 'insert' })).toBe(2);
  });

  it('a written batch adds its rows and bytes, one batch, and one duration observation', async () => {
    const metrics = testMetrics();
    metrics.batchWritten('orders', 500, 120_000, 0.2);
    metrics.batchWritten('orders', 10, 2_000, 3);
    const orders = { mapping: 'orders' };
    expect(await valueOf(metrics, 'mba_rows_written_total', orders)).toBe(510);
    expect(await valueOf(metrics, 'mba_bytes_written_total', orders)).toBe(122_000);
    expect(await valueOf(metrics, 'mba_batches_total', orders)).toBe(2);
    expect(await valueOf(metrics, 'mba_batch_duration_seconds_count', orders)).toBe(2);
    expect(await valueOf(metrics, 'mba_batch_duration_seconds_sum', orders)).toBeCloseTo(3.2);
    expect(await valueOf(metrics, 'mba_batch_duration_seconds_bucket', { ...orders, le: '0.25' })).toBe(1);
    expect(await valueOf(metrics, 'mba_batch_duration_seconds_bucket', { ...orders, le: '5' })).toBe(2);
  });

  it('counts retries and errors by failure class, dead-lettered rows, lookup misses and backfill progress', async () => {
    const metrics = testMetrics();
    metrics.retried('orders', 'retryable');
    metrics.retried('orders', 'retryable');
    metrics.failed('orders', 'fatal');
    metrics.failed('orders', 'retryable');
    metrics.deadLettered('orders', 2);
    metrics.lookupMissed('orders');
    metrics.backfillStarted('orders', 1_000);
    metrics.backfillCopied('orders', 250);
    metrics.backfillCopied('orders', 250);
    const orders = { mapping: 'orders' };
    expect(await valueOf(metrics, 'mba_retries_total', { ...orders, class: 'retryable' })).toBe(2);
    expect(await valueOf(metrics, 'mba_errors_total', { ...orders, class: 'fatal' })).toBe(1);
    expect(await valueOf(metrics, 'mba_errors_total', { ...orders, class: 'retryable' })).toBe(1);
    expect(await valueOf(metrics, 'mba_dead_lettered_rows_total', orders)).toBe(2);
    expect(await valueOf(metrics, 'mba_lookup_misses_total', orders)).toBe(1);
    expect(await valueOf(metrics, 'mba_backfill_documents_estimated', orders)).toBe(1_000);
    expect(await valueOf(metrics, 'mba_backfill_documents_copied_total', orders)).toBe(500);
  });

  it('issue 11: the remaining backfill documents count down from the estimate, resumed progress included, and end at 0', async () => {
    const metrics = testMetrics();
    const orders = { mapping: 'orders' };
    const remaining = () => valueOf(metrics, METRIC_NAMES.backfillDocumentsRemaining, orders);
    // A restart: 600 of 1,000 were copied by the previous process, whose copied counter is gone.
    metrics.backfillStarted('orders', 1_000, 600);
    expect(await remaining()).toBe(400);
    metrics.backfillCopied('orders', 150);
    expect(await remaining()).toBe(250);
    expect(await valueOf(metrics, METRIC_NAMES.backfillDocumentsCopied, orders)).toBe(150);
    // Documents inserted since the start carry the copy past its estimate: never negative.
    metrics.backfillCopied('orders', 400);
    expect(await remaining()).toBe(0);
    metrics.backfillStarted('users', 1_000);
    metrics.backfillCopied('users', 10);
    metrics.backfillDone('users');
    expect(await valueOf(metrics, METRIC_NAMES.backfillDocumentsRemaining, { mapping: 'users' })).toBe(0);
  });

  it('replication lag is now minus the cluster time of the last checkpointed change, and grows while stalled', async () => {
    let now = 1_700_000_100_000;
    const metrics = testMetrics(() => now);
    expect(await valueOf(metrics, METRIC_NAMES.replicationLag, { mapping: 'orders' })).toBeUndefined();

    metrics.checkpointed('orders', 1_700_000_090);
    expect(await valueOf(metrics, METRIC_NAMES.replicationLag, { mapping: 'orders' })).toBe(10);
    expect(await valueOf(metrics, METRIC_NAMES.checkpointAge, { mapping: 'orders' })).toBe(0);

    now += 30_000;
    expect(await valueOf(metrics, METRIC_NAMES.replicationLag, { mapping: 'orders' })).toBe(40);
    expect(await valueOf(metrics, METRIC_NAMES.checkpointAge, { mapping: 'orders' })).toBe(30);
  });

  it('a checkpoint of backfill progress only resets the checkpoint age; a clock skew never shows as negative lag', async () => {
    let now = 1_700_000_100_000;
    const metrics = testMetrics(() => now);
    metrics.checkpointed('orders', 1_700_000_000);
    now += 5_000;
    metrics.checkpointed('orders', undefined);
    expect(await valueOf(metrics, METRIC_NAMES.replicationLag, { mapping: 'orders' })).toBe(105);
    expect(await valueOf(metrics, METRIC_NAMES.checkpointAge, { mapping: 'orders' })).toBe(0);

    metrics.checkpointed('users', now / 1_000 + 2);
    expect(await valueOf(metrics, METRIC_NAMES.replicationLag, { mapping: 'users' })).toBe(0);
  });

  it('reports exactly one state per mapping and starts its counters at 0', async () => {
    const metrics = testMetrics();
    metrics.mappingState('orders', 'backfilling');
    metrics.mappingState('orders', 'streaming');
    for (const state of MAPPING_STATES) {
      const expected = state === 'streaming' ? 1 : 0;
      expect(await valueOf(metrics, METRIC_NAMES.mappingState, { mapping: 'orders', state })).toBe(expected);
    }
    expect(await valueOf(metrics, METRIC_NAMES.rowsWritten, { mapping: 'orders' })).toBe(0);
  });

  it('issue 14: the oplog window per source and the headroom per mapping, each dropped when unknown', async () => {
    const metrics = testMetrics();
    metrics.oplogWindow('rs0', 86_400);
    metrics.oplogHeadroom('orders', 3_600);
    metrics.oplogHeadroom('users', -5);
    expect(await valueOf(metrics, METRIC_NAMES.oplogWindow, { source: 'rs0' })).toBe(86_400);
    expect(await valueOf(metrics, METRIC_NAMES.oplogHeadroom, { mapping: 'orders' })).toBe(3_600);
    // Below 0: the resume point is already gone, and the number says by how much.
    expect(await valueOf(metrics, METRIC_NAMES.oplogHeadroom, { mapping: 'users' })).toBe(-5);
    metrics.oplogWindow('rs0', undefined);
    metrics.oplogHeadroom('orders', undefined);
    await metrics.forgetMapping('users');
    const text = await metrics.registry.metrics();
    expect(text).not.toMatch(/^mba_oplog_window_seconds\{/m);
    expect(text).not.toMatch(/^mba_oplog_headroom_seconds\{/m);
  });

  it("forgetMapping drops every series of a removed mapping and keeps the others'", async () => {
    const metrics = testMetrics(() => 1_700_000_000_000);
    for (const mapping of ['orders', 'users']) {
      metrics.mappingState(mapping, 'streaming');
      metrics.eventsRead(mapping, 'update');
      metrics.batchWritten(mapping, 1, 100, 0.1);
      metrics.retried(mapping, 'retryable');
      metrics.checkpointed(mapping, 1_699_999_999);
      metrics.backfillStarted(mapping, 100);
      metrics.backfillCopied(mapping, 10);
    }
    await metrics.forgetMapping('orders');
    const samples = parsePrometheusText(await metrics.registry.metrics());
    expect(samples.filter((s) => s.labels.mapping === 'orders')).toEqual([]);
    expect(samples.filter((s) => s.labels.mapping === 'users').length).toBeGreaterThan(20);
  });

  it('issue 12: each lease round is one observation of its time, and the leases held are the last round’s', async () => {
    const metrics = testMetrics();
    metrics.leaseRound(0.02, 150);
    metrics.leaseRound(7, 149);
    const none = {};
    expect(await valueOf(metrics, `${METRIC_NAMES.leaseRound}_count`, none)).toBe(2);
    expect(await valueOf(metrics, `${METRIC_NAMES.leaseRound}_sum`, none)).toBeCloseTo(7.02);
    // A round over the default 15 s TTL shows apart from the ones well within it.
    expect(await valueOf(metrics, `${METRIC_NAMES.leaseRound}_bucket`, { le: '5' })).toBe(1);
    expect(await valueOf(metrics, `${METRIC_NAMES.leaseRound}_bucket`, { le: '15' })).toBe(2);
    expect(await valueOf(metrics, METRIC_NAMES.leasesHeld, none)).toBe(149);
  });

  it('issue 12: the slots of MAX_MAPPINGS_PREPARING and the open Storage Write connections are daemon-wide gauges, 0 at the start', async () => {
    const metrics = testMetrics();
    expect(await valueOf(metrics, 'mba_mappings_preparing', {})).toBe(0);
    expect(await valueOf(metrics, 'mba_mappings_waiting_to_prepare', {})).toBe(0);
    expect(await valueOf(metrics, 'mba_storage_write_connections_open', {})).toBe(0);
    metrics.preparing({ held: 8, waiting: 3 });
    metrics.storageWriteConnections(1);
    metrics.storageWriteConnections(1);
    metrics.storageWriteConnections(-1);
    expect(await valueOf(metrics, 'mba_mappings_preparing', {})).toBe(8);
    expect(await valueOf(metrics, 'mba_mappings_waiting_to_prepare', {})).toBe(3);
    expect(await valueOf(metrics, 'mba_storage_write_connections_open', {})).toBe(1);
  });

  it('owns its registry: two instances do not clash and the global registry stays empty', async () => {
    const a = testMetrics();
    const b = new Metrics();
    a.eventsRead('orders', 'insert');
    expect(
      await valueOf(b, METRIC_NAMES.changeEvents, { mapping: 'orders', operation: 'insert' }),
    ).toBeUndefined();
    expect(globalRegistry.getMetricsAsArray()).toEqual([]);
  });

  it('registers process and Node.js metrics on the same registry', async () => {
    const metrics = new Metrics();
    const text = await metrics.render();
    expect(text).toContain('process_cpu_user_seconds_total');
    expect(text).toContain('nodejs_eventloop_lag_seconds');
    expect(text).toContain('process_resident_memory_bytes');
    expect(metrics.contentType).toMatch(/^text\/plain; version=0\.0\.4/);
  });

  it('every metric is named mba_* and documented in docs/operations.md', () => {
    const doc = readFileSync(new URL('../../../docs/operations.md', import.meta.url), 'utf8');
    for (const name of Object.values(METRIC_NAMES)) {
      expect(name).toMatch(/^mba_[a-z_]+$/);
      expect(doc).toContain(`\`${name}\``);
    }
  });
});
