import { describe, expect, it } from 'vitest';
import { BigQueryError } from '../../../src/errors.js';
import { classifyBigQueryError, toBigQueryError } from '../../../src/bigquery/error-mapping.js';

describe('BigQuery error classification', () => {
  it.each([
    ['HTTP 503', { code: 503, message: 'Service Unavailable' }, 'retryable'],
    ['HTTP 429', { code: 429, message: 'Too Many Requests' }, 'retryable'],
    [
      'rate limit as 403',
      { code: 403, errors: [{ reason: 'rateLimitExceeded' }], message: 'Exceeded rate limits' },
      'retryable',
    ],
    [
      'quota as 403',
      { code: 403, errors: [{ reason: 'quotaExceeded' }], message: 'Quota exceeded' },
      'retryable',
    ],
    ['access denied', { code: 403, errors: [{ reason: 'accessDenied' }], message: 'Access Denied' }, 'fatal'],
    [
      'missing table',
      { code: 404, errors: [{ reason: 'notFound' }], message: 'Not found: Table p:d.t' },
      'fatal',
    ],
    ['unauthenticated', { code: 401, message: 'Request had invalid authentication credentials' }, 'fatal'],
    ['unknown column', { code: 400, message: 'no such field: fresh.' }, 'schema'],
    [
      'invalid row',
      { code: 400, errors: [{ reason: 'invalid' }], message: 'Cannot convert value' },
      'poison',
    ],
    ['gRPC UNAVAILABLE', { code: 14, message: '14 UNAVAILABLE: Connection dropped' }, 'retryable'],
    ['gRPC DEADLINE_EXCEEDED', { code: 4, message: '4 DEADLINE_EXCEEDED' }, 'retryable'],
    ['gRPC RESOURCE_EXHAUSTED', { code: 8, message: '8 RESOURCE_EXHAUSTED' }, 'retryable'],
    ['gRPC PERMISSION_DENIED', { code: 7, message: '7 PERMISSION_DENIED' }, 'fatal'],
    ['gRPC NOT_FOUND', { code: 5, message: '5 NOT_FOUND: Requested entity was not found' }, 'fatal'],
    [
      'gRPC schema mismatch',
      { code: 3, message: 'Input schema has more fields than BigQuery schema' },
      'schema',
    ],
    ['gRPC INVALID_ARGUMENT', { code: 3, message: '3 INVALID_ARGUMENT: bad row' }, 'poison'],
    ['network reset', Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' }), 'retryable'],
  ])('%s is %s', (_label, error, expected) => {
    expect(classifyBigQueryError(error)).toBe(expected);
  });

  it('wraps a foreign error once, keeping it as cause', () => {
    const original = { code: 503, message: 'down' };
    const wrapped = toBigQueryError(original, 'insertAll into t');
    expect(wrapped).toBeInstanceOf(BigQueryError);
    expect(wrapped.failureClass).toBe('retryable');
    expect(wrapped.message).toBe('insertAll into t: down');
    expect(wrapped.cause).toBe(original);
    expect(toBigQueryError(wrapped, 'again')).toBe(wrapped);
  });
});
