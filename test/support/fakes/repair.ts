import {
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

  repairServed(result: RepairResult): Promise<void> {
    this.served = result;
    this.progress = undefined;
    return Promise.resolve();
  }
}
