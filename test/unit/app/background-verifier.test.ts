import { describe, expect, it } from 'vitest';
import { BackgroundVerifier, type VerifyCandidate } from '../../../src/app/background-verifier.js';
import { parseMappingSettings } from '../../../src/config/settings.js';
import { type IdRange, type MappingState } from '../../../src/core/ports.js';
import { type MappingSettings } from '../../../src/core/settings.js';
import { type VerifyReport } from '../../../src/core/verify-model.js';
import { encodeId } from '../../../src/mongodb/checkpoint-store.js';
import { createLogger } from '../../../src/observability/logger.js';
import { Metrics } from '../../../src/observability/metrics.js';
import { parsePrometheusText, sampleValue } from '../../support/prometheus-text.js';
import { FakeMappingVerifier, verifyReport } from '../../support/fakes/repair.js';

const never = new AbortController().signal;
const MINUTE = 60_000;
const DIFFERING: IdRange = { after: encodeId(9), upTo: encodeId(19) };

function mapping(id: string, verify?: Record<string, unknown>): MappingSettings {
  return parseMappingSettings({
    _id: id,
    mongo_database: 'db',
    mongo_collection: id,
    bigquery_table: id,
    ...(verify && { verify }),
  });
}

function setup(options: {
  mappings: MappingSettings[];
  states?: Record<string, MappingState>;
  differing?: Record<string, IdRange[]>;
  /** Mappings with a repair pending or running. */
  owed?: Set<string>;
}) {
  let now = 0;
  const clock = { now: () => now };
  const lines: Record<string, unknown>[] = [];
  const verifiers = new Map<string, FakeMappingVerifier>();
  const recorded: VerifyReport[] = [];
  const repairs: { mapping: string; ranges: readonly IdRange[] }[] = [];
  const lastVerified = new Map<string, Date>();
  const metrics = new Metrics({ processMetrics: false });
  const shared = { running: 0, maxRunning: 0, built: 0 };
  const states = new Map(options.mappings.map((m) => [m.id, options.states?.[m.id] ?? 'streaming']));
  const verifier = new BackgroundVerifier({
    states: () => states,
    candidates: () =>
      Promise.resolve(
        options.mappings.map((settings): VerifyCandidate => ({
          settings,
          lastVerifiedAt: lastVerified.get(settings.id),
          repairOwed: options.owed?.has(settings.id) ?? false,
        })),
      ),
    verifier: (settings) => {
      shared.built++;
      let fake = verifiers.get(settings.id);
      if (!fake) {
        fake = new FakeMappingVerifier(settings.id, (id) => verifyReport(id, options.differing?.[id]));
        const inner = fake;
        // Counts verifications running at once across every mapping of the daemon.
        inner.gate = () => {
          shared.running++;
          shared.maxRunning = Math.max(shared.maxRunning, shared.running);
          return new Promise((resolve) =>
            setTimeout(() => {
              shared.running--;
              resolve();
            }, 2),
          );
        };
        verifiers.set(settings.id, fake);
      }
      return fake;
    },
    record: (settings, report) => {
      recorded.push(report);
      lastVerified.set(settings.id, new Date(now));
      return Promise.resolve();
    },
    requestRepair: (settings, ranges) => {
      repairs.push({ mapping: settings.id, ranges });
      return Promise.resolve();
    },
    log: createLogger({
      level: 'info',
      destination: { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) },
    }),
    metrics,
    clock,
  });
  const value = async (name: string, labels: Record<string, string>) =>
    sampleValue(parsePrometheusText(await metrics.registry.metrics()), name, labels);
  return {
    verifier,
    verifiers,
    recorded,
    repairs,
    shared,
    states,
    value,
    lines,
    advance: (ms: number) => {
      now += ms;
    },
  };
}

describe('BackgroundVerifier', () => {
  it('verifies only mappings with verify set that stream here, with their share, at their interval', async () => {
    const t = setup({
      mappings: [
        mapping('on', { interval_minutes: 10, share: 0.25 }),
        mapping('off'),
        mapping('copying', {}),
      ],
      states: { copying: 'backfilling' },
    });

    expect(await t.verifier.tick(never)).toBe(1);
    expect(t.verifiers.get('on')?.calls).toEqual([{ mapping: 'on', share: 0.25 }]);
    expect(t.verifiers.has('off')).toBe(false);
    expect(t.verifiers.has('copying')).toBe(false);

    t.advance(9 * MINUTE);
    expect(await t.verifier.tick(never)).toBe(0);
    t.advance(MINUTE);
    expect(await t.verifier.tick(never)).toBe(1);
    expect(t.verifiers.get('on')?.calls).toHaveLength(2);
    // One verifier across runs: it takes its share of the ranges in turn from where the last run stopped.
    expect(t.shared.built).toBe(1);
  });

  it('keeps the verifier of a mapping across a repair request (its configuration key changes, not its target)', async () => {
    const before = mapping('m', { share: 0.5 });
    const after = parseMappingSettings({
      _id: 'm',
      mongo_database: 'db',
      mongo_collection: 'm',
      bigquery_table: 'm',
      verify: { share: 0.5 },
      repair_requested_at: new Date('2026-12-06T10:00:00Z'),
    });
    expect(after.configurationKey).not.toBe(before.configurationKey);
    const candidates = [before];
    const t = setup({ mappings: candidates });
    await t.verifier.tick(never);
    candidates[0] = after;
    t.advance(60 * MINUTE);
    await t.verifier.tick(never);
    expect(t.shared.built).toBe(1);
  });

  it('runs one verification at a time for the whole daemon', async () => {
    const t = setup({ mappings: ['a', 'b', 'c'].map((id) => mapping(id, {})) });
    await t.verifier.tick(never);
    expect(t.recorded.map((r) => r.mapping)).toEqual(['a', 'b', 'c']);
    expect(t.shared.maxRunning).toBe(1);
  });

  it('sets the mba_verify_* metrics of each run, and keeps the report for status', async () => {
    const t = setup({ mappings: [mapping('orders', {})], differing: { orders: [DIFFERING] } });
    await t.verifier.tick(never);
    t.advance(60 * MINUTE);
    await t.verifier.tick(never);
    const orders = { mapping: 'orders' };
    expect(await t.value('mba_verify_runs_total', orders)).toBe(2);
    expect(await t.value('mba_verify_ranges_checked_total', orders)).toBe(16);
    expect(await t.value('mba_verify_ranges_differing', orders)).toBe(1);
    expect(await t.value('mba_verify_documents_missing', orders)).toBe(1);
    expect(await t.value('mba_verify_documents_extra', orders)).toBe(0);
    expect(await t.value('mba_verify_bytes_scanned_total', orders)).toBe(8_192);
    expect(await t.value('mba_verify_last_run_timestamp_seconds', orders)).toBe(
      Date.parse('2026-12-06T10:00:05Z') / 1_000,
    );
    expect(t.recorded).toHaveLength(2);
  });

  it('asks for a repair of the differing ranges only with repair: true', async () => {
    const t = setup({
      mappings: [mapping('fix', { repair: true }), mapping('report', {})],
      differing: { fix: [DIFFERING], report: [DIFFERING] },
    });
    await t.verifier.tick(never);
    expect(t.repairs).toEqual([{ mapping: 'fix', ranges: [DIFFERING] }]);
  });

  it('a failed verification is logged, not fatal, and waits an interval before the next try', async () => {
    const t = setup({ mappings: [mapping('a', { interval_minutes: 5 }), mapping('b', {})] });
    await t.verifier.tick(never);
    const a = t.verifiers.get('a');
    if (!a) throw new Error('a was not verified');
    a.failWith = new Error('BigQuery quota exceeded');
    t.advance(5 * MINUTE);
    expect(await t.verifier.tick(never)).toBe(1);
    expect(a.calls).toHaveLength(2);
    expect(await t.verifier.tick(never)).toBe(0);
    t.advance(5 * MINUTE);
    expect(await t.verifier.tick(never)).toBe(1);
  });

  it('asks for no repair while one is pending or running (finding 8)', async () => {
    // Each request restarts the mapping: re-asked every interval, it would interrupt the repair under way.
    const owed = new Set(['fix']);
    const t = setup({
      mappings: [mapping('fix', { repair: true, interval_minutes: 1 })],
      differing: { fix: [DIFFERING] },
      owed,
    });
    await t.verifier.tick(never);
    expect(t.repairs).toEqual([]);
    owed.clear();
    t.advance(MINUTE);
    await t.verifier.tick(never);
    expect(t.repairs).toEqual([{ mapping: 'fix', ranges: [DIFFERING] }]);
  });

  it('reports, and does not repair again, a range a repair covered and did not fix (finding 8)', async () => {
    // A dead-lettered document stays missing whatever is copied: repairing it again and again would copy
    // the range and restart the mapping every interval.
    const OTHER: IdRange = { after: encodeId(59), upTo: encodeId(69) };
    const differing: Record<string, IdRange[]> = { fix: [DIFFERING] };
    const t = setup({ mappings: [mapping('fix', { repair: true, interval_minutes: 1 })], differing });
    await t.verifier.tick(never);
    expect(t.repairs).toHaveLength(1);

    t.advance(MINUTE);
    differing.fix = [DIFFERING, OTHER];
    await t.verifier.tick(never);
    expect(t.repairs.map((r) => r.ranges)).toEqual([[DIFFERING], [OTHER]]);
    expect(t.lines.map((l) => l.msg)).toContain(
      'background verification: differences a repair did not fix; reported, not repaired again',
    );

    // Once the range matches again, a new difference there is repaired.
    t.advance(MINUTE);
    differing.fix = [];
    await t.verifier.tick(never);
    t.advance(MINUTE);
    differing.fix = [DIFFERING];
    await t.verifier.tick(never);
    expect(t.repairs.map((r) => r.ranges)).toEqual([[DIFFERING], [OTHER], [DIFFERING]]);
  });
});
