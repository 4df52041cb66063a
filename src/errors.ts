/** Stable error codes; logs, `lastFailure` texts and exit codes are derived from them. */
export const ERROR_CODES = {
  config: 'CONFIG_INVALID',
  settings: 'SETTINGS_INVALID',
  identifier: 'IDENTIFIER_INVALID',
  bigquery: 'BIGQUERY_FAILED',
  mongodb: 'MONGODB_FAILED',
  source: 'SOURCE_EVENT_INVALID',
  historyLost: 'HISTORY_LOST',
  fencedOut: 'FENCED_OUT',
} as const;

export type ErrorCode = (typeof ERROR_CODES)[keyof typeof ERROR_CODES];

/**
 * What the service does about a failure, set once where the error is made (adapters classify foreign
 * errors at their boundary); restart policy, metrics and exit codes read only this:
 * - `retryable`: transient (network, elections, rate limits, 5xx...): the mapping restarts with backoff;
 * - `fatal`: permissions, missing table, an invalid settings document...: the mapping stops until its
 *   settings change; the CLI exits with 1;
 * - `config-invalid`: the configuration or a name in it is wrong: as `fatal`, but the CLI exits with 2;
 * - `history-lost`: the change stream's position left the oplog: `on_history_lost` decides, else as `fatal`;
 * - `fenced-out`: another instance took the mapping's lease: stop it here and give the lease up.
 */
export const DISPOSITIONS = ['retryable', 'fatal', 'config-invalid', 'history-lost', 'fenced-out'] as const;
export type Disposition = (typeof DISPOSITIONS)[number];

/** The message of a thrown value, whatever was thrown (logs, `lastFailure`, CLI lines). */
export function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** Base of every error this project raises; foreign errors are wrapped with `cause` at adapter boundaries. */
export class ArchiverError extends Error {
  readonly code: ErrorCode;
  readonly disposition: Disposition;

  constructor(code: ErrorCode, disposition: Disposition, message: string, options?: ErrorOptions) {
    super(message, options);
    this.code = code;
    this.disposition = disposition;
    this.name = new.target.name;
  }
}

/**
 * The single reader of dispositions. An error that no adapter classified (a bug, or a foreign error that
 * slipped through) is retried: a bounded backoff costs little, stopping on a transient failure loses time.
 */
export function dispositionOf(error: unknown): Disposition {
  return error instanceof ArchiverError ? error.disposition : 'retryable';
}

/** A configuration value is missing or wrong: fatal for what it configures, never retried. */
export class ConfigError extends ArchiverError {
  constructor(message: string, options?: ErrorOptions) {
    super(ERROR_CODES.config, 'config-invalid', message, options);
  }
}

/** A settings document (or its column specs) is invalid: that mapping stops, the others go on. */
export class SettingsError extends ArchiverError {
  /** Precise problems, each naming the path of the offending entry. */
  readonly issues: readonly string[];

  constructor(issues: readonly string[], options?: ErrorOptions) {
    super(ERROR_CODES.settings, 'fatal', issues.join('; '), options);
    this.issues = issues;
  }
}

/** A name that would reach SQL or the BigQuery API is not legal there. */
export class IdentifierError extends ArchiverError {
  constructor(message: string, options?: ErrorOptions) {
    super(ERROR_CODES.identifier, 'config-invalid', message, options);
  }
}

/**
 * How a failure is handled, decided in one place per service (see `classifyBigQueryError`):
 * - `retryable`: transient (rate limits, 5xx, UNAVAILABLE, DEADLINE_EXCEEDED...): retry with backoff;
 * - `schema`: the table lacks (or does not show writes yet) a column the rows carry: patch the schema once,
 *   then retry with backoff while BigQuery catches up; never dead-lettered;
 * - `poison`: the rows themselves are refused: dead-letter them, the rest goes on;
 * - `fatal`: permissions, missing project or table, bad configuration: stop and report.
 */
export const FAILURE_CLASSES = ['retryable', 'schema', 'poison', 'fatal'] as const;
export type FailureClass = (typeof FAILURE_CLASSES)[number];

/** A BigQuery request failed; `failureClass` says what to do about it, `cause` keeps the original error. */
export class BigQueryError extends ArchiverError {
  readonly failureClass: FailureClass;

  constructor(failureClass: FailureClass, message: string, options?: ErrorOptions) {
    // Schema and poison failures are the sink's own business (patch, dead-letter); one that escapes it is
    // retried, as before.
    super(ERROR_CODES.bigquery, failureClass === 'fatal' ? 'fatal' : 'retryable', message, options);
    this.failureClass = failureClass;
  }
}

/**
 * A write of a mapping's checkpoint or state was refused because another instance took the mapping's lease
 * (its fencing token is newer): this instance must stop the mapping, not retry.
 */
export class FencedOutError extends ArchiverError {
  constructor(message: string, options?: ErrorOptions) {
    super(ERROR_CODES.fencedOut, 'fenced-out', message, options);
  }
}

/** The socket error codes a connectivity failure is told by, and how a line for an operator says them. */
const NETWORK_REASONS: readonly (readonly [code: string, reason: string])[] = [
  ['ECONNREFUSED', 'connection refused'],
  ['ENOTFOUND', 'host not found'],
  ['EAI_AGAIN', 'host not found (DNS did not answer)'],
  ['EHOSTUNREACH', 'no route to the host'],
  ['ENETUNREACH', 'network unreachable'],
  ['ECONNRESET', 'connection reset'],
  ['ETIMEDOUT', 'connection timed out'],
];

/**
 * Why a request could not reach its server (`connection refused`, `host not found`...), read from the
 * socket error code anywhere in `error`, its causes or the errors it aggregates (drivers wrap it, or keep
 * only its text in their message); undefined when `error` is no network failure this recognises.
 */
export function networkFailureReason(error: unknown): string | undefined {
  const texts: string[] = [];
  const seen = new Set<unknown>();
  const collect = (value: unknown): void => {
    if (typeof value !== 'object' || value === null || seen.has(value)) return;
    seen.add(value);
    const { code, message, cause, errors } = value as {
      code?: unknown;
      message?: unknown;
      cause?: unknown;
      errors?: unknown;
    };
    if (typeof code === 'string') texts.push(code);
    if (typeof message === 'string') texts.push(message);
    collect(cause);
    if (Array.isArray(errors)) for (const inner of errors) collect(inner);
  };
  collect(error);
  const text = texts.join('\n');
  return NETWORK_REASONS.find(([code]) => new RegExp(`\\b${code}\\b`).test(text))?.[1];
}
