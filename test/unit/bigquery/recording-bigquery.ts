import { BigQuery, type TableMetadata } from '@google-cloud/bigquery';
import { OAuth2Client } from 'google-auth-library';

type RequestOptions = Parameters<BigQuery['request']>[0];
type RequestCallback = Parameters<BigQuery['request']>[1];

/** One REST request the client tried to send. */
export interface RecordedRequest {
  readonly method: string;
  /** Relative to the client's base URL, for example `datasets/ds/tables/t` or `/queries`. */
  readonly uri: string;
  readonly json: unknown;
}

/** An HTTP failure as the client library reports it. */
export function apiError(code: number, reason: string, message = reason): Error {
  return Object.assign(new Error(message), { code, errors: [{ reason, message }] });
}

/**
 * A real `BigQuery` client whose transport is replaced: no request leaves the process. Every request is
 * recorded (the SQL of every statement in `sql`) and answered from an in-memory set of tables, like an
 * emulator that understands tables.get/insert/patch and treats every statement as a success that changes
 * nothing. `failNext` makes the next request whose method and URI match fail with the given error.
 */
export class RecordingBigQuery {
  readonly requests: RecordedRequest[] = [];
  readonly sql: string[] = [];
  /** Rows sent by insertAll, per request, with the table they went to. */
  readonly inserted: { table: string; rows: unknown[] }[] = [];
  /** Tables (and views) by id; tests seed it and read back what patches wrote. */
  readonly tables = new Map<string, TableMetadata>();
  readonly datasets = new Set<string>();
  /** The SQL of every dry-run query job, and the bytes each is answered with. */
  readonly dryRuns: string[] = [];
  dryRunBytes = 0;
  readonly client: BigQuery;
  private readonly failures: { method: string; uri: RegExp; error: Error }[] = [];
  /** How long to hold the answer to a request (ms); none by default. */
  delay: (request: RecordedRequest) => number = () => 0;

  constructor(projectId: string, apiEndpoint = 'http://127.0.0.1:9') {
    const authClient = new OAuth2Client();
    authClient.setCredentials({ access_token: 'unit-test', expiry_date: Date.now() + 3_600_000 });
    this.client = new BigQuery({ projectId, apiEndpoint, authClient, autoRetry: false });
    this.client.request = (options: RequestOptions, callback: RequestCallback) => {
      const { method = 'GET', uri } = options;
      // insertAll bodies are sent as JSON text (`body`), everything else as `json`.
      const json: unknown = options.json ?? options.body;
      this.requests.push({ method, uri, json });
      let answer: { error: Error } | { body: unknown };
      try {
        answer = { body: this.answer(method, uri, json) };
      } catch (error) {
        answer = { error: error instanceof Error ? error : new Error(String(error)) };
      }
      // Answer asynchronously, as a transport would.
      const reply = () => {
        if ('error' in answer) callback(answer.error);
        else callback(null, answer.body);
      };
      const ms = this.delay({ method, uri, json });
      if (ms > 0) setTimeout(reply, ms);
      else setImmediate(reply);
    };
  }

  failNext(method: string, uri: RegExp, error: Error): void {
    this.failures.push({ method, uri, error });
  }

  /**
   * As BigQuery, a view statement changes the tables: `CREATE OR REPLACE VIEW` leaves a view with no labels
   * (a replaced view loses them), `DROP VIEW IF EXISTS` removes a view. Every other statement changes nothing.
   */
  private viewStatement(query: string): void {
    const replaced = /^CREATE OR REPLACE VIEW `[^`]+\.([^`.]+)`/.exec(query)?.[1];
    if (replaced !== undefined)
      this.tables.set(replaced, { type: 'VIEW', etag: `etag-view-${this.sql.length}` });
    const dropped = /^DROP VIEW IF EXISTS `[^`]+\.([^`.]+)`/.exec(query)?.[1];
    if (dropped !== undefined && this.tables.get(dropped)?.type === 'VIEW') this.tables.delete(dropped);
  }

  private answer(method: string, uri: string, json: unknown): unknown {
    const failure = this.failures.findIndex((f) => f.method === method && f.uri.test(uri));
    if (failure >= 0) {
      const [removed] = this.failures.splice(failure, 1);
      if (removed) throw removed.error;
    }
    if (uri === '/jobs' && method === 'POST') {
      const body = json as { configuration?: { dryRun?: boolean; query?: { query?: string } } };
      if (body.configuration?.dryRun !== true)
        throw apiError(400, 'invalid', 'the fake answers dry runs only');
      this.dryRuns.push(body.configuration.query?.query ?? '');
      // BigQuery's answer to a dry-run jobs.insert: no job is kept, the statistics carry the estimate, int64
      // values as decimal strings (https://cloud.google.com/bigquery/docs/reference/rest/v2/Job).
      const bytes = String(this.dryRunBytes);
      return {
        kind: 'bigquery#job',
        configuration: body.configuration,
        jobReference: { projectId: 'fake', location: 'US' },
        status: { state: 'DONE' },
        statistics: {
          creationTime: '1796570000000',
          totalBytesProcessed: bytes,
          query: {
            totalBytesProcessed: bytes,
            totalBytesBilled: '0',
            cacheHit: false,
            statementType: 'SELECT',
          },
        },
      };
    }
    if (uri === '/queries' && method === 'POST') {
      const query = (json as { query: string }).query;
      this.sql.push(query);
      this.viewStatement(query);
      return {
        jobComplete: true,
        jobReference: { projectId: 'fake', jobId: `job_${this.sql.length}`, location: 'US' },
        schema: { fields: [] },
        rows: [],
      };
    }
    const insertAll = /^\/?datasets\/[^/]+\/tables\/([^/]+)\/+insertAll$/.exec(uri);
    if (insertAll && method === 'POST') {
      const table = insertAll[1] ?? '';
      const body = JSON.parse(String(json)) as { rows: { json: Record<string, unknown> }[] };
      // As BigQuery with skipInvalidRows: a row with a field the table lacks is refused (the shape BigQuery
      // answers: reason invalid, the field's path as location, "no such field."), the others land.
      const fields = this.tables.get(table)?.schema?.fields;
      const insertErrors: { index: number; errors: object[] }[] = [];
      const landed: unknown[] = [];
      body.rows.forEach((r, index) => {
        const unknown = fields && unknownField(r.json, fields, '');
        if (unknown === undefined) landed.push(r.json);
        else {
          insertErrors.push({
            index,
            errors: [{ reason: 'invalid', location: unknown, debugInfo: '', message: 'no such field.' }],
          });
        }
      });
      this.inserted.push({ table, rows: landed });
      return {
        kind: 'bigquery#tableDataInsertAllResponse',
        ...(insertErrors.length > 0 && { insertErrors }),
      };
    }
    const match = /^\/?datasets(?:\/([^/]+))?(?:\/tables(?:\/([^/]+))?)?$/.exec(uri);
    if (!match) throw apiError(400, 'invalid', `the fake does not know ${method} ${uri}`);
    const [, dataset, table] = match;
    if (dataset === undefined) {
      const id = (json as { datasetReference: { datasetId: string } }).datasetReference.datasetId;
      if (this.datasets.has(id)) throw apiError(409, 'duplicate', `Already Exists: Dataset ${id}`);
      this.datasets.add(id);
      return json;
    }
    if (uri.endsWith('/tables') && method === 'POST') {
      const body = json as TableMetadata & { tableReference: { tableId: string } };
      const id = body.tableReference.tableId;
      if (this.tables.has(id)) throw apiError(409, 'duplicate', `Already Exists: Table ${id}`);
      const stored: TableMetadata = { ...body, type: 'TABLE', etag: 'etag-1' };
      this.tables.set(id, stored);
      return stored;
    }
    if (table === undefined) {
      if (method !== 'GET') throw apiError(400, 'invalid', `the fake does not know ${method} ${uri}`);
      if (!this.datasets.has(dataset)) throw apiError(404, 'notFound', `Not found: Dataset ${dataset}`);
      return { id: dataset };
    }
    const stored = this.tables.get(table);
    if (!stored) throw apiError(404, 'notFound', `Not found: Table ${table}`);
    if (method === 'GET') return stored;
    if (method === 'PATCH') {
      // As BigQuery: a patch carrying an etag is refused when the table changed since that etag was read.
      const etag = (json as { etag?: string }).etag;
      if (etag !== undefined && etag !== stored.etag) {
        throw apiError(412, 'conditionNotMet', 'Precondition check failed.');
      }
      const patched: TableMetadata = {
        ...stored,
        ...(json as TableMetadata),
        etag: `etag-${String(this.requests.length)}`,
      };
      this.tables.set(table, patched);
      return patched;
    }
    throw apiError(400, 'invalid', `the fake does not know ${method} ${uri}`);
  }
}

type SchemaField = NonNullable<NonNullable<TableMetadata['schema']>['fields']>[number];

/** The path of the first non-NULL value of `row` that no field of `fields` holds (names are case-insensitive). */
function unknownField(
  row: Readonly<Record<string, unknown>>,
  fields: readonly SchemaField[],
  prefix: string,
): string | undefined {
  for (const [key, value] of Object.entries(row)) {
    if (value === null || value === undefined) continue;
    const field = fields.find((f) => f.name?.toLowerCase() === key.toLowerCase());
    if (!field) return `${prefix}${key}`;
    if (field.type !== 'RECORD' && field.type !== 'STRUCT') continue;
    for (const item of Array.isArray(value) ? (value as unknown[]) : [value]) {
      if (typeof item !== 'object' || item === null) continue;
      const inner = unknownField(item as Record<string, unknown>, field.fields ?? [], `${prefix}${key}.`);
      if (inner !== undefined) return inner;
    }
  }
  return undefined;
}
