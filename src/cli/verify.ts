import { connectMongo } from '../app/archiver.js';
import { requestRepair, waitForRepair } from '../app/repair.js';
import { DEFAULT_SETTLE_TIMEOUT_MS, DEFAULT_VERIFY_RANGES, openMappingVerifier } from '../app/verifier.js';
import {
  DEFAULT_REPAIR_TIMEOUT_MS,
  verifyAndRepair,
  type RepairDesk,
  type VerifyRepairOutcome,
} from '../app/verify-repair.js';
import { type BootstrapConfig } from '../config/bootstrap.js';
import { type ReportedIds, type VerifyReport } from '../core/verify-model.js';
import { ConfigError } from '../errors.js';
import { EXIT, loadConfig, type GlobalOptions } from './common.js';

export interface VerifyOptions extends GlobalOptions {
  readonly ranges?: string;
  readonly json?: boolean;
  /** Seconds to wait for the mapping's checkpoint to pass a read. */
  readonly settleTimeout?: string;
  /** Ask the archiver to copy the differing ranges again, wait for it, and verify again. */
  readonly repair?: boolean;
  /** Seconds to wait for the archiver to serve the repair. */
  readonly repairTimeout?: string;
}

function positiveInteger(name: string, text: string | undefined, fallback: number): number {
  if (text === undefined) return fallback;
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1)
    throw new ConfigError(`${name} must be a whole number of at least 1, got "${text}"`);
  return n;
}

/**
 * `verify <mapping>`: compares the collection with `<table>_view` and prints the report; exits 0 when they
 * are equal and EXIT.differences when documents are missing, extra or differing.
 */
export async function verifyCommand(mapping: string, options: VerifyOptions): Promise<number> {
  const ranges = positiveInteger('--ranges', options.ranges, DEFAULT_VERIFY_RANGES);
  const settleSeconds = positiveInteger(
    '--settle-timeout',
    options.settleTimeout,
    DEFAULT_SETTLE_TIMEOUT_MS / 1_000,
  );
  const repairSeconds = positiveInteger(
    '--repair-timeout',
    options.repairTimeout,
    DEFAULT_REPAIR_TIMEOUT_MS / 1_000,
  );
  const config = loadConfig(options);
  const opened = await openMappingVerifier(config, mapping, {
    ranges,
    settleTimeoutMs: settleSeconds * 1_000,
  });
  try {
    const signal = new AbortController().signal;
    if (options.repair === true) {
      const outcome = await repairThroughArchiver(config, mapping, (desk) =>
        verifyAndRepair(opened.verifier, desk, { ranges, repairTimeoutMs: repairSeconds * 1_000 }, signal),
      );
      console.log(renderVerifyRepair(outcome, options.json === true));
      return repairedClean(outcome) ? EXIT.ok : EXIT.differences;
    }
    const report = await opened.verifier.verify({ ranges }, signal);
    console.log(renderVerifyReport(report, options.json === true));
    return differences(report) > 0 ? EXIT.differences : EXIT.ok;
  } finally {
    await opened.close();
  }
}

/** Nothing differed, or the repair was served and the comparison after it found nothing. */
export function repairedClean(outcome: VerifyRepairOutcome): boolean {
  if (!outcome.repair) return differences(outcome.before) === 0;
  return outcome.after !== undefined && differences(outcome.after) === 0;
}

/** Runs `work` with a repair desk on a MongoDB client of its own: requests go where a resync's go. */
async function repairThroughArchiver<T>(
  config: BootstrapConfig,
  mapping: string,
  work: (desk: RepairDesk<string>) => Promise<T>,
): Promise<T> {
  const mongo = connectMongo(config);
  try {
    return await work({
      request: (ranges) => requestRepair(mongo, config, mapping, ranges, 'verify'),
      wait: (requestId, timeoutMs, signal) =>
        waitForRepair(mongo, config, mapping, requestId, { timeoutMs, signal }),
    });
  } finally {
    await mongo.close();
  }
}

/** `verify --repair`'s output: the first report, the repair, and the report after it (or one JSON document). */
export function renderVerifyRepair(outcome: VerifyRepairOutcome, json: boolean): string {
  const { before, repair, after } = outcome;
  if (json) {
    const report = (r: VerifyReport | undefined) =>
      r && { ...r, startedAt: r.startedAt.toISOString(), finishedAt: r.finishedAt.toISOString() };
    return JSON.stringify({
      before: report(before),
      repair: repair && {
        ranges: repair.ranges,
        result: repair.result && { ...repair.result, finishedAt: repair.result.finishedAt.toISOString() },
        queued: repair.result === undefined,
      },
      after: report(after) ?? null,
    });
  }
  const lines = [renderVerifyReport(before, false)];
  if (!repair) return lines.join('\n');
  if (repair.result === undefined) {
    lines.push(
      `repair of ${String(repair.ranges.length)} range(s) requested, not served within the repair timeout: is an archiver running this mapping? The request stays queued; \`status\` shows it`,
    );
    return lines.join('\n');
  }
  const { documents, deletes } = repair.result;
  lines.push(
    `repair wrote ${String(documents + deletes)} rows (${String(documents)} documents, ${String(deletes)} deletes) over ${String(repair.result.ranges)} range(s)`,
  );
  if (after) lines.push('after the repair:', renderVerifyReport(after, false));
  return lines.join('\n');
}

/** Documents reported missing, extra or differing. */
export function differences(report: VerifyReport): number {
  return report.missing.count + report.extra.count + report.differing.count;
}

function idsLine(label: string, ids: ReportedIds): string {
  if (ids.count === 0) return `${label}: 0`;
  const more = ids.count > ids.ids.length ? ` (first ${String(ids.ids.length)})` : '';
  return `${label}: ${String(ids.count)}${more}: ${ids.ids.join(', ')}`;
}

/** The report as `verify` prints it: lines for a person, or one JSON document (dates as ISO 8601). */
export function renderVerifyReport(report: VerifyReport, json: boolean): string {
  if (json) {
    return JSON.stringify({
      ...report,
      startedAt: report.startedAt.toISOString(),
      finishedAt: report.finishedAt.toISOString(),
    });
  }
  const seconds = (report.finishedAt.getTime() - report.startedAt.getTime()) / 1_000;
  const lines = [
    `verify ${report.mapping}: ${report.view} (${seconds.toFixed(1)} s)`,
    `ranges checked: ${String(report.rangesChecked)}, differing: ${String(report.differingRanges.length)}`,
    `documents checked in MongoDB: ${String(report.documentsChecked)}`,
    idsLine('missing in BigQuery', report.missing),
    idsLine('extra in BigQuery', report.extra),
    idsLine('differing', report.differing),
    `BigQuery bytes scanned: ${String(report.bytesScanned)}`,
  ];
  if (report.unverifiable !== undefined) {
    lines.push(
      `not verified: ${String(report.unverifiable)} documents whose _id is neither an ObjectId, a string nor an integer`,
    );
  }
  if (report.settled === false) {
    lines.push(
      "note: the mapping's checkpoint did not pass the time of the reads within the settle timeout (is the archiver running?): changes not yet archived are reported as differences",
    );
  }
  lines.push(
    differences(report) === 0 ? 'equal' : `not equal: ${String(differences(report))} documents differ`,
  );
  return lines.join('\n');
}
