import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { createBigQueryClients } from '../../../src/bigquery/client.js';
import { ConfigError, IdentifierError } from '../../../src/errors.js';

function serviceAccountKeyFile(): string {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const path = join(mkdtempSync(join(tmpdir(), 'mba-key-')), 'key.json');
  writeFileSync(
    path,
    JSON.stringify({
      type: 'service_account',
      project_id: 'my-project',
      private_key_id: 'k1',
      private_key: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
      client_email: 'archiver@my-project.iam.gserviceaccount.com',
      client_id: '1',
      token_uri: 'https://oauth2.googleapis.com/token',
    }),
  );
  return path;
}

describe('BigQuery clients', () => {
  it('builds the Google clients from a service-account key file without any network call', async () => {
    const clients = await createBigQueryClients({
      kind: 'google',
      projectId: 'my-project',
      keyFilename: serviceAccountKeyFile(),
    });
    try {
      expect(clients.projectId).toBe('my-project');
      expect(clients.emulator).toBe(false);
      expect(clients.bigquery.projectId).toBe('my-project');
    } finally {
      await clients.close();
    }
  });

  it('points at an emulator only on this machine, and never probes the metadata server', async () => {
    await expect(
      createBigQueryClients({
        kind: 'emulator',
        projectId: 'mba-test',
        apiEndpoint: 'http://10.0.0.5:9050',
        grpcHost: '127.0.0.1',
        grpcPort: 9060,
      }),
    ).rejects.toBeInstanceOf(ConfigError);
    const clients = await createBigQueryClients({
      kind: 'emulator',
      projectId: 'mba-test',
      apiEndpoint: 'http://127.0.0.1:9050',
      grpcHost: '127.0.0.1',
      grpcPort: 9060,
    });
    try {
      expect(process.env.METADATA_SERVER_DETECTION).toBe('none');
      expect(clients.bigquery.apiEndpoint).toBe('http://127.0.0.1:9050');
    } finally {
      await clients.close();
    }
  });

  it("refuses to start while the client library's BIGQUERY_EMULATOR_HOST would redirect every request", async () => {
    process.env.BIGQUERY_EMULATOR_HOST = 'http://127.0.0.1:1/bigquery/v2';
    try {
      await expect(createBigQueryClients({ kind: 'google', projectId: 'my-project' })).rejects.toThrow(
        /BIGQUERY_EMULATOR_HOST is set/,
      );
    } finally {
      delete process.env.BIGQUERY_EMULATOR_HOST;
    }
  });

  it('refuses an invalid project id before building anything', async () => {
    await expect(createBigQueryClients({ kind: 'google', projectId: 'Bad_Project!' })).rejects.toBeInstanceOf(
      IdentifierError,
    );
  });
});
