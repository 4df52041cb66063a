import { type IdRange } from '../core/ports.js';
import { type MappingVerifier, type VerifyReport } from '../core/verify-model.js';
import { type RepairResult } from '../mongodb/checkpoint-store.js';

/** How long `verify --repair` waits for the archiver to serve its repair, by default. */
export const DEFAULT_REPAIR_TIMEOUT_MS = 600_000;

/**
 * Where `verify --repair` hands its repair over: the archiver that owns the mapping serves it (see
 * `requestRepair` and `waitForRepair` in `app/repair.ts`). `H` is whatever names the request for the wait.
 */
export interface RepairDesk<H> {
  request(ranges: readonly IdRange[]): Promise<H>;
  /** What the repair wrote once served; undefined when `timeoutMs` passed first (the request stays queued). */
  wait(request: H, timeoutMs: number, signal: AbortSignal): Promise<RepairResult | undefined>;
}

/** What `verify --repair` did: the first comparison, the repair it asked for, and the comparison after it. */
export interface VerifyRepairOutcome {
  readonly before: VerifyReport;
  /** Undefined when nothing differed: no repair was asked for. */
  readonly repair?: {
    readonly ranges: readonly IdRange[];
    /** Undefined when the archiver did not serve it within the timeout (it stays queued). */
    readonly result: RepairResult | undefined;
  };
  /** The comparison once the repair was served; undefined when none was asked for or it is still queued. */
  readonly after?: VerifyReport;
}

/**
 * Verifies, asks the archiver to copy again only the ranges whose difference persisted, waits until it has,
 * and verifies again. The repair is the archiver's (it owns the mapping and writes with its fence), so a
 * command never writes rows of its own beside a running daemon.
 */
export async function verifyAndRepair<H>(
  verifier: MappingVerifier,
  desk: RepairDesk<H>,
  options: { readonly ranges: number; readonly repairTimeoutMs: number },
  signal: AbortSignal,
): Promise<VerifyRepairOutcome> {
  const before = await verifier.verify({ ranges: options.ranges }, signal);
  const ranges = before.differingRanges;
  if (ranges.length === 0) return { before };
  const request = await desk.request(ranges);
  const result = await desk.wait(request, options.repairTimeoutMs, signal);
  if (result === undefined) return { before, repair: { ranges, result } };
  const after = await verifier.verify({ ranges: options.ranges }, signal);
  return { before, repair: { ranges, result }, after };
}
