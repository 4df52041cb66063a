import { createBigQueryClients, type BigQueryClients } from '../../../src/bigquery/client.js';
import { bigQueryTestEnv, type BigQueryTestEnv } from './bigquery.js';

/** The production client factory, pointed at the emulator the test run started (or at `env`). */
export async function emulatorClients(env: BigQueryTestEnv = bigQueryTestEnv()): Promise<BigQueryClients> {
  return createBigQueryClients({
    kind: 'emulator',
    projectId: env.projectId,
    apiEndpoint: env.apiEndpoint,
    grpcHost: env.grpcHost,
    grpcPort: env.grpcPort,
  });
}
