import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { ConfigError } from '../errors.js';
import { datasetIdProblem, projectIdProblem } from '../schema/identifiers.js';
import {
  CHANGE_STREAM_SCOPES,
  DEFAULT_IDLE_CHECKPOINT_INTERVAL_MS,
  DEFAULT_LEASE_TTL_MS,
  DEFAULT_MAX_MAPPINGS_PREPARING,
  DEFAULT_WRITE_STREAM_IDLE_MS,
  DEFAULT_SETTINGS_COLLECTION,
  DEFAULT_SETTINGS_DATABASE,
  DEFAULT_SETTINGS_POLL_MS,
  WRITER_KINDS,
} from '../core/settings.js';
import { DEFAULT_WINDOW_LIMITS, type WindowLimits } from '../core/window.js';
import { checkedIdentifier, mongoCollectionName, mongoDatabaseName } from './settings.js';

/** Where the original service read its configuration; `--config PATH` overrides it. */
export const DEFAULT_CONFIG_PATH = '/config-local/config.json';
export const DEFAULT_METRICS_PORT = 9_464;

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
/** The logger's formats (`LogFormat` in src/observability/log-format.ts, which config/ may not import). */
const LOG_FORMATS = ['auto', 'json', 'pretty'] as const;

/** Text from JSON or the environment: numbers and booleans may arrive as strings. */
const port = z.coerce.number().int().min(0).max(65_535);
const positiveInt = z.coerce.number().int().positive();

/** A whole number from `min` to `max`; every way to miss it gets the one message that says the range. */
function wholeNumber(min: number, max: number, unit: string) {
  const error = `must be a whole number of ${unit} from ${String(min)} to ${String(max)}`;
  return z.coerce.number({ error }).int({ error }).min(min, { error }).max(max, { error });
}

/** The in-flight window is given in MB (10^6 bytes, as BigQuery counts request sizes). */
const MEGABYTE = 1_000_000;
/** More than this many requests out at once per mapping gains nothing BigQuery would let through. */
export const MAX_IN_FLIGHT_REQUESTS = 1_000;
/** Bytes in flight are held in memory until acknowledged: a bound well above any useful window. */
export const MAX_IN_FLIGHT_MB = 4_096;
/** More connections than this per table would only spread the same window thinner. */
export const MAX_STORAGE_WRITE_CONNECTIONS = 16;
/** Worker threads beyond this would wait for the one thread that reads and sends. */
export const MAX_WORKER_THREADS = 16;
/** `auto` takes one worker thread per core, up to this many (see `workerThreads`). */
const AUTO_WORKER_THREADS_CAP = 4;

/** `auto`, or a number of worker threads; every way to miss it gets the one message that says both. */
const workerThreadsError = `must be auto or a whole number of threads from 0 to ${String(MAX_WORKER_THREADS)}`;
const workerThreadsSetting = z.union(
  [
    z.literal('auto', { error: workerThreadsError }),
    z.coerce
      .number({ error: workerThreadsError })
      .int({ error: workerThreadsError })
      .min(0, { error: workerThreadsError })
      .max(MAX_WORKER_THREADS, { error: workerThreadsError }),
  ],
  { error: workerThreadsError },
);

/** Every key of config.json (and the environment): `--help` lists them from here, so the two stay in step. */
export const bootstrapSchema = z.object({
  MONGO_CLIENT: z
    .string()
    .min(1)
    .refine(
      (v) => /^mongodb(\+srv)?:\/\//.test(v),
      'must be a mongodb:// or mongodb+srv:// connection string',
    ),
  SERVICE_ACCOUNT_FILE: z.string().min(1).optional(),
  // Identifiers are checked here, before anything starts: a bad one would otherwise fail each mapping on its
  // own (or reach SQL) while the daemon runs on.
  BIGQUERY_PROJECT: checkedIdentifier(projectIdProblem),
  BIGQUERY_DATASET: checkedIdentifier(datasetIdProblem),
  SETTINGS_DATABASE: mongoDatabaseName.default(DEFAULT_SETTINGS_DATABASE),
  SETTINGS_COLLECTION: mongoCollectionName.default(DEFAULT_SETTINGS_COLLECTION),
  SETTINGS_POLL_INTERVAL_MS: positiveInt.default(DEFAULT_SETTINGS_POLL_MS),
  /** A local BigQuery emulator's REST endpoint, e.g. http://127.0.0.1:9050 (tests and demo only). */
  BIGQUERY_EMULATOR_ENDPOINT: z.url().optional(),
  /** The emulator's gRPC (Storage Write API) endpoint, host:port. */
  BIGQUERY_EMULATOR_GRPC: z
    .string()
    .regex(/^[^:]+:\d+$/, 'must be host:port')
    .optional(),
  /** Which emulator BIGQUERY_EMULATOR_ENDPOINT points at: their gaps decide what falls back to insertAll. */
  BIGQUERY_EMULATOR_KIND: z.enum(['bqemulator', 'goccy-bigquery-emulator']).default('bqemulator'),
  BIGQUERY_WRITER: z.enum(WRITER_KINDS).default('storage-write'),
  /** Address the metrics and health endpoints listen on (`0.0.0.0` in a container). */
  METRICS_HOST: z.string().min(1).default('127.0.0.1'),
  METRICS_PORT: port.default(DEFAULT_METRICS_PORT),
  LOG_LEVEL: z.enum(LOG_LEVELS).default('info'),
  /** `auto`: human lines when standard output is a terminal, JSON lines otherwise; or always `json` or `pretty`. */
  LOG_FORMAT: z.enum(LOG_FORMATS, { error: 'must be auto, json or pretty' }).default('auto'),
  /**
   * How long a mapping's lease lasts without renewal (renewed every third of it): the longest time the
   * mappings of a crashed instance wait before another instance takes them over. See docs/operations.md.
   */
  LEASE_TTL_MS: z.coerce.number().int().min(1_000).max(600_000).default(DEFAULT_LEASE_TTL_MS),
  /**
   * Requests each mapping may have on their way to BigQuery at once (its in-flight window); the reading
   * waits while they are all out. See docs/operations.md.
   */
  BIGQUERY_MAX_IN_FLIGHT_REQUESTS: wholeNumber(1, MAX_IN_FLIGHT_REQUESTS, 'requests').default(
    DEFAULT_WINDOW_LIMITS.maxRequests,
  ),
  /**
   * Connections each Storage Write writer opens to its table's default stream; appends are spread over them.
   * One carries the default window; raise it only when one connection is the limit (docs/bigquery.md).
   */
  BIGQUERY_STORAGE_WRITE_CONNECTIONS: wholeNumber(1, MAX_STORAGE_WRITE_CONNECTIONS, 'connections').default(1),
  /**
   * Worker threads that decode, map and encode changes and backfill documents for every mapping, so that
   * the thread reading MongoDB and writing BigQuery does not: `auto` (the default) takes one per core, up
   * to 4, and none on a single core; 0 does it all on the one thread. See docs/operations.md.
   */
  WORKER_THREADS: workerThreadsSetting.default('auto'),
  /** Megabytes of rows each mapping may have on their way to BigQuery at once (the window's other bound). */
  BIGQUERY_MAX_IN_FLIGHT_MB: wholeNumber(1, MAX_IN_FLIGHT_MB, 'megabytes').default(
    DEFAULT_WINDOW_LIMITS.maxBytes / MEGABYTE,
  ),
  /**
   * `database` (the default): one change stream per source database, filtered on the server to the mapped
   * collections and shared by their mappings; `collection`: one per mapping. Where a server cannot open a
   * database-level stream, the daemon reads per collection and says so once. See docs/operations.md.
   */
  CHANGE_STREAM_SCOPE: z
    .enum(CHANGE_STREAM_SCOPES, { error: 'must be database or collection' })
    .default('database'),
  /**
   * The longest an idle mapping waits to save the position its stream reached with nothing to write; a
   * position reached by writing rows is saved at once. Idle positions are saved in the checkpoints
   * collection only (never in the watched settings documents).
   */
  IDLE_CHECKPOINT_INTERVAL_MS: wholeNumber(100, 3_600_000, 'milliseconds').default(
    DEFAULT_IDLE_CHECKPOINT_INTERVAL_MS,
  ),
  /** Mappings preparing their tables at once in this daemon, and as many copying (backfilling); the others wait. */
  MAX_MAPPINGS_PREPARING: wholeNumber(1, 1_000, 'mappings').default(DEFAULT_MAX_MAPPINGS_PREPARING),
  /** A Storage Write connection that sent nothing for this long is closed, and opened again on demand. */
  WRITE_STREAM_IDLE_MS: wholeNumber(1_000, 86_400_000, 'milliseconds').default(DEFAULT_WRITE_STREAM_IDLE_MS),
});

export type BootstrapConfig = Readonly<z.infer<typeof bootstrapSchema>>;

const KEYS = Object.keys(bootstrapSchema.shape) as (keyof BootstrapConfig)[];

export interface LoadOptions {
  readonly path?: string;
  readonly env?: NodeJS.ProcessEnv;
  /** True when the path was given explicitly (`--config`): then a missing file is an error. */
  readonly explicitPath?: boolean;
  /** Told of each key of the file that is not a configuration key (a typo, most likely); it is ignored. */
  readonly onUnknownKey?: (message: string) => void;
}

/** The known key closest to `key` when it is a plausible typo of it (case, a letter or two). */
function closestKey(key: string): string | undefined {
  let best: { key: string; distance: number } | undefined;
  for (const known of KEYS) {
    const distance = editDistance(key.toUpperCase(), known);
    if (distance <= 2 && (best === undefined || distance < best.distance)) best = { key: known, distance };
  }
  return best?.key;
}

function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      const substitution = (previous[j - 1] ?? 0) + (a[i - 1] === b[j - 1] ? 0 : 1);
      current.push(Math.min((previous[j] ?? 0) + 1, (current[j - 1] ?? 0) + 1, substitution));
    }
    previous = current;
  }
  return previous[b.length] ?? 0;
}

/**
 * Reads `config.json` (default /config-local/config.json) and lets every key be overridden by an
 * environment variable of the same name, as the original service did. Without a file the environment
 * alone may configure everything. Throws ConfigError with a one-line message naming the key.
 */
export function loadBootstrapConfig(options: LoadOptions = {}): BootstrapConfig {
  const path = options.path ?? DEFAULT_CONFIG_PATH;
  const env = options.env ?? process.env;
  let fromFile: Record<string, unknown> = {};
  let text: string | undefined;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code !== 'ENOENT' || options.explicitPath) {
      throw new ConfigError(`cannot read config file ${path}: ${code ?? String(error)}`, { cause: error });
    }
  }
  if (text !== undefined) {
    try {
      const parsed: unknown = JSON.parse(text);
      if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed))
        throw new Error('not a JSON object');
      fromFile = parsed as Record<string, unknown>;
    } catch (error) {
      throw new ConfigError(`config file ${path} is not a JSON object: ${(error as Error).message}`, {
        cause: error,
      });
    }
  }
  for (const key of Object.keys(fromFile)) {
    if ((KEYS as readonly string[]).includes(key)) continue;
    const suggestion = closestKey(key);
    options.onUnknownKey?.(
      `${path}: unknown key ${key}${suggestion === undefined ? '' : ` (did you mean ${suggestion}?)`}; it is ignored`,
    );
  }
  const merged: Record<string, unknown> = {};
  for (const key of KEYS) {
    const value = env[key] ?? fromFile[key];
    if (value !== undefined && value !== '') merged[key] = value;
  }
  const result = bootstrapSchema.safeParse(merged);
  if (!result.success) {
    const [issue] = result.error.issues;
    const key = String(issue?.path[0] ?? 'config');
    const missing = merged[key] === undefined;
    throw new ConfigError(
      missing
        ? `${key} is missing: set it in ${path} or in the environment`
        : `${key} is invalid: ${issue?.message ?? 'bad value'}`,
    );
  }
  return Object.freeze(result.data);
}

/** The in-flight window of each mapping's writes, as configured. */
export function windowLimits(
  config: Pick<BootstrapConfig, 'BIGQUERY_MAX_IN_FLIGHT_REQUESTS' | 'BIGQUERY_MAX_IN_FLIGHT_MB'>,
): WindowLimits {
  return Object.freeze({
    maxRequests: config.BIGQUERY_MAX_IN_FLIGHT_REQUESTS,
    maxBytes: config.BIGQUERY_MAX_IN_FLIGHT_MB * MEGABYTE,
  });
}

/**
 * The worker threads to start: as configured, or for `auto` one per core up to 4 (the reading thread needs
 * little besides), none where there is a single core (they would only take turns with it).
 */
export function workerThreads(config: Pick<BootstrapConfig, 'WORKER_THREADS'>, cores: number): number {
  const configured = config.WORKER_THREADS;
  if (configured !== 'auto') return configured;
  return cores > 1 ? Math.min(cores, AUTO_WORKER_THREADS_CAP) : 0;
}
