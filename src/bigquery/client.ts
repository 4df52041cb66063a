import { BigQuery } from '@google-cloud/bigquery';
import { managedwriter } from '@google-cloud/bigquery-storage';
import { credentials } from '@grpc/grpc-js';
import { GoogleAuth, OAuth2Client, type AuthClient } from 'google-auth-library';
import { ConfigError } from '../errors.js';
import { assertProjectId } from '../schema/identifiers.js';

const BIGQUERY_SCOPE = 'https://www.googleapis.com/auth/bigquery';
const EMULATOR_HOSTS = new Set(['127.0.0.1', 'localhost', '::1', '[::1]']);

/** Where BigQuery is: Google's endpoints with credentials, or a local emulator. */
export type BigQueryConnection =
  | {
      readonly kind: 'google';
      readonly projectId: string;
      /** Service-account key file; without it, Application Default Credentials. */
      readonly keyFilename?: string;
    }
  | {
      readonly kind: 'emulator';
      readonly projectId: string;
      /** REST base, `http://127.0.0.1:PORT`. */
      readonly apiEndpoint: string;
      readonly grpcHost: string;
      readonly grpcPort: number;
    };

export interface BigQueryClients {
  readonly projectId: string;
  readonly bigquery: BigQuery;
  readonly writerClient: managedwriter.WriterClient;
  readonly emulator: boolean;
  close(): Promise<void>;
}

/**
 * google-gax pins its own google-auth-library, whose classes TypeScript sees as different from ours although
 * they behave alike at run time; this is the one place that bridges them.
 */
type GaxAuthClient = NonNullable<
  NonNullable<ConstructorParameters<typeof managedwriter.WriterClient>[0]>['authClient']
>;

/** A fixed fake token that never refreshes: an emulator accepts anything, and nothing looks for credentials. */
function emulatorAuthClient(): OAuth2Client {
  const client = new OAuth2Client();
  client.setCredentials({ access_token: 'emulator', expiry_date: Date.now() + 365 * 24 * 3_600_000 });
  return client;
}

/**
 * Builds the REST and Storage Write clients, always with an explicit auth client. For an emulator (which must
 * be on loopback) the auth client holds a fake token and METADATA_SERVER_DETECTION is set to `none`, so
 * nothing ever probes the cloud metadata server. For Google, a key file or Application Default Credentials
 * are resolved once here; on GKE with Workload Identity ADC legitimately asks the metadata server (see
 * metadataServerDetection).
 */
export async function createBigQueryClients(connection: BigQueryConnection): Promise<BigQueryClients> {
  const projectId = assertProjectId(connection.projectId);
  if (process.env.BIGQUERY_EMULATOR_HOST !== undefined) {
    // The client library sends every request to this variable's URL, whatever endpoint we pass.
    throw new ConfigError(
      'BIGQUERY_EMULATOR_HOST is set in the environment, which would redirect every BigQuery request; unset it (point the archiver at an emulator with BIGQUERY_EMULATOR_ENDPOINT)',
    );
  }
  if (connection.kind === 'emulator') {
    process.env.METADATA_SERVER_DETECTION = 'none';
    const url = new URL(connection.apiEndpoint);
    if (!EMULATOR_HOSTS.has(url.hostname) || !EMULATOR_HOSTS.has(connection.grpcHost)) {
      throw new ConfigError(
        `BigQuery emulator endpoints must be on this machine (got ${connection.apiEndpoint} and ${connection.grpcHost})`,
      );
    }
    const authClient = emulatorAuthClient();
    const bigquery = new BigQuery({
      projectId,
      apiEndpoint: connection.apiEndpoint,
      authClient,
      // Retries are ours (classified in one place). Only a request that got no answer at all is repeated
      // here: bqemulator closes its keep-alive connection after an internal error, so the next request
      // on that socket meets "socket hang up" without having reached the server.
      retryOptions: { autoRetry: true, maxRetries: 2, maxRetryDelay: 0.1, retryableErrorFn: () => false },
    });
    const writerClient = new managedwriter.WriterClient({
      projectId,
      servicePath: connection.grpcHost,
      port: connection.grpcPort,
      sslCreds: credentials.createInsecure(),
      // Answers gax's universe-domain check without asking any credentials source.
      universeDomain: 'googleapis.com',
      authClient: authClient as unknown as GaxAuthClient,
    });
    return clients(projectId, bigquery, writerClient, true);
  }
  process.env.METADATA_SERVER_DETECTION ??= metadataServerDetection(connection.keyFilename);
  const auth = new GoogleAuth({
    scopes: [BIGQUERY_SCOPE],
    projectId,
    ...(connection.keyFilename !== undefined && { keyFilename: connection.keyFilename }),
  });
  const authClient: AuthClient = await auth.getClient();
  const bigquery = new BigQuery({ projectId, authClient, autoRetry: false });
  const writerClient = new managedwriter.WriterClient({
    projectId,
    authClient: authClient as unknown as GaxAuthClient,
  });
  return clients(projectId, bigquery, writerClient, false);
}

/**
 * How the Google auth library may look for the cloud metadata server, when the user did not say
 * (METADATA_SERVER_DETECTION): never with a key file (the key is the credentials); otherwise only where the
 * machine looks like Google Cloud (its BIOS, network card or serverless environment, which the library
 * checks without a request: GCE, GKE with Workload Identity, Cloud Run). The library would otherwise ping
 * the metadata server from anywhere and, off Google Cloud, print a stray `MetadataLookupWarning` before the
 * "no credentials" error that says it all. Where Google Cloud hides its BIOS (GKE Sandbox), set
 * METADATA_SERVER_DETECTION=ping-only.
 */
function metadataServerDetection(keyFilename: string | undefined): 'none' | 'bios-only' {
  return keyFilename !== undefined || process.env.GOOGLE_APPLICATION_CREDENTIALS !== undefined
    ? 'none'
    : 'bios-only';
}

function clients(
  projectId: string,
  bigquery: BigQuery,
  writerClient: managedwriter.WriterClient,
  emulator: boolean,
): BigQueryClients {
  return {
    projectId,
    bigquery,
    writerClient,
    emulator,
    close: async () => {
      writerClient.close();
      await Promise.resolve();
    },
  };
}
