import { startArchiver } from '../app/archiver.js';
import { daemonVerification } from '../app/verification.js';
import { errorMessage } from '../errors.js';
import { createLogger, scrubText } from '../observability/logger.js';
import { missingV8Flags, V8_FLAGS } from '../observability/runtime.js';
import { EXIT, loadConfig, type GlobalOptions } from './common.js';

/** How long a graceful stop may take (flush, checkpoint) before the process exits anyway. */
export const DEFAULT_SHUTDOWN_TIMEOUT_MS = 30_000;

/**
 * The daemon. SIGTERM or SIGINT: stop reading, flush, checkpoint, exit 0 within the shutdown bound; a
 * second signal exits at once.
 */
export async function runCommand(options: GlobalOptions): Promise<number> {
  const config = loadConfig(options);
  const logger = createLogger({ level: config.LOG_LEVEL, format: config.LOG_FORMAT });
  const controller = new AbortController();
  let signals = 0;
  const onSignal = (signal: NodeJS.Signals) => {
    signals++;
    if (signals > 1) {
      logger.warn({ signal }, 'second signal: exiting now');
      process.exit(EXIT.failure);
    }
    logger.info({ signal }, 'stopping: flushing and checkpointing every mapping');
    controller.abort();
    setTimeout(() => {
      logger.error({ timeoutMs: DEFAULT_SHUTDOWN_TIMEOUT_MS }, 'graceful stop took too long; exiting');
      process.exit(EXIT.failure);
    }, DEFAULT_SHUTDOWN_TIMEOUT_MS).unref();
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  const missing = missingV8Flags();
  if (missing.length > 0) {
    logger.warn(
      { missing, recommended: V8_FLAGS },
      `node was started without ${missing.join(' ')}: garbage collection will cost about a fifth of the throughput (see docs/operations.md)`,
    );
  }
  let archiver;
  try {
    archiver = await startArchiver(config, logger, controller.signal, { verification: daemonVerification });
  } catch (error) {
    // The same line as the exit message (`MongoDB at h:27017 unreachable (...): check MONGO_CLIENT ...`),
    // in the logs too, where a deployment's operator looks first.
    logger.fatal({ err: error }, `could not start: ${scrubText(errorMessage(error))}`);
    throw error;
  }
  await archiver.done;
  return EXIT.ok;
}
