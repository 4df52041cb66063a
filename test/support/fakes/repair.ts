import {
  type MappingVerifier,
  type VerifyReport,
  type DocumentDigest,
  type RangeDigest,
  type ViewAnswer,
  type ViewReader,
} from '../../../src/core/verify-model.js';
import { type IdRange } from '../../../src/core/ports.js';
import { type ExistingIds, type RepairStore } from '../../../src/app/repair-role.js';
import { type RepairProgress, type RepairResult } from '../../../src/mongodb/checkpoint-store.js';
import { decodeId } from '../../../src/mongodb/checkpoint-store.js';

/** The `_doc_id` of a whole-number `_id` (as docIdString writes it). */
export function numberDocId(id: number): string {
  return `{"$numberInt":"${String(id)}"}`;
}

function idOf(docId: string): number {
  return Number((JSON.parse(docId) as { $numberInt: string }).$numberInt);
}

function inRange(id: number, range: IdRange): boolean {
  const after = range.after === undefined ? -Infinity : (decodeId(range.after) as number);
  const upTo = range.upTo === undefined ? Infinity : (decodeId(range.upTo) as number);
  return id > after && id <= upTo;
}

/**
 * `<table>_view` of a collection with whole-number `_id`s, as a set of ids (digests are not compared by the
 * repair): records every range asked about.
 */
export class FakeViewReader implements ViewReader {
  readonly asked: IdRange[] = [];

  constructor(public ids: Set<number>) {}

  rangeDigests(ranges: readonly IdRange[]): Promise<ViewAnswer<RangeDigest[]>> {
    return Promise.resolve({
      value: ranges.map((r) => ({ count: [...this.ids].filter((id) => inRange(id, r)).length, digest: 0n })),
      bytesScanned: 0,
    });
  }

  documentDigests(range: IdRange): Promise<ViewAnswer<DocumentDigest[]>> {
    this.asked.push(range);
    const value = [...this.ids]
      .filter((id) => inRange(id, range))
      .sort((a, b) => a - b)
      .map((id) => ({ docId: numberDocId(id), hash: 0n }));
    return Promise.resolve({ value, bytesScanned: 8 * value.length });
  }
}

/** The collection's ids as the delete pass checks them; `ids` may change between checks. */
export class FakeExistingIds implements ExistingIds {
  readonly checks: string[][] = [];

  constructor(public ids: Set<number>) {}

  existing(docIds: readonly string[]): Promise<ReadonlySet<string>> {
    this.checks.push([...docIds]);
    return Promise.resolve(new Set(docIds.filter((d) => this.ids.has(idOf(d)))));
  }
}

/** A repair store in memory: the saved progress, the served result, and a save that fails on demand. */
export class MemoryRepairStore implements RepairStore {
  progress: RepairProgress | undefined;
  served: RepairResult | undefined;
  readonly saves: RepairProgress[] = [];
  failNextSave: Error | undefined;

  constructor(progress?: RepairProgress) {
    this.progress = progress;
  }

  saveRepair(progress: RepairProgress): Promise<void> {
    const failure = this.failNextSave;
    this.failNextSave = undefined;
    if (failure) return Promise.reject(failure);
    this.saves.push(progress);
    this.progress = progress;
    return Promise.resolve();
  }

  /** The ids of the requests the last finished repair served. */
  servedRequests: readonly string[] = [];

  repairServed(result: RepairResult, requests: readonly string[]): Promise<void> {
    this.served = result;
    this.servedRequests = requests;
    this.progress = undefined;
    return Promise.resolve();
  }
}

/** A verifier that answers with the reports the test gives, recording each call and how many ran at once. */
export class FakeMappingVerifier implements MappingVerifier {
  readonly calls: { readonly mapping: string; readonly share: number | undefined }[] = [];
  running = 0;
  maxRunning = 0;
  /** Resolves each call; a call waits for it when set (to hold verifications open). */
  gate: (() => Promise<void>) | undefined;
  failWith: Error | undefined;

  constructor(
    readonly mapping: string,
    private readonly report: (mapping: string) => VerifyReport,
  ) {}

  async verify(options: { readonly ranges?: number; readonly share?: number }): Promise<VerifyReport> {
    this.calls.push({ mapping: this.mapping, share: options.share });
    this.running++;
    this.maxRunning = Math.max(this.maxRunning, this.running);
    try {
      await this.gate?.();
      await new Promise((resolve) => setTimeout(resolve, 1));
      if (this.failWith) throw this.failWith;
      return this.report(this.mapping);
    } finally {
      this.running--;
    }
  }
}

/** A report of `mapping` with `differing` ranges (each with one missing document). */
export function verifyReport(mapping: string, differing: readonly IdRange[] = []): VerifyReport {
  const ids = (n: number) => ({ count: n, ids: [] });
  return {
    mapping,
    view: `p.d.${mapping}_view`,
    startedAt: new Date('2026-12-06T10:00:00Z'),
    finishedAt: new Date('2026-12-06T10:00:05Z'),
    rangesChecked: 8,
    differingRanges: differing,
    documentsChecked: 800,
    missing: ids(differing.length),
    extra: ids(0),
    differing: ids(0),
    bytesScanned: 4_096,
  };
}
