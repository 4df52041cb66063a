// Issue 14, `verify --repair`: verify, hand the ranges that still differ to the archiver, wait until it has
// served them, verify again. Fakes of the verifier and of the repair desk (the archiver's side).
import { describe, expect, it } from 'vitest';
import { verifyAndRepair, type RepairDesk } from '../../../src/app/verify-repair.js';
import { repairedClean, renderVerifyRepair } from '../../../src/cli/verify.js';
import { type IdRange } from '../../../src/core/ports.js';
import { type MappingVerifier, type VerifyReport } from '../../../src/core/verify-model.js';
import { type RepairResult } from '../../../src/mongodb/checkpoint-store.js';

const RANGE_A: IdRange = { after: undefined, upTo: '{"id":{"$numberInt":"99"}}' };
const RANGE_B: IdRange = { after: '{"id":{"$numberInt":"500"}}', upTo: undefined };

function report(differingRanges: readonly IdRange[], missing: readonly string[]): VerifyReport {
  return {
    mapping: 'items',
    view: 'p.d.items_view',
    startedAt: new Date(0),
    finishedAt: new Date(1_000),
    rangesChecked: 4,
    differingRanges,
    documentsChecked: 1_000,
    missing: { count: missing.length, ids: missing },
    extra: { count: 0, ids: [] },
    differing: { count: 0, ids: [] },
    bytesScanned: 0,
  };
}

/** Answers with the reports given, in turn; records what it was asked. */
function verifierAnswering(...reports: VerifyReport[]): MappingVerifier & { calls: number } {
  const fake = {
    calls: 0,
    verify: () => {
      const next = reports[fake.calls++];
      if (!next) throw new Error('verified more often than the test expected');
      return Promise.resolve(next);
    },
  };
  return fake;
}

const SERVED: RepairResult = {
  through: new Date(2_000),
  reason: 'verify',
  finishedAt: new Date(3_000),
  ranges: 2,
  documents: 120,
  deletes: 3,
};

function desk(result: RepairResult | undefined): RepairDesk<string> & { asked: IdRange[][] } {
  const asked: IdRange[][] = [];
  return {
    asked,
    request: (ranges) => {
      asked.push([...ranges]);
      return Promise.resolve('request-1');
    },
    wait: (request) => {
      expect(request).toBe('request-1');
      return Promise.resolve(result);
    },
  };
}

const OPTIONS = { ranges: 4, repairTimeoutMs: 1_000 };

describe('verify --repair', () => {
  it('asks for a repair of exactly the ranges that differ, waits for it, and verifies again', async () => {
    const verifier = verifierAnswering(report([RANGE_A, RANGE_B], ['1', '600']), report([], []));
    const repairs = desk(SERVED);
    const outcome = await verifyAndRepair(verifier, repairs, OPTIONS, new AbortController().signal);
    expect(repairs.asked).toEqual([[RANGE_A, RANGE_B]]);
    expect(verifier.calls).toBe(2);
    expect(outcome.repair?.result).toEqual(SERVED);
    expect(outcome.after?.missing.count).toBe(0);
    expect(repairedClean(outcome)).toBe(true);
    expect(renderVerifyRepair(outcome, false)).toContain(
      'repair wrote 123 rows (120 documents, 3 deletes) over 2 range(s)',
    );
  });

  it('asks for nothing when nothing differs', async () => {
    const verifier = verifierAnswering(report([], []));
    const repairs = desk(SERVED);
    const outcome = await verifyAndRepair(verifier, repairs, OPTIONS, new AbortController().signal);
    expect(repairs.asked).toEqual([]);
    expect(outcome.repair).toBeUndefined();
    expect(repairedClean(outcome)).toBe(true);
  });

  it('says the repair is queued, and is not clean, when no archiver served it in time', async () => {
    const verifier = verifierAnswering(report([RANGE_A], ['1']));
    const outcome = await verifyAndRepair(verifier, desk(undefined), OPTIONS, new AbortController().signal);
    expect(verifier.calls).toBe(1);
    expect(outcome.after).toBeUndefined();
    expect(repairedClean(outcome)).toBe(false);
    expect(renderVerifyRepair(outcome, false)).toMatch(/not served within the repair timeout/);
    expect(JSON.parse(renderVerifyRepair(outcome, true))).toMatchObject({
      repair: { queued: true },
      after: null,
    });
  });

  it('is not clean when differences remain after the repair', async () => {
    const verifier = verifierAnswering(report([RANGE_A], ['1']), report([RANGE_A], ['1']));
    const outcome = await verifyAndRepair(verifier, desk(SERVED), OPTIONS, new AbortController().signal);
    expect(repairedClean(outcome)).toBe(false);
  });
});
