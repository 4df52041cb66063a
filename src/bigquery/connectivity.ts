import { errorMessage, networkFailureReason } from '../errors.js';
import { type BigQueryConnection } from './client.js';

/** Google's REST endpoint, named in lines about a BigQuery that is not an emulator. */
const GOOGLE_ENDPOINT = 'bigquery.googleapis.com';

/** Where BigQuery is, as an operator would name it: the emulator's endpoint, or Google's. */
export function bigQueryWhere(connection: BigQueryConnection): string {
  return connection.kind === 'emulator' ? connection.apiEndpoint : GOOGLE_ENDPOINT;
}

/** What to check when BigQuery cannot be reached, by where it is. */
function reachFix(connection: BigQueryConnection): string {
  return connection.kind === 'emulator'
    ? 'check BIGQUERY_EMULATOR_ENDPOINT and BIGQUERY_EMULATOR_GRPC and that the emulator is running'
    : 'check that this host reaches bigquery.googleapis.com (network, proxy, firewall)';
}

/** What the Google auth library says when it finds no credentials at all. */
const NO_CREDENTIALS = /could not load the default credentials|unable to detect a project id/i;
/** HTTP statuses and gRPC codes that mean the credentials or the permissions are wrong. */
const HTTP_UNAUTHENTICATED = 401;
const HTTP_FORBIDDEN = 403;
const HTTP_NOT_FOUND = 404;

function statusOf(error: unknown): number | undefined {
  if (typeof error !== 'object' || error === null) return undefined;
  const { code, status } = error as { code?: unknown; status?: unknown };
  if (typeof code === 'number') return code;
  return typeof status === 'number' ? status : undefined;
}

/**
 * One line for an operator about a BigQuery request that failed (`what`: `reach project p`, `create a
 * scratch table in dataset d`): which endpoint, why, and what to check. The texts of the client library are
 * kept after the reason, so nothing it said is lost.
 */
export function describeBigQueryFailure(
  error: unknown,
  connection: BigQueryConnection,
  what: string,
): string {
  const message = errorMessage(error);
  const at = `BigQuery at ${bigQueryWhere(connection)}`;
  if (NO_CREDENTIALS.test(message)) {
    return `${at}: no credentials found: set SERVICE_ACCOUNT_FILE to a service-account key file, or run where Application Default Credentials are available (GOOGLE_APPLICATION_CREDENTIALS, gcloud auth application-default login, Workload Identity)`;
  }
  const reason = networkFailureReason(error);
  if (reason !== undefined) return `${at} unreachable (${reason}): ${reachFix(connection)}`;
  const status = statusOf(error);
  if (status === HTTP_UNAUTHENTICATED) {
    return `${at} refused the credentials (could not ${what}: ${message}): check SERVICE_ACCOUNT_FILE or the Application Default Credentials`;
  }
  if (status === HTTP_FORBIDDEN) {
    return `${at}: permission denied (could not ${what}: ${message}): grant the service account the BigQuery Data Editor role on the dataset and BigQuery Job User on the project`;
  }
  if (status === HTTP_NOT_FOUND) {
    return `${at}: not found (could not ${what}: ${message}): check BIGQUERY_PROJECT and the dataset names`;
  }
  return `${at}: could not ${what}: ${message}`;
}
