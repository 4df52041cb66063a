import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { ConfigError, errorMessage } from '../errors.js';
import { IDENTIFIER_PATTERNS, datasetIdProblem, projectIdProblem } from '../schema/identifiers.js';
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
import {
  DEFAULT_OPLOG_HEADROOM_WARN_RATIO,
  DEFAULT_OPLOG_WINDOW_POLL_INTERVAL_MS,
} from '../core/oplog-headroom.js';
import { jsonSyntaxProblem } from './json-syntax.js';
import { checkedIdentifier, mongoCollectionName, mongoDatabaseName } from './settings.js';
import { closestName } from './suggest.js';

/** Where the original service read its configuration; `--config PATH` overrides it. */
export const DEFAULT_CONFIG_PATH = '/config-local/config.json';
export const DEFAULT_METRICS_PORT = 9_464;

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
/** The logger's formats (`LogFormat` in src/observability/log-format.ts, which config/ may not import). */
const LOG_FORMATS = ['auto', 'json', 'pretty'] as const;

/**
 * A whole number from `min` to `max`, also as text (the environment has nothing else); every way to miss it
 * gets the one message that says the range.
 */
function wholeNumber(min: number, max: number, unit: string) {
  const error = `is not a whole number of ${unit} from ${String(min)} to ${String(max)}`;
  return z.coerce.number({ error }).int({ error }).min(min, { error }).max(max, { error });
}

/** One of `values`, with the message that lists them. */
function oneOf<const T extends readonly [string, ...string[]]>(values: T) {
  return z.enum(values, { error: `is not one of ${values.join(', ')}` });
}

const PORT_ERROR = 'is not a port number (1-65535, or 0 for any free port)';
const port = z.coerce
  .number({ error: PORT_ERROR })
  .int({ error: PORT_ERROR })
  .min(0, { error: PORT_ERROR })
  .max(65_535, { error: PORT_ERROR });

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
const workerThreadsError = `is neither auto nor a whole number of threads from 0 to ${String(MAX_WORKER_THREADS)}`;
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

/** A share strictly between 0 and 1, also as text; every way to miss it gets the one message. */
function fraction() {
  const error = 'is not a number greater than 0 and less than 1';
  return z.coerce.number({ error }).gt(0, { error }).lt(1, { error });
}

const MONGO_CLIENT_ERROR = 'must be a mongodb:// or mongodb+srv:// connection string';

/**
 * Every key of config.json (each also an environment variable of the same name): `--help` lists them from
 * here, and the descriptions are the published JSON Schema's (`npm run schemas`), so all stay in step;
 * docs/operations.md has the full story of each.
 */
export const bootstrapSchema = z.object({
  MONGO_CLIENT: z
    .string({ error: MONGO_CLIENT_ERROR })
    .refine((v) => /^mongodb(\+srv)?:\/\//.test(v), MONGO_CLIENT_ERROR)
    .meta({
      description:
        'MongoDB connection string of the server or replica set holding the archived collections and the settings.',
      examples: ['mongodb://localhost:27017/?replicaSet=rs0'],
      pattern: '^mongodb(\\+srv)?://',
    }),
  SERVICE_ACCOUNT_FILE: z
    .string({ error: 'must be the path of a service account key file' })
    .min(1, 'must be the path of a service account key file')
    .optional()
    .meta({
      description: 'Path of a Google service account key file; without it, Application Default Credentials.',
      examples: ['/creds/google-service-account.json'],
    }),
  // Identifiers are checked here, before anything starts: a bad one would otherwise fail each mapping on its
  // own (or reach SQL) while the daemon runs on.
  BIGQUERY_PROJECT: checkedIdentifier(projectIdProblem).meta({
    description: 'Google Cloud project of the BigQuery dataset.',
    pattern: IDENTIFIER_PATTERNS.project,
    examples: ['my-gcp-project'],
  }),
  BIGQUERY_DATASET: checkedIdentifier(datasetIdProblem).meta({
    description:
      'BigQuery dataset of the history tables and views (letters, digits, underscores); created if absent.',
    pattern: IDENTIFIER_PATTERNS.dataset,
    examples: ['mongo_archive'],
  }),
  SETTINGS_DATABASE: mongoDatabaseName.default(DEFAULT_SETTINGS_DATABASE).meta({
    description:
      'MongoDB database of the settings collection. Use a normal database: Atlas and real clusters restrict `config`.',
  }),
  SETTINGS_COLLECTION: mongoCollectionName
    .default(DEFAULT_SETTINGS_COLLECTION)
    .meta({ description: 'Collection of the settings documents, one per archived collection.' }),
  SETTINGS_POLL_INTERVAL_MS: wholeNumber(1, 86_400_000, 'milliseconds')
    .default(DEFAULT_SETTINGS_POLL_MS)
    .meta({ description: 'How often the settings collection is read for new, changed or removed mappings.' }),
  /** A local BigQuery emulator's REST endpoint, e.g. http://127.0.0.1:9050 (tests and demo only). */
  BIGQUERY_EMULATOR_ENDPOINT: z
    .url({ error: 'is not a URL such as http://127.0.0.1:9050' })
    .optional()
    .meta({ description: "A local BigQuery emulator's REST endpoint (tests and demo only)." }),
  /** The emulator's gRPC (Storage Write API) endpoint, host:port. */
  BIGQUERY_EMULATOR_GRPC: z
    .string({ error: 'is not host:port' })
    .regex(/^[^:]+:\d+$/, 'is not host:port')
    .optional()
    .meta({
      description: "The emulator's gRPC (Storage Write API) endpoint, host:port (tests and demo only).",
    }),
  /** Which emulator BIGQUERY_EMULATOR_ENDPOINT points at: their gaps decide what falls back to insertAll. */
  BIGQUERY_EMULATOR_KIND: oneOf(['bqemulator', 'goccy-bigquery-emulator'])
    .default('bqemulator')
    .meta({ description: 'Which emulator BIGQUERY_EMULATOR_ENDPOINT points at (tests and demo only).' }),
  BIGQUERY_WRITER: oneOf(WRITER_KINDS).default('storage-write').meta({
    description: "How rows are sent to BigQuery, unless a settings document's `writer` says otherwise.",
  }),
  /** Address the metrics and health endpoints listen on (`0.0.0.0` in a container). */
  METRICS_HOST: z
    .string({ error: 'is not a host name or address' })
    .min(1, 'is not a host name or address')
    .default('127.0.0.1')
    .meta({ description: 'Address the metrics and health endpoints listen on (`0.0.0.0` in a container).' }),
  METRICS_PORT: port
    .default(DEFAULT_METRICS_PORT)
    .meta({ description: 'Port of the metrics and health endpoints (0: any free port).' }),
  LOG_LEVEL: oneOf(LOG_LEVELS)
    .default('info')
    .meta({ description: 'Least severity of the log lines written.' }),
  /** `auto`: human lines when standard output is a terminal, JSON lines otherwise; or always `json` or `pretty`. */
  LOG_FORMAT: oneOf(LOG_FORMATS).default('auto').meta({
    description: 'auto: human lines on a terminal, JSON lines otherwise; or always json or pretty.',
  }),
  /**
   * How long a mapping's lease lasts without renewal (renewed every third of it): the longest time the
   * mappings of a crashed instance wait before another instance takes them over. See docs/operations.md.
   */
  LEASE_TTL_MS: wholeNumber(1_000, 600_000, 'milliseconds').default(DEFAULT_LEASE_TTL_MS).meta({
    description:
      "How long a mapping's lease lasts without renewal: the longest a crashed instance's mappings wait for another instance.",
  }),
  /**
   * Requests each mapping may have on their way to BigQuery at once (its in-flight window); the reading
   * waits while they are all out. See docs/operations.md.
   */
  BIGQUERY_MAX_IN_FLIGHT_REQUESTS: wholeNumber(1, MAX_IN_FLIGHT_REQUESTS, 'requests')
    .default(DEFAULT_WINDOW_LIMITS.maxRequests)
    .meta({ description: 'Requests each mapping may have on their way to BigQuery at once.' }),
  /**
   * Connections each Storage Write writer opens to its table's default stream; appends are spread over them.
   * One carries the default window; raise it only when one connection is the limit (docs/bigquery.md).
   */
  BIGQUERY_STORAGE_WRITE_CONNECTIONS: wholeNumber(1, MAX_STORAGE_WRITE_CONNECTIONS, 'connections')
    .default(1)
    .meta({ description: "Connections each Storage Write writer opens to its table's default stream." }),
  /**
   * Worker threads that decode, map and encode changes and backfill documents for every mapping, so that
   * the thread reading MongoDB and writing BigQuery does not: `auto` (the default) takes one per core, up
   * to 4, and none on a single core; 0 does it all on the one thread. See docs/operations.md.
   */
  WORKER_THREADS: workerThreadsSetting.default('auto').meta({
    description:
      'Worker threads that decode, map and encode rows: auto (one per core, up to 4, none on one core) or 0 to 16.',
  }),
  /** Megabytes of rows each mapping may have on their way to BigQuery at once (the window's other bound). */
  BIGQUERY_MAX_IN_FLIGHT_MB: wholeNumber(1, MAX_IN_FLIGHT_MB, 'megabytes')
    .default(DEFAULT_WINDOW_LIMITS.maxBytes / MEGABYTE)
    .meta({ description: 'Megabytes of rows each mapping may have on their way to BigQuery at once.' }),
  /**
   * `database` (the default): one change stream per source database, filtered on the server to the mapped
   * collections and shared by their mappings; `collection`: one per mapping. Where a server cannot open a
   * database-level stream, the daemon reads per collection and says so once. See docs/operations.md.
   */
  CHANGE_STREAM_SCOPE: oneOf(CHANGE_STREAM_SCOPES).default('database').meta({
    description: 'One change stream per source database (shared by its mappings) or per collection.',
  }),
  /**
   * The longest an idle mapping waits to save the position its stream reached with nothing to write; a
   * position reached by writing rows is saved at once. Idle positions are saved in the checkpoints
   * collection only (never in the watched settings documents).
   */
  IDLE_CHECKPOINT_INTERVAL_MS: wholeNumber(100, 3_600_000, 'milliseconds')
    .default(DEFAULT_IDLE_CHECKPOINT_INTERVAL_MS)
    .meta({ description: 'The longest an idle mapping waits to save the position its stream reached.' }),
  /** Mappings preparing their tables at once in this daemon, and as many copying (backfilling); the others wait. */
  MAX_MAPPINGS_PREPARING: wholeNumber(1, 1_000, 'mappings').default(DEFAULT_MAX_MAPPINGS_PREPARING).meta({
    description: 'Mappings preparing their tables at once in this daemon, and as many backfilling.',
  }),
  /** A Storage Write connection that sent nothing for this long is closed, and opened again on demand. */
  WRITE_STREAM_IDLE_MS: wholeNumber(1_000, 86_400_000, 'milliseconds')
    .default(DEFAULT_WRITE_STREAM_IDLE_MS)
    .meta({
      description: 'A Storage Write connection that sent nothing for this long is closed until rows come.',
    }),
  /**
   * A mapping is at risk when the oplog holds its resume point for less than this share of the oplog window
   * (its headroom): a warning, `/readyz` detail `at-risk`, and `status` says when its history would be lost.
   * See docs/operations.md, "Oplog headroom".
   */
  OPLOG_HEADROOM_WARN_RATIO: fraction().default(DEFAULT_OPLOG_HEADROOM_WARN_RATIO).meta({
    description:
      'A mapping is at risk when the oplog holds its resume point for less than this share of the oplog window.',
  }),
  /** How often the daemon reads the source's oplog window (one read for all mappings). */
  OPLOG_WINDOW_POLL_INTERVAL_MS: wholeNumber(1_000, 3_600_000, 'milliseconds')
    .default(DEFAULT_OPLOG_WINDOW_POLL_INTERVAL_MS)
    .meta({
      description: "How often the daemon reads the source's oplog window (one read for all mappings).",
    }),
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
  /**
   * Why the MongoDB driver would refuse this connection string, or undefined (the MongoDB adapter's
   * `connectionStringProblem`; injected, as this layer knows no driver): reported with the other problems.
   */
  readonly mongoClientProblem?: (uri: string) => string | undefined;
}

/** Keys whose values no message repeats: a connection string may hold a password. */
const SECRET_KEYS: ReadonlySet<string> = new Set(['MONGO_CLIENT']);
/** A value longer than this is cut in messages: it is quoted to be recognised, not to be read whole. */
const MAX_SHOWN_VALUE_CHARS = 80;

/** The OS reasons a file cannot be read, in words (Node's codes alone say little to most readers). */
const FILE_ERRORS: Readonly<Record<string, string>> = {
  ENOENT: 'no such file',
  EACCES: 'permission denied (the user running the archiver may not read it)',
  EPERM: 'operation not permitted',
  EISDIR: 'it is a directory, not a file',
  ENOTDIR: 'a part of its path is not a directory',
  ELOOP: 'too many symbolic links on its path',
  ENAMETOOLONG: 'the path is too long',
  EMFILE: 'too many files open in this process',
};

/**
 * Reads and parses the file: its keys, or undefined when the default file is absent. A file that cannot be
 * read, is not JSON or is not a JSON object is a ConfigError saying so (the OS reason, the line and column).
 */
function readConfigFile(path: string, explicitPath: boolean): Record<string, unknown> | undefined {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' && !explicitPath) return undefined;
    const reason =
      code === undefined ? errorMessage(error) : `${FILE_ERRORS[code] ?? errorMessage(error)} (${code})`;
    throw new ConfigError(`cannot read the config file ${path}: ${reason}`, { cause: error });
  }
  // An editor may save a byte order mark, which JSON.parse refuses; it is not part of the text.
  const json = text.startsWith('\uFEFF') ? text.slice(1) : text;
  let parsed: unknown;
  try {
    parsed = JSON.parse(json);
  } catch (error) {
    const problem = jsonSyntaxProblem(json);
    const where =
      problem === undefined
        ? errorMessage(error)
        : `line ${String(problem.place.line)}, column ${String(problem.place.column)}: expected ${problem.expected}`;
    throw new ConfigError(`the config file ${path} is not valid JSON: ${where}`, { cause: error });
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new ConfigError(
      `the config file ${path} must be a JSON object with the configuration keys, such as ` +
        `{"BIGQUERY_PROJECT": "my-project", ...}; it holds ${jsonKind(parsed)}`,
    );
  }
  return parsed as Record<string, unknown>;
}

function jsonKind(value: unknown): string {
  if (Array.isArray(value)) return 'an array';
  if (value === null) return 'null';
  if (typeof value === 'boolean') return String(value);
  return `a ${typeof value}`;
}

/** `"abc" ` as quoted in a message, nothing for a secret. */
function shownValue(key: string, value: unknown): string {
  if (SECRET_KEYS.has(key)) return '';
  const text = JSON.stringify(value);
  return `${text.length > MAX_SHOWN_VALUE_CHARS ? `${text.slice(0, MAX_SHOWN_VALUE_CHARS - 3)}...` : text} `;
}

/** A schema message as the predicate of a sentence about the value (`is not ...`, `must be ...`). */
function predicate(message: string): string {
  if (message.startsWith('not ')) return `is ${message}`;
  if (/^(is|must) /.test(message)) return message;
  return `is invalid: ${message}`;
}

/**
 * Reads `config.json` (default /config-local/config.json) and lets every key be overridden by an
 * environment variable of the same name, as the original service did. Without a file the environment
 * alone may configure everything. Throws one ConfigError naming every problem at once, one line each
 * (`METRICS_PORT: "abc" is not a port number ...`), so that one edit can fix them all.
 */
export function loadBootstrapConfig(options: LoadOptions = {}): BootstrapConfig {
  const path = options.path ?? DEFAULT_CONFIG_PATH;
  const env = options.env ?? process.env;
  const fromFile = readConfigFile(path, options.explicitPath === true) ?? {};
  /** The known key each unknown key of the file probably meant. */
  const meant = new Map<string, string>();
  for (const key of Object.keys(fromFile)) {
    if ((KEYS as readonly string[]).includes(key)) continue;
    const suggestion = closestName(key, KEYS);
    if (suggestion !== undefined && !meant.has(suggestion)) meant.set(suggestion, key);
    options.onUnknownKey?.(
      `${path}: unknown key ${key}${suggestion === undefined ? '' : ` (did you mean ${suggestion}?)`}; it is ignored`,
    );
  }
  const merged: Record<string, unknown> = {};
  const fromEnv = new Set<string>();
  for (const key of KEYS) {
    const envValue = env[key];
    if (envValue !== undefined && envValue !== '') {
      merged[key] = envValue;
      fromEnv.add(key);
    } else if (fromFile[key] !== undefined && fromFile[key] !== '') {
      merged[key] = fromFile[key];
    }
  }
  const result = bootstrapSchema.safeParse(merged);
  const uri = merged.MONGO_CLIENT;
  const uriProblem =
    typeof uri === 'string' && /^mongodb(\+srv)?:\/\//.test(uri)
      ? options.mongoClientProblem?.(uri)
      : undefined;
  if (result.success && uriProblem === undefined) return Object.freeze(result.data);
  const problems = new Map<string, string>();
  if (uriProblem !== undefined) {
    problems.set(
      'MONGO_CLIENT',
      `MONGO_CLIENT: ${uriProblem}${fromEnv.has('MONGO_CLIENT') ? ' (from the environment)' : ''}`,
    );
  }
  for (const issue of result.success ? [] : result.error.issues) {
    const key = String(issue.path[0] ?? 'config');
    if (problems.has(key)) continue;
    if (merged[key] === undefined) {
      const typo = meant.get(key);
      problems.set(
        key,
        `${key}: missing; set it in ${path} or in the environment` +
          (typo === undefined ? '' : ` (${path} has ${typo}: did you mean ${key}?)`),
      );
      continue;
    }
    const source = fromEnv.has(key) ? ' (from the environment)' : '';
    problems.set(key, `${key}: ${shownValue(key, merged[key])}${predicate(issue.message)}${source}`);
  }
  const lines = [...problems.values()];
  throw new ConfigError(
    lines.length === 1
      ? (lines[0] ?? '')
      : `${String(lines.length)} problems in the configuration:\n${lines.map((l) => `  ${l}`).join('\n')}`,
  );
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
