/** Project id every BigQuery emulator is started with; the emulators accept any id, a fixed one keeps logs readable. */
export const BIGQUERY_TEST_PROJECT = 'mba-test';

export interface BigQueryEndpoints {
  readonly restPort: number;
  readonly grpcPort: number;
}

/** The environment a BigQuery peer hands to the tests; both emulators listen on loopback only. */
export function bigQueryTestEnv(peerName: string, endpoints: BigQueryEndpoints): Record<string, string> {
  return {
    MBA_TEST_BIGQUERY_PEER: peerName,
    MBA_TEST_BIGQUERY_PROJECT: BIGQUERY_TEST_PROJECT,
    MBA_TEST_BIGQUERY_API_ENDPOINT: `http://127.0.0.1:${endpoints.restPort}`,
    MBA_TEST_BIGQUERY_GRPC_HOST: '127.0.0.1',
    MBA_TEST_BIGQUERY_GRPC_PORT: String(endpoints.grpcPort),
  };
}
