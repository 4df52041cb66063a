import { randomBytes } from 'node:crypto';
import { BigQuery, type Table, type TableSchema } from '@google-cloud/bigquery';
import { adapt, managedwriter, type protos } from '@google-cloud/bigquery-storage';
import { credentials } from '@grpc/grpc-js';
import { OAuth2Client } from 'google-auth-library';

type AppendRowsResponse = protos.google.cloud.bigquery.storage.v1.IAppendRowsResponse;

export const BIGQUERY_PEERS = ['goccy-bigquery-emulator', 'bqemulator'] as const;
export type BigQueryPeerName = (typeof BIGQUERY_PEERS)[number];

/** Where the BigQuery emulator started by scripts/peers listens (see scripts/peers/bigquery-env.ts). */
export interface BigQueryTestEnv {
  readonly peer: BigQueryPeerName;
  readonly projectId: string;
  /** REST base, `http://127.0.0.1:PORT` (the client appends `/bigquery/v2`). */
  readonly apiEndpoint: string;
  readonly grpcHost: string;
  readonly grpcPort: number;
}

function requiredEnv(name: string, source: Readonly<Record<string, string | undefined>>): string {
  const value = source[name];
  if (!value) {
    throw new Error(
      `${name} is not set: start the tests with a BigQuery peer (MBA_PEER_KINDS must include bigquery)`,
    );
  }
  return value;
}

function isBigQueryPeerName(name: string): name is BigQueryPeerName {
  return (BIGQUERY_PEERS as readonly string[]).includes(name);
}

/**
 * Reads the `MBA_TEST_BIGQUERY_*` variables from the environment, or from `source` (the `env` of an emulator
 * a test started itself, see scripts/peers/bqemulator.ts `startBqemulator`).
 */
export function bigQueryTestEnv(
  source: Readonly<Record<string, string | undefined>> = process.env,
): BigQueryTestEnv {
  const peer = requiredEnv('MBA_TEST_BIGQUERY_PEER', source);
  if (!isBigQueryPeerName(peer))
    throw new Error(`MBA_TEST_BIGQUERY_PEER=${peer} is not a known BigQuery peer`);
  const apiEndpoint = requiredEnv('MBA_TEST_BIGQUERY_API_ENDPOINT', source);
  const grpcHost = requiredEnv('MBA_TEST_BIGQUERY_GRPC_HOST', source);
  // The tests may only ever talk to this machine.
  if (!/^http:\/\/127\.0\.0\.1:\d+$/.test(apiEndpoint) || grpcHost !== '127.0.0.1') {
    throw new Error(`BigQuery test endpoints must be on 127.0.0.1 (got ${apiEndpoint} and ${grpcHost})`);
  }
  return {
    peer,
    projectId: requiredEnv('MBA_TEST_BIGQUERY_PROJECT', source),
    apiEndpoint,
    grpcHost,
    grpcPort: Number(requiredEnv('MBA_TEST_BIGQUERY_GRPC_PORT', source)),
  };
}

/**
 * An auth client holding a fixed, long-lived fake access token: it never refreshes, so it never calls an
 * OAuth endpoint, and being explicit it stops google-auth-library from looking for credentials (which
 * ends in a probe of the cloud metadata server).
 */
function offlineAuthClient(): OAuth2Client {
  process.env.METADATA_SERVER_DETECTION = 'none';
  const client = new OAuth2Client();
  client.setCredentials({
    access_token: 'mba-test-fake-token',
    expiry_date: Date.now() + 7 * 24 * 3_600_000,
  });
  return client;
}

/**
 * REST client for the emulator. Only requests that got no answer are retried: bqemulator closes the
 * keep-alive connection after an internal error, so the next request on it meets "socket hang up".
 * HTTP errors are not retried; the emulators answer unsupported requests with 500, which the default
 * policy would retry with seconds of backoff.
 */
export function createBigQuery(env: BigQueryTestEnv = bigQueryTestEnv()): BigQuery {
  return new BigQuery({
    projectId: env.projectId,
    apiEndpoint: env.apiEndpoint,
    authClient: offlineAuthClient(),
    // maxRetryDelay is in seconds: the emulator is local, a retry needs no backoff.
    retryOptions: { autoRetry: true, maxRetries: 2, maxRetryDelay: 0.1, retryableErrorFn: () => false },
  });
}

/**
 * google-gax pins its own google-auth-library (10.5.0), whose classes TypeScript treats as different from
 * ours (10.9.1) although they behave alike at run time; this is the one place that bridges them.
 */
type GaxAuthClient = NonNullable<
  NonNullable<ConstructorParameters<typeof managedwriter.WriterClient>[0]>['authClient']
>;

/** Storage Write API client over plaintext gRPC to the emulator; close it after use. */
export function createWriterClient(env: BigQueryTestEnv = bigQueryTestEnv()): managedwriter.WriterClient {
  return new managedwriter.WriterClient({
    projectId: env.projectId,
    servicePath: env.grpcHost,
    port: env.grpcPort,
    // With explicit channel credentials gax adds no call credentials. Its only other use of auth is a
    // universe-domain check, answered by `universeDomain` here, or else by the explicit auth client;
    // never by application-default credentials (which would probe the metadata server).
    sslCreds: credentials.createInsecure(),
    universeDomain: 'googleapis.com',
    authClient: offlineAuthClient() as unknown as GaxAuthClient,
  });
}

/** A dataset id no other test run uses (the emulators are shared by every test file of a run). */
export function uniqueDatasetId(prefix: string): string {
  return `${prefix}_${Date.now().toString(36)}_${randomBytes(3).toString('hex')}`;
}

/** A row as JSONWriter takes it (TIMESTAMP columns as `Date`, RECORD columns as plain objects). */
export type JsonRow = Parameters<managedwriter.JSONWriter['appendRows']>[0][number];

/**
 * Appends rows to the table's default stream (committed on acknowledgement) with a JSONWriter whose
 * descriptor is derived from the table's current schema. Resolves to the server's response, which may
 * carry an `error` or `rowErrors` instead of rejecting.
 */
export async function appendToDefaultStream(
  writerClient: managedwriter.WriterClient,
  table: Table,
  rows: readonly JsonRow[],
): Promise<AppendRowsResponse> {
  const [metadata] = (await table.getMetadata()) as [{ schema: TableSchema }, unknown];
  const storageSchema = adapt.convertBigQuerySchemaToStorageTableSchema(metadata.schema);
  const protoDescriptor = adapt.convertStorageSchemaToProto2Descriptor(storageSchema, 'root');
  const projectId = await table.bigQuery.getProjectId();
  const destinationTable = `projects/${projectId}/datasets/${table.dataset.id ?? ''}/tables/${table.id ?? ''}`;
  // Google's Go client asks for the default stream first; the Node client does not. goccy's emulator
  // creates the default stream only in that call: without it the append fails and (goccy 0.8.1 leaves a
  // lock held on that error path) every later Storage Write call to the same emulator hangs.
  await writerClient.getWriteStream({ streamId: `${destinationTable}/streams/_default` });
  const connection = await writerClient.createStreamConnection({
    streamId: managedwriter.DefaultStream,
    destinationTable,
  });
  // A failed append already rejects its pending write; without a listener the connection's 'error'
  // event would instead be thrown from the event emitter and end the test process.
  connection.onConnectionError(ignoreConnectionError);
  const writer = new managedwriter.JSONWriter({ connection, protoDescriptor });
  try {
    return await writer.appendRows([...rows]).getResult();
  } finally {
    writer.close();
    connection.close();
  }
}

function ignoreConnectionError(): void {
  // Reported through the pending write's rejection (see appendToDefaultStream).
}
