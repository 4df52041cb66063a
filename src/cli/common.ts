import { loadBootstrapConfig, type BootstrapConfig } from '../config/bootstrap.js';
import { ArchiverError, ConfigError } from '../errors.js';

/** Exit codes: 0 done, 1 failure, 2 configuration error (as the original service's users expect of a CLI). */
export const EXIT = { ok: 0, failure: 1, config: 2 } as const;

export interface GlobalOptions {
  readonly config?: string;
}

export function loadConfig(options: GlobalOptions): BootstrapConfig {
  return loadBootstrapConfig({
    ...(options.config !== undefined && { path: options.config, explicitPath: true }),
  });
}

/** One line on stderr and the exit code for an error; configuration errors exit with 2. */
export function reportFatal(error: unknown): number {
  if (error instanceof ConfigError) {
    console.error(`configuration error: ${error.message}`);
    return EXIT.config;
  }
  if (error instanceof ArchiverError) {
    console.error(`error: ${error.message}`);
    return error.code === 'CONFIG_INVALID' || error.code === 'IDENTIFIER_INVALID'
      ? EXIT.config
      : EXIT.failure;
  }
  console.error(`error: ${error instanceof Error ? error.message : String(error)}`);
  return EXIT.failure;
}
