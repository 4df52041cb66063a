// Issue 13: `validate` checks every service side by side, each within --timeout, and names the failing
// service and the fix. Against the real peers (their wire protocols), and against closed loopback ports.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MongoClient } from 'mongodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SCRATCH_TABLE_PREFIX } from '../../../src/app/preflight.js';
import { type BigQueryClients } from '../../../src/bigquery/client.js';
import { EXIT } from '../../../src/cli/common.js';
import { emulatorClients } from '../support/bigquery-clients.js';
import { freePort } from '../../../scripts/peers/process.js';
import { daemonEnv, SETTINGS_COLLECTION } from '../support/daemon.js';

const DATASET = `validate_${randomBytes(4).toString('hex')}`;
const SETTINGS_DB = `validate_${randomBytes(4).toString('hex')}`;
const SOURCE_DB = `validate_src_${randomBytes(4).toString('hex')}`;

let mongo: MongoClient;
let bigquery: BigQueryClients;

interface Outcome {
  readonly code: number | null;
  readonly lines: readonly string[];
  /** Milliseconds from the start of the process to each line, by the line's first word(s). */
  readonly at: (prefix: string) => number;
}

/** `mongo-bigquery-archiver validate --timeout <seconds>` as its own process, with `env` over the peers'. */
async function validate(env: NodeJS.ProcessEnv, timeoutSeconds: number): Promise<Outcome> {
  const started = performance.now();
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', 'src/main.ts', 'validate', '--timeout', String(timeoutSeconds)],
    {
      env: {
        ...process.env,
        ...daemonEnv(DATASET, SETTINGS_DB),
        // No config file: everything from the environment.
        HOME: mkdtempSync(join(tmpdir(), 'mba-validate-home-')),
        ...env,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  const lines: { text: string; ms: number }[] = [];
  let pending = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    pending += chunk;
    const parts = pending.split('\n');
    pending = parts.pop() ?? '';
    for (const text of parts) lines.push({ text, ms: performance.now() - started });
  });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const [code] = (await once(child, 'exit')) as [number | null];
  if (stderr !== '') lines.push({ text: `stderr: ${stderr}`, ms: performance.now() - started });
  return {
    code,
    lines: lines.map((l) => l.text),
    at: (prefix) => lines.find((l) => l.text.startsWith(prefix))?.ms ?? Number.NaN,
  };
}

beforeAll(async () => {
  mongo = new MongoClient(process.env.MBA_TEST_MONGODB_URI ?? '');
  await mongo.connect();
  await mongo
    .db(SETTINGS_DB)
    .collection<{ _id: string }>(SETTINGS_COLLECTION)
    .insertOne({
      _id: 'orders',
      mongo_database: SOURCE_DB,
      mongo_collection: 'orders',
      bigquery_table: 'orders',
    } as { _id: string });
  await mongo.db(SOURCE_DB).collection('orders').insertOne({ n: 1 });
  bigquery = await emulatorClients();
  await bigquery.bigquery.createDataset(DATASET);
});

afterAll(async () => {
  await mongo.db(SETTINGS_DB).dropDatabase();
  await mongo.db(SOURCE_DB).dropDatabase();
  await mongo.close();
  await bigquery.bigquery.dataset(DATASET).delete({ force: true });
  await bigquery.close();
});

describe('validate against the peers (issue 13)', () => {
  it('passes: MongoDB, the settings, a change stream per mapping, BigQuery and the dataset (a scratch table made and dropped)', async () => {
    const { code, lines } = await validate({}, 10);
    expect(lines).toEqual(
      expect.arrayContaining([
        `config: ok, project ${bigquery.projectId}, dataset ${DATASET}, settings in ${SETTINGS_DB}.${SETTINGS_COLLECTION}`,
        expect.stringMatching(/^mongodb: ok, reached 127\.0\.0\.1:\d+$/),
        `settings collection ${SETTINGS_DB}.${SETTINGS_COLLECTION}: ok, 1 settings document`,
        `settings orders: ok, ${SOURCE_DB}.orders -> default dataset.orders`,
        `change stream orders: ok, opened on ${SOURCE_DB}.orders`,
        expect.stringMatching(/^bigquery: ok, reached http:\/\/127\.0\.0\.1:\d+ \(project /),
        expect.stringMatching(
          new RegExp(
            `^dataset ${DATASET}: ok, writable \\(created and dropped the scratch table ${SCRATCH_TABLE_PREFIX}[0-9a-f]{12}\\)$`,
          ),
        ),
        'table orders: ok, columns agree with table orders (or it is not made yet)',
      ]),
    );
    expect(lines.at(-1)).toBe('validate: ok, 8 checks passed');
    expect(code).toBe(EXIT.ok);
    // The scratch table is gone.
    const [tables] = await bigquery.bigquery.dataset(DATASET).getTables();
    expect(tables.map((t) => t.id).filter((id) => id?.startsWith(SCRATCH_TABLE_PREFIX))).toEqual([]);
  }, 60_000);

  it('MONGO_CLIENT on a closed loopback port: fails within the timeout naming MongoDB and the fix; BigQuery still checked', async () => {
    const port = await freePort();
    const { code, lines, at } = await validate(
      { MONGO_CLIENT: `mongodb://archiver:s3cret@127.0.0.1:${String(port)}/?directConnection=true` },
      3,
    );
    expect(lines).toContain(
      `mongodb: failed: MongoDB at 127.0.0.1:${String(port)} unreachable (connection refused): check MONGO_CLIENT and that the server is running and reachable from here`,
    );
    // Refused at once, not after the timeout: the line comes within the timeout of the configuration's.
    expect(at('mongodb:') - at('config:')).toBeLessThan(3_000);
    expect(lines).toEqual(expect.arrayContaining([expect.stringMatching(/^bigquery: ok/)]));
    expect(lines.at(-1)).toBe('validate: failed, 1 of 4 checks failed: mongodb');
    expect(lines.join('\n')).not.toContain('s3cret');
    expect(code).toBe(EXIT.failure);
  }, 60_000);

  it('a missing SERVICE_ACCOUNT_FILE: fails naming the file', async () => {
    const { code, lines } = await validate({ SERVICE_ACCOUNT_FILE: '/nonexistent/mba/key.json' }, 10);
    expect(lines).toContain(
      'key file /nonexistent/mba/key.json: failed: cannot read /nonexistent/mba/key.json (no such file): check SERVICE_ACCOUNT_FILE, that the key is mounted there and readable by this user',
    );
    expect(lines.at(-1)).toBe('validate: failed, 1 of 9 checks failed: key file /nonexistent/mba/key.json');
    expect(code).toBe(EXIT.failure);
  }, 60_000);

  it('the BigQuery endpoint on a closed loopback port: fails naming BigQuery and the fix; the tables are skipped', async () => {
    const port = await freePort();
    const { code, lines } = await validate(
      { BIGQUERY_EMULATOR_ENDPOINT: `http://127.0.0.1:${String(port)}` },
      10,
    );
    expect(lines).toContain(
      `bigquery: failed: BigQuery at http://127.0.0.1:${String(port)} unreachable (connection refused): check BIGQUERY_EMULATOR_ENDPOINT and BIGQUERY_EMULATOR_GRPC and that the emulator is running`,
    );
    expect(lines).toEqual(expect.arrayContaining([expect.stringMatching(/^change stream orders: ok/)]));
    expect(lines.at(-1)).toMatch(/^validate: failed, 1 of \d+ checks failed( \(\d+ skipped\))?: bigquery$/);
    expect(code).toBe(EXIT.failure);
  }, 60_000);
});
