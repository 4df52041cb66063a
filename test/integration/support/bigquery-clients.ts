import { createBigQueryClients, type BigQueryClients } from '../../../src/bigquery/client.js';
import { bigQueryTestEnv } from './bigquery.js';

/** The production client factory, pointed at the emulator the test run started. */
export async function emulatorClients(): Promise<BigQueryClients> {
  const env = bigQueryTestEnv();
  return createBigQueryClients({
    kind: 'emulator',
    projectId: env.projectId,
    apiEndpoint: env.apiEndpoint,
    grpcHost: env.grpcHost,
    grpcPort: env.grpcPort,
  });
}
