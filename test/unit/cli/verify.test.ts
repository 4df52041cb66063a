import { describe, expect, it } from 'vitest';
import { type VerifyReport } from '../../../src/core/verify-model.js';
import { differences, renderVerifyReport } from '../../../src/cli/verify.js';

const report: VerifyReport = {
  mapping: 'orders',
  view: 'p.d.orders_view',
  startedAt: new Date('2026-12-06T10:00:00Z'),
  finishedAt: new Date('2026-12-06T10:00:02.5Z'),
  rangesChecked: 16,
  differingRanges: [{ after: undefined, upTo: '{"id":{"$numberInt":"9"}}' }],
  documentsChecked: 1_000,
  missing: { count: 2, ids: ['{"$numberInt":"3"}', '{"$numberInt":"4"}'] },
  extra: { count: 0, ids: [] },
  differing: { count: 150, ids: Array.from({ length: 100 }, (_, i) => `"d${String(i)}"`) },
  bytesScanned: 4_096,
  unverifiable: 1,
  settled: false,
};

describe('verify output', () => {
  it('prints counts, ids, bytes scanned, and what was not verified or not settled', () => {
    const text = renderVerifyReport(report, false);
    expect(text).toContain('verify orders: p.d.orders_view (2.5 s)');
    expect(text).toContain('ranges checked: 16, differing: 1');
    expect(text).toContain('missing in BigQuery: 2: {"$numberInt":"3"}, {"$numberInt":"4"}');
    expect(text).toContain('extra in BigQuery: 0');
    expect(text).toContain('differing: 150 (first 100): "d0", "d1"');
    expect(text).toContain('BigQuery bytes scanned: 4096');
    expect(text).toContain('not verified: 1 documents');
    expect(text).toContain('did not pass the time of the reads');
    expect(text.split('\n').at(-1)).toBe('not equal: 152 documents differ');
    expect(differences(report)).toBe(152);
  });

  it('prints the report as one JSON document', () => {
    const parsed = JSON.parse(renderVerifyReport(report, true)) as Record<string, unknown>;
    expect(parsed).toMatchObject({
      mapping: 'orders',
      startedAt: '2026-12-06T10:00:00.000Z',
      missing: { count: 2 },
      bytesScanned: 4_096,
      settled: false,
    });
  });
});
