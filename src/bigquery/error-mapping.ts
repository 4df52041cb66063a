import { BigQueryError, type FailureClass } from '../errors.js';

// gRPC status codes (https://grpc.github.io/grpc/core/md_doc_statuscodes.html).
const GRPC = {
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  DATA_LOSS: 15,
  UNAUTHENTICATED: 16,
} as const;

const RETRYABLE_GRPC = new Set<number>([
  GRPC.CANCELLED,
  GRPC.UNKNOWN,
  GRPC.DEADLINE_EXCEEDED,
  GRPC.RESOURCE_EXHAUSTED,
  GRPC.ABORTED,
  GRPC.INTERNAL,
  GRPC.UNAVAILABLE,
]);
const FATAL_GRPC = new Set<number>([
  GRPC.NOT_FOUND,
  GRPC.PERMISSION_DENIED,
  GRPC.UNAUTHENTICATED,
  GRPC.UNIMPLEMENTED,
  GRPC.FAILED_PRECONDITION,
]);
/** REST `errors[].reason` values (https://cloud.google.com/bigquery/docs/error-messages). */
const RETRYABLE_REASONS = new Set([
  'backendError',
  'internalError',
  'rateLimitExceeded',
  'quotaExceeded',
  'timeout',
  'jobBackendError',
  'jobInternalError',
]);
const FATAL_REASONS = new Set([
  'accessDenied',
  'notFound',
  'billingNotEnabled',
  'responseTooLarge',
  'duplicate',
]);
const SCHEMA_MESSAGE =
  /no such field|unknown field|schema (?:mismatch|does not match)|input schema has more fields/i;

interface ErrorShape {
  readonly code?: unknown;
  readonly status?: unknown;
  readonly message?: unknown;
  readonly errors?: unknown;
  readonly reason?: unknown;
}

function shape(error: unknown): ErrorShape {
  return typeof error === 'object' && error !== null ? error : {};
}

function reasonsOf(error: ErrorShape): string[] {
  const reasons: string[] = [];
  if (typeof error.reason === 'string') reasons.push(error.reason);
  if (Array.isArray(error.errors)) {
    for (const e of error.errors as unknown[]) {
      const r = shape(e).reason;
      if (typeof r === 'string') reasons.push(r);
    }
  }
  return reasons;
}

/**
 * The one place deciding what a BigQuery failure means (REST errors from @google-cloud/bigquery, gRPC
 * errors from the Storage Write API, network errors). Unknown failures are retryable: a bounded retry
 * costs little, giving up on a transient error loses progress.
 */
export function classifyBigQueryError(error: unknown): FailureClass {
  if (error instanceof BigQueryError) return error.failureClass;
  const e = shape(error);
  const message = typeof e.message === 'string' ? e.message : String(error);
  if (SCHEMA_MESSAGE.test(message)) return 'schema';
  const reasons = reasonsOf(e);
  if (reasons.some((r) => RETRYABLE_REASONS.has(r))) return 'retryable';
  if (reasons.some((r) => FATAL_REASONS.has(r))) return 'fatal';
  if (reasons.includes('invalid')) return 'poison';
  const code = typeof e.code === 'number' ? e.code : typeof e.status === 'number' ? e.status : undefined;
  // HTTP statuses are >= 100, gRPC codes are 0..16.
  if (code !== undefined && code >= 100) {
    if (code === 408 || code === 429 || code >= 500) return 'retryable';
    if (code === 401 || code === 403 || code === 404) return 'fatal';
    if (code === 400) return 'poison';
    return 'fatal';
  }
  if (code !== undefined) {
    if (RETRYABLE_GRPC.has(code)) return 'retryable';
    if (FATAL_GRPC.has(code)) return 'fatal';
    if (code === GRPC.INVALID_ARGUMENT || code === GRPC.OUT_OF_RANGE) return 'poison';
  }
  return 'retryable';
}

/** Wraps a foreign error at the adapter boundary, keeping it as `cause`. */
export function toBigQueryError(error: unknown, context: string): BigQueryError {
  if (error instanceof BigQueryError) return error;
  const m = shape(error).message;
  const message = typeof m === 'string' ? m : String(error);
  return new BigQueryError(classifyBigQueryError(error), `${context}: ${message}`, { cause: error });
}
