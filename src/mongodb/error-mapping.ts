import { ArchiverError, ERROR_CODES, type Disposition, errorMessage } from '../errors.js';
import { isDocument } from '../base/bson-kind.js';

/**
 * MongoDB server error codes this adapter names (https://www.mongodb.com/docs/manual/reference/error-codes/;
 * the retryable ones are the Node driver's resumable and retryable sets in its `src/error.ts`).
 */
export const MONGO_CODES = {
  HostUnreachable: 6,
  HostNotFound: 7,
  Unauthorized: 13,
  AuthenticationFailed: 18,
  PathNotViable: 28,
  CursorNotFound: 43,
  NamespaceExists: 48,
  StaleShardVersion: 63,
  WriteConcernFailed: 64,
  InvalidNamespace: 73,
  NetworkTimeout: 89,
  ShutdownInProgress: 91,
  FailedToSatisfyReadPreference: 133,
  ReadConcernMajorityNotAvailableYet: 134,
  StaleEpoch: 150,
  PrimarySteppedDown: 189,
  RetryChangeStream: 234,
  InvalidResumeToken: 260,
  ExceededTimeLimit: 262,
  ChangeStreamFatalError: 280,
  ChangeStreamHistoryLost: 286,
  SocketException: 9_001,
  LegacyNotPrimary: 10_058,
  NotWritablePrimary: 10_107,
  DuplicateKey: 11_000,
  InterruptedAtShutdown: 11_600,
  InterruptedDueToReplStateChange: 11_602,
  StaleConfig: 13_388,
  NotPrimaryNoSecondaryOk: 13_435,
  NotPrimaryOrSecondary: 13_436,
  UnrecognizedPipelineStage: 40_324,
} as const;

/**
 * The one code table: what a server error code means to the service. Codes not listed (and errors without
 * a code: network errors, server selection timeouts) are retryable, as the driver's own resumable set plus
 * a bounded backoff make the safe default. Codes that only a caller understands in context (DuplicateKey,
 * NamespaceExists, PathNotViable, UnrecognizedPipelineStage) are handled there, before wrapping.
 */
const CODE_DISPOSITIONS: ReadonlyMap<number, Disposition> = new Map<number, Disposition>([
  // Network, elections and shutdowns: the driver resumes or retries these itself when it can.
  [MONGO_CODES.HostUnreachable, 'retryable'],
  [MONGO_CODES.HostNotFound, 'retryable'],
  [MONGO_CODES.CursorNotFound, 'retryable'],
  [MONGO_CODES.StaleShardVersion, 'retryable'],
  [MONGO_CODES.WriteConcernFailed, 'retryable'],
  [MONGO_CODES.NetworkTimeout, 'retryable'],
  [MONGO_CODES.ShutdownInProgress, 'retryable'],
  [MONGO_CODES.FailedToSatisfyReadPreference, 'retryable'],
  [MONGO_CODES.ReadConcernMajorityNotAvailableYet, 'retryable'],
  [MONGO_CODES.StaleEpoch, 'retryable'],
  [MONGO_CODES.PrimarySteppedDown, 'retryable'],
  [MONGO_CODES.RetryChangeStream, 'retryable'],
  [MONGO_CODES.ExceededTimeLimit, 'retryable'],
  [MONGO_CODES.SocketException, 'retryable'],
  [MONGO_CODES.LegacyNotPrimary, 'retryable'],
  [MONGO_CODES.NotWritablePrimary, 'retryable'],
  [MONGO_CODES.InterruptedAtShutdown, 'retryable'],
  [MONGO_CODES.InterruptedDueToReplStateChange, 'retryable'],
  [MONGO_CODES.StaleConfig, 'retryable'],
  [MONGO_CODES.NotPrimaryNoSecondaryOk, 'retryable'],
  [MONGO_CODES.NotPrimaryOrSecondary, 'retryable'],
  // The user may not do this, or the namespace cannot exist: retrying changes nothing until someone acts.
  [MONGO_CODES.Unauthorized, 'fatal'],
  [MONGO_CODES.AuthenticationFailed, 'fatal'],
  [MONGO_CODES.InvalidNamespace, 'fatal'],
  // The change stream's position is gone from the oplog (or was never valid): `on_history_lost` decides.
  [MONGO_CODES.ChangeStreamHistoryLost, 'history-lost'],
  [MONGO_CODES.ChangeStreamFatalError, 'history-lost'],
  [MONGO_CODES.InvalidResumeToken, 'history-lost'],
]);

/** Labels with which the server or driver says "try again" whatever the code (driver's `MongoErrorLabel`). */
const RETRYABLE_LABELS: ReadonlySet<string> = new Set([
  'RetryableWriteError',
  'ResumableChangeStreamError',
  'TransientTransactionError',
]);

/** Names of the reasons an aborted signal carries (the driver rejects with the signal's reason). */
const SIGNAL_REASONS: ReadonlySet<string> = new Set(['AbortError', 'TimeoutError']);

/** The server's numeric error code carried by a driver error, if any. */
export function codeOf(error: unknown): number | undefined {
  const code = isDocument(error) || error instanceof Error ? (error as { code?: unknown }).code : undefined;
  return typeof code === 'number' ? code : undefined;
}

function labelsOf(error: unknown): readonly string[] {
  // The driver's MongoError exposes its labels as `errorLabels` (a getter over a private set).
  const labels = error instanceof Error ? (error as { errorLabels?: unknown }).errorLabels : undefined;
  return Array.isArray(labels) ? labels.filter((l): l is string => typeof l === 'string') : [];
}

/** The one place deciding what a MongoDB failure means; our own errors keep the disposition they carry. */
export function classifyMongoError(error: unknown): Disposition {
  if (error instanceof ArchiverError) return error.disposition;
  if (labelsOf(error).some((label) => RETRYABLE_LABELS.has(label))) return 'retryable';
  const code = codeOf(error);
  return (code !== undefined ? CODE_DISPOSITIONS.get(code) : undefined) ?? 'retryable';
}

/** The resume point is no longer in the oplog: per-mapping policy decides (fail or resnapshot). */
export class HistoryLostError extends ArchiverError {
  constructor(message: string, options?: ErrorOptions) {
    super(ERROR_CODES.historyLost, 'history-lost', message, options);
  }
}

/** A MongoDB operation failed; `disposition` comes from the code table, `cause` keeps the driver's error. */
export class MongoDbError extends ArchiverError {
  constructor(disposition: Disposition, message: string, options?: ErrorOptions) {
    super(ERROR_CODES.mongodb, disposition, message, options);
  }
}

/**
 * Wraps a foreign error at the adapter boundary, keeping it as `cause` and its message as is (logs and
 * `lastFailure` read the same as before). Our own errors (fenced out, malformed event...) and the reasons
 * of our aborted signals pass unchanged.
 */
export function toMongoError(error: unknown): Error {
  if (error instanceof ArchiverError) return error;
  // The reason of one of our own signals (a stop, or a bound from `within` running out) is not the driver's:
  // callers recognise it by its name, and an unclassified error is retried anyway.
  if (error instanceof Error && SIGNAL_REASONS.has(error.name)) return error;
  const message = errorMessage(error);
  const disposition = classifyMongoError(error);
  const code = codeOf(error);
  if (disposition === 'history-lost') {
    return new HistoryLostError(
      `the change stream cannot resume: its position is no longer in the oplog (code ${String(code)}: ${message})`,
      { cause: error },
    );
  }
  return new MongoDbError(disposition, message, { cause: error });
}

/**
 * Runs one adapter operation and wraps what it throws (see `toMongoError`). Every public method of the
 * MongoDB adapters (the core's ports) goes through it, so the core sees only our errors.
 */
export async function mongoBoundary<T>(operation: () => Promise<T>): Promise<T> {
  try {
    return await operation();
  } catch (error) {
    throw toMongoError(error);
  }
}
