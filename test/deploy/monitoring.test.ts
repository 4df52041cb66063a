import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { Metrics } from '../../src/observability/metrics.js';
import {
  DASHBOARD,
  MANIFESTS_DIR,
  MONITORING_DIR,
  OVERLAYS,
  promqlMetricNames,
  render,
  renderOverlay,
  REPO_ROOT,
  type KubeObject,
} from './support.js';

/** Series names a metric of each type exposes, as Prometheus stores them. */
const SERIES_SUFFIXES: Record<string, readonly string[]> = {
  histogram: ['_bucket', '_sum', '_count'],
  summary: ['', '_sum', '_count'],
};

/** Every series name the daemon exports: its own metrics and prom-client's process and Node.js ones. */
async function exportedSeries(): Promise<Set<string>> {
  const metrics = await new Metrics().registry.getMetricsAsJSON();
  return new Set(
    metrics.flatMap(({ name, type }) =>
      (SERIES_SUFFIXES[String(type)] ?? ['']).map((suffix) => name + suffix),
    ),
  );
}

/** What is wrong with each expression: a parse error, or metric names the daemon does not export. */
function problems(exprs: readonly string[], known: ReadonlySet<string>): string[] {
  return promqlMetricNames(exprs).flatMap((verdict, i) => {
    if ('error' in verdict) return [`${exprs[i] ?? ''}: ${verdict.error}`];
    if (verdict.names.length === 0) return [`${exprs[i] ?? ''}: selects no metric`];
    return verdict.names
      .filter((name) => !known.has(name))
      .map((name) => `${exprs[i] ?? ''}: unknown metric ${name}`);
  });
}

interface Rule {
  readonly alert: string;
  readonly expr: string;
  readonly for?: string;
  readonly labels: { readonly severity: string };
  readonly annotations: { readonly summary: string; readonly description: string };
}

function monitoringObject(kind: string): KubeObject {
  const [object, ...others] = render(MONITORING_DIR).objects.filter((o) => o.kind === kind);
  if (object === undefined || others.length > 0) throw new Error(`expected exactly one ${kind}`);
  return object;
}

function alertRules(): Rule[] {
  const spec = monitoringObject('PrometheusRule').spec as { groups: { rules: Rule[] }[] };
  return spec.groups.flatMap((group) => group.rules);
}

/**
 * The alert conditions docs/operations.md gives: the lines of its PromQL examples that compare (joined with
 * their continuation lines), and the `invalid` state its prose names next to `failed`.
 */
function documentedAlerts(): string[] {
  const text = readFileSync(join(REPO_ROOT, 'docs', 'operations.md'), 'utf8');
  const blocks = [...text.matchAll(/```promql\n([\s\S]*?)```/g)].map((m) => m[1] ?? '');
  const exprs = blocks
    .flatMap((block) => block.replace(/\n\s+/g, ' ').split('\n'))
    .filter((line) => line !== '' && !line.startsWith('#'));
  const invalid = /`(mba_mapping_state\{state="invalid"\} == 1)`/.exec(text)?.[1];
  return [...exprs.filter((expr) => / (>|<|==) /.test(expr)), ...(invalid ? [invalid] : [])];
}

/** Grafana's interval variables, replaced by a duration so that Prometheus's grammar applies. */
function withoutGrafanaVariables(expr: string): string {
  return expr.replaceAll('$__rate_interval', '5m').replaceAll('$__interval', '1m');
}

interface Panel {
  readonly type: string;
  readonly title: string;
  readonly id: number;
  readonly datasource?: { readonly uid: string };
  readonly targets?: readonly { readonly expr: string; readonly refId: string }[];
}

function dashboard(): { panels: Panel[]; templating: { list: { name: string; definition?: string }[] } } {
  return JSON.parse(readFileSync(DASHBOARD, 'utf8')) as ReturnType<typeof dashboard>;
}

let known: Set<string>;
beforeAll(async () => {
  known = await exportedSeries();
});

describe('the metric check', () => {
  // The checks below prove something only if they can fail.
  it('rejects an unknown metric name, a selector of no metric, and a syntax error', () => {
    expect(known).toContain('mba_replication_lag_seconds');
    expect(known).toContain('mba_batch_duration_seconds_bucket');
    expect(known).toContain('process_resident_memory_bytes');
    expect(problems(['max by (mapping) (mba_replication_lag_seconds) > 300'], known)).toEqual([]);
    expect(problems(['max by (mapping) (mba_replication_lag_second) > 300'], known)).toEqual([
      'max by (mapping) (mba_replication_lag_second) > 300: unknown metric mba_replication_lag_second',
    ]);
    expect(problems(['rate(mba_rows_written_total[5m]) / mba_rows_written'], known)).toEqual([
      'rate(mba_rows_written_total[5m]) / mba_rows_written: unknown metric mba_rows_written',
    ]);
    expect(problems(['vector(1)'], known)).toEqual(['vector(1): selects no metric']);
    expect(problems(['sum(rate(mba_rows_written_total[5m])'], known)).toHaveLength(1);
  });
});

describe('PrometheusRule', () => {
  // Before: the alerts were prose in docs/operations.md only.
  it('issue 13: holds the alerts docs/operations.md gives, word for word', () => {
    const documented = documentedAlerts();
    expect(documented.length).toBeGreaterThanOrEqual(5);
    const exprs = alertRules().map((rule) => rule.expr);
    for (const expr of documented) expect(exprs, expr).toContain(expr);
  });

  it('parses, and uses only metrics the daemon exports', () => {
    expect(
      problems(
        alertRules().map((rule) => rule.expr),
        known,
      ),
    ).toEqual([]);
  });

  it('names each alert once, with a severity, a summary and a description', () => {
    const rules = alertRules();
    expect(new Set(rules.map((rule) => rule.alert)).size).toBe(rules.length);
    for (const rule of rules) {
      expect(rule.alert).toMatch(/^MongoBigQueryArchiver[A-Z]\w+$/);
      expect(['critical', 'warning'], rule.alert).toContain(rule.labels.severity);
      expect(rule.annotations.summary, rule.alert).not.toBe('');
      expect(rule.annotations.description, rule.alert).not.toBe('');
      if (rule.for !== undefined) expect(rule.for).toMatch(/^\d+[smh]$/);
    }
  });
});

describe('PodMonitor', () => {
  it.each(OVERLAYS)(
    "scrapes /metrics on the named port of the overlay %s's pods, in their namespace",
    (overlay) => {
      const monitor = monitoringObject('PodMonitor');
      const deployment = renderOverlay(overlay).objects.find((o) => o.kind === 'Deployment');
      const template = (
        deployment?.spec as {
          template: {
            metadata: { labels: Record<string, string>; annotations: Record<string, string> };
            spec: { containers: { ports: { name: string; containerPort: number }[] }[] };
          };
        }
      ).template;
      const spec = monitor.spec as {
        selector: { matchLabels: Record<string, string> };
        podMetricsEndpoints: { port: string; path: string }[];
      };
      expect(monitor.metadata.namespace).toBe(deployment?.metadata.namespace);
      for (const [label, value] of Object.entries(spec.selector.matchLabels))
        expect(template.metadata.labels[label], label).toBe(value);
      const [endpoint] = spec.podMetricsEndpoints;
      const port = template.spec.containers[0]?.ports.find((p) => p.name === endpoint?.port);
      expect(String(port?.containerPort)).toBe(template.metadata.annotations['prometheus.io/port']);
      expect(endpoint?.path).toBe(template.metadata.annotations['prometheus.io/path']);
    },
  );

  it('and the PrometheusRule are all the monitoring kustomization applies', () => {
    expect(render(MONITORING_DIR).objects.map((o) => `${o.kind} ${o.metadata.name}`)).toEqual([
      'PodMonitor mongo-bigquery-archiver',
      'PrometheusRule mongo-bigquery-archiver',
    ]);
    expect(MONITORING_DIR.startsWith(MANIFESTS_DIR)).toBe(true);
  });
});

describe('Grafana dashboard', () => {
  it('is JSON whose every query parses and uses only metrics the daemon exports', () => {
    const { panels, templating } = dashboard();
    const queries = panels.flatMap((panel) =>
      (panel.targets ?? []).map((t) => withoutGrafanaVariables(t.expr)),
    );
    const variableQueries = templating.list
      .map((v) => /^label_values\((\w+), \w+\)$/.exec(v.definition ?? '')?.[1])
      .filter((name) => name !== undefined);
    expect(queries.length).toBeGreaterThan(10);
    expect(variableQueries).toEqual(['mba_mapping_state']);
    expect(problems([...queries, ...variableQueries], known)).toEqual([]);
  });

  it('shows lag, events per second, errors, backfill progress, lease rounds and leases held, memory and write latency', () => {
    const used = new Set(
      promqlMetricNames(
        dashboard().panels.flatMap((p) => (p.targets ?? []).map((t) => withoutGrafanaVariables(t.expr))),
      ).flatMap((verdict) => ('names' in verdict ? verdict.names : [])),
    );
    for (const name of [
      'mba_replication_lag_seconds',
      'mba_checkpoint_age_seconds',
      'mba_change_events_total',
      'mba_errors_total',
      'mba_backfill_documents_remaining',
      'mba_backfill_documents_estimated',
      'mba_backfill_documents_copied_total',
      'mba_lease_round_seconds_bucket',
      'mba_leases_held',
      'process_resident_memory_bytes',
      'mba_batch_duration_seconds_bucket',
    ])
      expect(used, name).toContain(name);
  });

  it('queries the chosen Prometheus in every panel, with unique panel ids and query ids', () => {
    const { panels, templating } = dashboard();
    expect(templating.list.map((v) => v.name)).toContain('datasource');
    expect(new Set(panels.map((p) => p.id)).size).toBe(panels.length);
    for (const panel of panels.filter((p) => p.type !== 'row')) {
      expect(panel.datasource?.uid, panel.title).toBe('${datasource}');
      const refIds = (panel.targets ?? []).map((t) => t.refId);
      expect(new Set(refIds).size, panel.title).toBe(refIds.length);
    }
  });
});
