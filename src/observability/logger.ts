import { pino, stdSerializers, type LevelWithSilent, type Logger } from 'pino';
import { type SupervisorLog } from '../core/supervisor.js';
import {
  prettyDestination,
  resolveLogFormat,
  STDOUT_SUPPORTS_COLOUR,
  type LogDestination,
  type LogFormat,
} from './log-format.js';

export type { Logger };

/** What replaces a secret value in the logs. */
export const REDACTED = '[REDACTED]';
export const REDACTED_PRIVATE_KEY = '[REDACTED PRIVATE KEY]';

/**
 * Field names are compared lower-cased without `_` and `-`, so `MONGO_PASSWORD`, `accessToken` and
 * `client-secret` are all caught. A name is secret when it contains one of the parts, ends with one of the
 * endings or is one of the exact names.
 */
const SECRET_NAME_PARTS = [
  'password',
  'passwd',
  'secret',
  'privatekey',
  'credential',
  'authorization',
  'cookie',
] as const;
const SECRET_NAME_ENDINGS = ['token', 'apikey', 'accesskey'] as const;
const SECRET_NAMES = ['key', 'pwd'] as const;
/** Positions and leases are what an operator needs when a resume goes wrong; neither grants access. */
const NON_SECRET_NAMES = ['resumetoken', 'postbatchresumetoken', 'fencingtoken'] as const;

/**
 * Redaction paths handed to pino. They matter for child-logger bindings, which `formatters.log` never
 * sees; logged objects are scrubbed at any depth by `scrub`.
 */
const PINO_REDACT_NAMES = [
  'password',
  'secret',
  'token',
  'key',
  'private_key',
  'privateKey',
  'access_token',
  'accessToken',
  'refresh_token',
  'client_secret',
  'apiKey',
  'api_key',
  'authorization',
  'credentials',
] as const;

/** Whether a field of this name holds a secret whose value must never be logged. */
export function isSecretFieldName(name: string): boolean {
  const normalised = name.toLowerCase().replaceAll('_', '').replaceAll('-', '');
  if ((NON_SECRET_NAMES as readonly string[]).includes(normalised)) return false;
  return (
    (SECRET_NAMES as readonly string[]).includes(normalised) ||
    SECRET_NAME_PARTS.some((part) => normalised.includes(part)) ||
    SECRET_NAME_ENDINGS.some((ending) => normalised.endsWith(ending))
  );
}

/**
 * The credentials of a connection string inside a serialised JSON string. The driver takes a password with
 * unencoded spaces, quotes and `@`, so the password is not cut at whitespace: it runs to the last `@` before
 * the host, that is before the next `/`, `?`, `#` or the end of the JSON string. Escapes (`\"`, `\n`) belong
 * to it. Where text follows a URI without a path, more than the password may be hidden: never less.
 */
const URI_CREDENTIALS = /(mongodb(?:\+srv)?:\/\/(?:[^:/@"\\]|\\.)+:)(?:[^/?#"\\]|\\.)*@/g;
/**
 * Connection-string options whose values are secrets: the TLS client key's password and the SOCKS5 proxy's
 * password (up to the next option, like the password, not to whitespace), and an AWS session token inside
 * `authMechanismProperties` (`AWS_SESSION_TOKEN:...`).
 */
const SECRET_URI_OPTIONS =
  /([?&](?:tlsCertificateKeyFilePassword|sslPEMKeyPassword|proxyPassword)=)(?:[^&#"\\]|\\.)*/gi;
const AWS_SESSION_TOKEN = /(AWS_SESSION_TOKEN(?::|%3A))(?:[^,&#\s"\\]|\\.)*/gi;
/** A PEM private key inside a serialised JSON string, up to its END line or, if cut short, the string's end. */
const PEM_PRIVATE_KEY =
  /-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY-----(?:[^"\\]|\\.)*?(?:-----END \1PRIVATE KEY-----|(?="))/g;

/**
 * Removes connection-string secrets and private keys from one serialised log line. It runs on the final
 * line because strings reach it from many places (messages, format arguments, error messages and stacks,
 * child bindings), and this is the one place they all pass. `scrubText` is the same for plain text.
 */
export function scrubLogLine(line: string): string {
  let out = line;
  if (out.includes('mongodb')) {
    out = out
      .replace(URI_CREDENTIALS, '$1***@')
      .replace(SECRET_URI_OPTIONS, '$1***')
      .replace(AWS_SESSION_TOKEN, '$1***');
  }
  if (out.includes('PRIVATE KEY-----')) out = out.replace(PEM_PRIVATE_KEY, REDACTED_PRIVATE_KEY);
  return out;
}

/**
 * `scrubLogLine` for text that is not a JSON line (a connection string, an error message the CLI prints):
 * the text goes through it as a JSON string, so one scrubber serves the logs and the CLI alike.
 */
export function scrubText(text: string): string {
  return JSON.parse(scrubLogLine(JSON.stringify(text))) as string;
}

function hasToJson(value: object): boolean {
  return typeof (value as { toJSON?: unknown }).toJSON === 'function';
}

/**
 * A copy of a logged value with secret fields replaced at any depth. Errors become pino's serialised form
 * wherever they are (pino only serialises the one under `err`); values with `toJSON` (dates, ObjectIds,
 * buffers) are left to it.
 */
function scrub(value: unknown, ancestors: WeakSet<object>): unknown {
  if (typeof value !== 'object' || value === null) return value;
  if (ancestors.has(value)) return '[Circular]';
  const isError = value instanceof Error;
  if (!isError && hasToJson(value)) return value;
  ancestors.add(value);
  try {
    if (Array.isArray(value)) return value.map((item: unknown) => scrub(item, ancestors));
    const source: object = isError ? stdSerializers.err(value) : value;
    const out: Record<string, unknown> = {};
    for (const [name, field] of Object.entries(source)) {
      out[name] = isSecretFieldName(name) && field != null ? REDACTED : scrub(field, ancestors);
    }
    return out;
  } finally {
    ancestors.delete(value);
  }
}

export interface LoggerOptions {
  readonly level: LevelWithSilent;
  /** `auto` (the default): human lines when the destination is a terminal, JSON lines otherwise. */
  readonly format?: LogFormat;
  /** Where the lines go; standard output when absent. */
  readonly destination?: LogDestination;
  /**
   * Colours in human lines; by default only on standard output, and there as the terminal supports them
   * (NO_COLOR, FORCE_COLOR).
   */
  readonly colour?: boolean;
}

/**
 * A failure logged under `err` that is not an `Error` (a thrown string, say) is still an object with a
 * type and a message, so that `err.type` and `err.message` are there for every failure.
 */
function errorField(value: unknown): unknown {
  if (value instanceof Error || (typeof value === 'object' && value !== null)) return value;
  return { type: typeof value, message: String(value) };
}

/**
 * The process logger: ISO `time`, `level` as a label, a failure under `err` with its type, message
 * (with its causes'), stack and, for our errors, `code` and `disposition`; secrets (secret-named fields,
 * passwords in MongoDB connection strings, PEM private keys) redacted wherever they appear. One JSON object
 * per line, or human lines on a terminal (`format`).
 */
export function createLogger(options: LoggerOptions): Logger {
  const config = {
    level: options.level,
    timestamp: pino.stdTimeFunctions.isoTime,
    redact: {
      paths: PINO_REDACT_NAMES.flatMap((name) => [name, `*.${name}`]),
      censor: REDACTED,
    },
    // `formatters.log` already serialised every error; pino's own serialiser would turn that copy into an
    // error of type "Object".
    serializers: { err: (value: unknown) => value },
    formatters: {
      level: (label: string) => ({ level: label }),
      log: (object: Record<string, unknown>) =>
        scrub('err' in object ? { ...object, err: errorField(object.err) } : object, new WeakSet()) as Record<
          string,
          unknown
        >,
    },
    hooks: { streamWrite: scrubLogLine },
  };
  const destination = options.destination;
  if (resolveLogFormat(options.format ?? 'auto', destination ?? process.stdout) === 'json') {
    return destination ? pino(config, destination) : pino(config);
  }
  // Written synchronously, as pino writes to standard output by default: a line logged just before the
  // process exits is not lost.
  const target = destination ?? pino.destination({ dest: 1, sync: true });
  return pino(config, prettyDestination(target, options.colour ?? (!destination && STDOUT_SUPPORTS_COLOUR)));
}

/** The supervisor's log (message first, then context) written to `logger`. */
export function supervisorLog(logger: Logger): SupervisorLog {
  return {
    info: (message, context) => {
      logger.info(context ?? {}, message);
    },
    warn: (message, context) => {
      logger.warn(context ?? {}, message);
    },
    error: (message, context) => {
      logger.error(context ?? {}, message);
    },
  };
}

/** Where a mapping's log lines come from: its name, source collection and target table. */
export interface MappingContext {
  readonly mapping: string;
  readonly database: string;
  readonly collection: string;
  readonly table: string;
}

/** A child logger whose every line carries the mapping context. */
export function mappingLogger(logger: Logger, context: MappingContext): Logger {
  const { mapping, database, collection, table } = context;
  return logger.child({ mapping, database, collection, table });
}
