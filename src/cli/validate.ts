import { DEFAULT_CHECK_TIMEOUT_MS, resultLine, runChecks, summaryLine, type Check } from '../app/checks.js';
import { preflightChecks, type Preflight } from '../app/preflight.js';
import { type BootstrapConfig } from '../config/bootstrap.js';
import { ConfigError } from '../errors.js';
import { scrubText } from '../observability/logger.js';
import { EXIT, loadConfig, type GlobalOptions } from './common.js';

export interface ValidateOptions extends GlobalOptions {
  /** Seconds each check may take (`--timeout`), as given on the command line. */
  readonly timeout?: string;
}

/** The checks to run for a configuration: the live ones, or fakes in tests. */
export type PreflightFactory = (config: BootstrapConfig, timeoutMs: number) => Preflight;

/** The longest `--timeout` takes: a check that needs more is better investigated than waited for. */
const MAX_TIMEOUT_SECONDS = 600;

/** `--timeout` in milliseconds; a value that is no number of seconds from 0.1 to 600 is a usage error. */
export function checkTimeoutMs(timeout: string | undefined): number {
  if (timeout === undefined) return DEFAULT_CHECK_TIMEOUT_MS;
  const seconds = Number(timeout);
  if (!Number.isFinite(seconds) || seconds < 0.1 || seconds > MAX_TIMEOUT_SECONDS) {
    throw new ConfigError(
      `--timeout must be a number of seconds from 0.1 to ${String(MAX_TIMEOUT_SECONDS)} (got ${timeout})`,
    );
  }
  return Math.round(seconds * 1_000);
}

/**
 * Checks the configuration, then, side by side and each within `--timeout`: the key file, MongoDB, the
 * settings and each mapping's change stream, BigQuery and each target dataset. One line per check as it
 * finishes, a summary last; exit 1 when any failed. Every line goes through the logs' scrubber: an error
 * may carry the connection string.
 */
export async function validateCommand(
  options: ValidateOptions,
  preflight: PreflightFactory = preflightChecks,
): Promise<number> {
  const timeoutMs = checkTimeoutMs(options.timeout);
  const config = loadConfig(options);
  const say = (line: string): void => {
    console.log(scrubText(line));
  };
  const configCheck: Check = {
    name: 'config',
    run: () =>
      Promise.resolve({
        detail: `project ${config.BIGQUERY_PROJECT}, dataset ${config.BIGQUERY_DATASET}, settings in ${config.SETTINGS_DATABASE}.${config.SETTINGS_COLLECTION}`,
      }),
    timedOut: () => 'unreachable: the configuration is parsed before any check starts',
  };
  const live = preflight(config, timeoutMs);
  let results;
  try {
    results = await runChecks([configCheck, ...live.checks], {
      timeoutMs,
      onResult: (result) => {
        say(resultLine(result));
      },
    });
  } finally {
    await live.close();
  }
  say(summaryLine(results));
  return results.some((r) => r.status === 'failed') ? EXIT.failure : EXIT.ok;
}
