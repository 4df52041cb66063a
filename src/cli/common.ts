import { loadBootstrapConfig, type BootstrapConfig } from '../config/bootstrap.js';
import { dispositionOf, errorMessage } from '../errors.js';
import { scrubText } from '../observability/logger.js';
import { connectionStringProblem } from '../mongodb/connectivity.js';

/**
 * Exit codes: 0 done, 1 failure, 2 configuration error (as the original service's users expect of a CLI);
 * 3 when `verify` found differences.
 */
export const EXIT = { ok: 0, failure: 1, config: 2, differences: 3 } as const;

/** What each exit code tells an operator or a script; `--help` prints this table, the one place it is kept. */
export const EXIT_MEANINGS: Readonly<Record<(typeof EXIT)[keyof typeof EXIT], string>> = {
  [EXIT.ok]:
    'done: every check passed (validate), every plan was computed (plan), verify found no difference (verify), or the daemon stopped cleanly on SIGTERM or SIGINT (run)',
  [EXIT.failure]:
    'failure: a check failed, MongoDB or BigQuery could not be reached or refused, a stop took longer than 30 s, or a second signal came',
  [EXIT.config]:
    'configuration error: a key is missing or invalid, a name is not legal in MongoDB or BigQuery, or the command line is wrong; nothing was started',
  [EXIT.differences]:
    'differences: verify found documents missing from, extra in or differing in the view (listed in its report)',
};

export interface GlobalOptions {
  readonly config?: string;
}

/** The bootstrap configuration; a key of config.json that is not one (a typo) is a warning on stderr. */
export function loadConfig(options: GlobalOptions): BootstrapConfig {
  return loadBootstrapConfig({
    ...(options.config !== undefined && { path: options.config, explicitPath: true }),
    onUnknownKey: (message) => {
      console.error(`warning: ${message}`);
    },
    mongoClientProblem: connectionStringProblem,
  });
}

/**
 * One line on stderr and the exit code for an error; configuration errors exit with 2. The line goes
 * through the logs' scrubber: a driver's message may name the connection string.
 */
export function reportFatal(error: unknown): number {
  const message = scrubText(errorMessage(error));
  if (dispositionOf(error) === 'config-invalid') {
    console.error(`configuration error: ${message}`);
    return EXIT.config;
  }
  console.error(`error: ${message}`);
  return EXIT.failure;
}
