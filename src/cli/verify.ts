import { DEFAULT_SETTLE_TIMEOUT_MS, DEFAULT_VERIFY_RANGES, openMappingVerifier } from '../app/verifier.js';
import { type ReportedIds, type VerifyReport } from '../core/verify-model.js';
import { ConfigError } from '../errors.js';
import { EXIT, loadConfig, type GlobalOptions } from './common.js';

export interface VerifyOptions extends GlobalOptions {
  readonly ranges?: string;
  readonly json?: boolean;
  /** Seconds to wait for the mapping's checkpoint to pass a read. */
  readonly settleTimeout?: string;
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
  const config = loadConfig(options);
  const opened = await openMappingVerifier(config, mapping, {
    ranges,
    settleTimeoutMs: settleSeconds * 1_000,
  });
  try {
    const report = await opened.verifier.verify({ ranges }, new AbortController().signal);
    // `--repair` goes here: the repair part's requestRepair over report.differingRanges.
    console.log(renderVerifyReport(report, options.json === true));
    return differences(report) > 0 ? EXIT.differences : EXIT.ok;
  } finally {
    await opened.close();
  }
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
