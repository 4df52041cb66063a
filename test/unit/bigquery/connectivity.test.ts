import { describe, expect, it } from 'vitest';
import { type BigQueryConnection } from '../../../src/bigquery/client.js';
import { describeBigQueryFailure } from '../../../src/bigquery/connectivity.js';
import { networkFailureReason } from '../../../src/errors.js';

const EMULATOR: BigQueryConnection = {
  kind: 'emulator',
  projectId: 'p',
  apiEndpoint: 'http://127.0.0.1:1',
  grpcHost: '127.0.0.1',
  grpcPort: 2,
};
const GOOGLE: BigQueryConnection = { kind: 'google', projectId: 'p' };

describe('describeBigQueryFailure (issue 13: lines name BigQuery and the fix)', () => {
  it('a closed emulator port, as the client library reports it', () => {
    const error = Object.assign(
      new Error(
        'request to http://127.0.0.1:1/bigquery/v2/projects/p/datasets/d failed, reason: connect ECONNREFUSED 127.0.0.1:1',
      ),
      { code: 'ECONNREFUSED' },
    );
    expect(describeBigQueryFailure(error, EMULATOR, 'reach project p')).toBe(
      'BigQuery at http://127.0.0.1:1 unreachable (connection refused): check BIGQUERY_EMULATOR_ENDPOINT and BIGQUERY_EMULATOR_GRPC and that the emulator is running',
    );
  });

  it('no credentials at all names SERVICE_ACCOUNT_FILE and Application Default Credentials', () => {
    const error = new Error(
      'Could not load the default credentials. Browse to https://cloud.google.com/docs/authentication/getting-started for more information.',
    );
    expect(describeBigQueryFailure(error, GOOGLE, 'reach project p')).toMatch(
      /^BigQuery at bigquery\.googleapis\.com: no credentials found: set SERVICE_ACCOUNT_FILE/,
    );
  });

  it('a permission refused names the roles to grant', () => {
    const error = Object.assign(new Error('Access Denied: Dataset p:d'), { code: 403 });
    expect(describeBigQueryFailure(error, GOOGLE, 'create a table in dataset d')).toMatch(
      /permission denied \(could not create a table in dataset d: Access Denied: Dataset p:d\): grant the service account/,
    );
  });
});

describe('networkFailureReason', () => {
  it('finds the socket code in a cause, an aggregate, or only in the text', () => {
    const refused = Object.assign(new Error('x'), { code: 'ECONNREFUSED' });
    expect(networkFailureReason(new Error('wrapped', { cause: refused }))).toBe('connection refused');
    expect(networkFailureReason(new AggregateError([new Error('getaddrinfo ENOTFOUND h')]))).toBe(
      'host not found',
    );
    expect(networkFailureReason(new Error('connect ECONNREFUSED 127.0.0.1:1'))).toBe('connection refused');
    expect(networkFailureReason(new Error('Access Denied'))).toBeUndefined();
  });
});
