import { loadBootstrapConfig, type BootstrapConfig } from '../config/bootstrap.js';
import { dispositionOf, errorMessage } from '../errors.js';
import { scrubText } from '../observability/logger.js';

/** Exit codes: 0 done, 1 failure, 2 configuration error (as the original service's users expect of a CLI). */
export const EXIT = { ok: 0, failure: 1, config: 2 } as const;

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
