import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { MongoClient, type Document } from 'mongodb';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { startArchiver, type RunningArchiver } from '../../../src/app/archiver.js';
import { type BigQueryClients } from '../../../src/bigquery/client.js';
import { EXIT, reportFatal } from '../../../src/cli/common.js';
import { loadBootstrapConfig, type BootstrapConfig } from '../../../src/config/bootstrap.js';
import { MAPPING_STATES } from '../../../src/core/ports.js';
import { createLogger, type Logger } from '../../../src/observability/logger.js';
import { METRIC_NAMES } from '../../../src/observability/metrics.js';
import { parsePrometheusText, sampleSum, sampleValue, type Sample } from '../../support/prometheus-text.js';
import { bigQueryTestEnv } from '../support/bigquery.js';
import { emulatorClients } from '../support/bigquery-clients.js';
import { SETTINGS_COLLECTION, viewMatchesCollection } from '../support/daemon.js';

const suffix = randomBytes(3).toString('hex');
const DATASET = `metrics_${suffix}`;
const SETTINGS_DB = `archiver_metrics_${suffix}`;
const DB = `metricsdb_${suffix}`;
/** A table name taken by a view: the mapping archiving into it stops with a fatal error. */
const BLOCKED_TABLE = 'blocked';
/**
 * A secret in the connection string that the peer lets through (it speaks no TLS, so the key password is
 * never used); the peer refuses authentication, so a URI password can only be shown on the failure path.
 */
const TLS_KEY_PASSWORD = `tls-key-pw-${suffix}`;

let mongo: MongoClient;
let clients: BigQueryClients;

beforeAll(async () => {
  mongo = new MongoClient(process.env.MBA_TEST_MONGODB_URI ?? '');
  await mongo.connect();
  clients = await emulatorClients();
  await clients.bigquery.createDataset(DATASET);
  await clients.bigquery.query({
    query: `CREATE VIEW \`${clients.projectId}.${DATASET}.${BLOCKED_TABLE}\` AS SELECT 1 AS x`,
  });
});

afterAll(async () => {
  await mongo.close();
  await clients.close();
});

function configFor(settingsDb: string, mongoUri: string): BootstrapConfig {
  const bq = bigQueryTestEnv();
  return loadBootstrapConfig({
    path: '/nonexistent/config.json',
    env: {
      MONGO_CLIENT: mongoUri,
      BIGQUERY_PROJECT: bq.projectId,
      BIGQUERY_DATASET: DATASET,
      SETTINGS_DATABASE: settingsDb,
      SETTINGS_POLL_INTERVAL_MS: '300',
      BIGQUERY_EMULATOR_ENDPOINT: bq.apiEndpoint,
      BIGQUERY_EMULATOR_GRPC: `${bq.grpcHost}:${bq.grpcPort}`,
      BIGQUERY_EMULATOR_KIND: bq.peer,
      // insertAll, the legacy writer, end to end here; the crash and outage tests use Storage Write.
      BIGQUERY_WRITER: 'insert-all',
      METRICS_PORT: '0',
    },
  });
}

function peerUri(): string {
  const uri = process.env.MBA_TEST_MONGODB_URI ?? '';
  return uri.includes('?') ? uri : `${uri.replace(/\/?$/, '/')}?`;
}

async function start(
  config: BootstrapConfig,
  logger: Logger,
): Promise<{ archiver: RunningArchiver; stop: () => Promise<void> }> {
  const controller = new AbortController();
  const archiver = await startArchiver(config, logger, controller.signal);
  return {
    archiver,
    stop: async () => {
      controller.abort();
      await archiver.done;
    },
  };
}

interface ReadyAnswer {
  readonly status: number;
  readonly ready: boolean;
  readonly detail: Readonly<Record<string, string>>;
}

async function readyz(port: number): Promise<ReadyAnswer> {
  const response = await fetch(`http://127.0.0.1:${port}/readyz`);
  const body = (await response.json()) as { ready: boolean; detail: Record<string, string> };
  return { status: response.status, ...body };
}

async function scrape(port: number): Promise<Sample[]> {
  const response = await fetch(`http://127.0.0.1:${port}/metrics`);
  expect(response.status).toBe(200);
  return parsePrometheusText(await response.text());
}

/** Polls `/readyz` every few milliseconds until `done` says so, returning every answer seen. */
async function readyzUntil(
  port: number,
  done: (answer: ReadyAnswer) => boolean,
  timeoutMs = 60_000,
): Promise<ReadyAnswer[]> {
  const answers: ReadyAnswer[] = [];
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const answer = await readyz(port);
    answers.push(answer);
    if (done(answer)) return answers;
    if (Date.now() > deadline) {
      throw new Error(`/readyz never got there; last answers: ${JSON.stringify(answers.slice(-3))}`);
    }
    await sleep(10);
  }
}

/** Polls `/metrics` until `done` holds for the samples, returning them. */
async function scrapeUntil(
  port: number,
  done: (samples: readonly Sample[]) => boolean,
  timeoutMs = 60_000,
): Promise<Sample[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const samples = await scrape(port);
    if (done(samples) || Date.now() > deadline) return samples;
    await sleep(100);
  }
}

describe('metrics and health endpoints of the running archiver', () => {
  it('answers /readyz 503 until every mapping runs (a failed one does not hold it back) and counts exactly the work done on /metrics', async () => {
    const BACKFILLED = 300;
    const INSERTS = 40;
    const UPDATES = 25;
    const DELETES = 15;
    const orders = mongo.db(DB).collection<{ _id: number; n: number; label: string }>('orders');
    await orders.insertMany(Array.from({ length: BACKFILLED }, (_, i) => ({ _id: i, n: i, label: 'seed' })));
    await mongo
      .db(SETTINGS_DB)
      .collection<{ _id: string } & Document>(SETTINGS_COLLECTION)
      .insertMany([
        {
          _id: 'orders',
          mongo_database: DB,
          mongo_collection: 'orders',
          bigquery_table: 'orders',
          backfill_full_collection: true,
        },
        {
          _id: 'blocked',
          mongo_database: DB,
          mongo_collection: 'blocked',
          bigquery_table: BLOCKED_TABLE,
        },
      ]);
    const run = await start(configFor(SETTINGS_DB, peerUri()), createLogger({ level: 'silent' }));
    try {
      const port = run.archiver.metricsPort;
      expect((await fetch(`http://127.0.0.1:${port}/healthz`)).status).toBe(200);

      // Readiness: not before the settings were read and no mapping is starting any more.
      const answers = await readyzUntil(port, (a) => a.status === 200);
      const first = answers[0];
      expect(first?.status).toBe(503);
      for (const answer of answers.slice(0, -1)) {
        expect(answer).toMatchObject({ status: 503, ready: false });
        // Either the settings were not read yet, or a mapping is still starting.
        const states = Object.values(answer.detail);
        expect(states.length === 0 || states.some((s) => s === 'starting' || s === 'retrying')).toBe(true);
      }
      const ready = answers.at(-1);
      expect(ready).toMatchObject({ status: 200, ready: true });
      expect(['backfilling', 'streaming']).toContain(ready?.detail.orders);
      expect(ready?.detail.blocked).toBe('failed');
      await readyzUntil(port, (a) => a.detail.orders === 'streaming');

      // A known workload once the stream runs: every change lands exactly once.
      await orders.insertMany(
        Array.from({ length: INSERTS }, (_, i) => ({ _id: 10_000 + i, n: i, label: 'new' })),
      );
      for (let i = 0; i < UPDATES; i++) {
        await orders.updateOne({ _id: i }, { $set: { label: 'updated' }, $inc: { n: 1_000 } });
      }
      await orders.deleteMany({ _id: { $gte: UPDATES, $lt: UPDATES + DELETES } });
      const lastWriteAt = Date.now();
      await viewMatchesCollection({
        mongo,
        clients,
        db: DB,
        collection: 'orders',
        dataset: DATASET,
        table: 'orders',
        fields: ['n', 'label'],
      });

      const orderRows = BACKFILLED + INSERTS + UPDATES + DELETES;
      const of = { mapping: 'orders' };
      // The view can show rows a moment before the archiver has its acknowledgement, and the checkpoint
      // follows the acknowledgement: wait for a checkpoint saved after the last change.
      const samples = await scrapeUntil(port, (s) => {
        const age = sampleValue(s, METRIC_NAMES.checkpointAge, of);
        return (
          (sampleValue(s, METRIC_NAMES.rowsWritten, of) ?? 0) >= orderRows &&
          age !== undefined &&
          age <= (Date.now() - lastWriteAt) / 1_000
        );
      });
      const scrapedAt = Date.now();
      const value = (name: string, labels: Record<string, string> = {}) =>
        sampleValue(samples, name, { ...of, ...labels });

      // A restart of the mapping replays from its checkpoint (at-least-once); without one, counts are exact.
      const restarts = sampleSum(samples, METRIC_NAMES.errors, of);
      const exactly = (actual: number | undefined, expected: number) => {
        if (restarts === 0) expect(actual).toBe(expected);
        else expect(actual).toBeGreaterThanOrEqual(expected);
      };
      exactly(value(METRIC_NAMES.changeEvents, { operation: 'insert' }), INSERTS);
      exactly(value(METRIC_NAMES.changeEvents, { operation: 'update' }), UPDATES);
      exactly(value(METRIC_NAMES.changeEvents, { operation: 'delete' }), DELETES);
      exactly(sampleSum(samples, METRIC_NAMES.changeEvents, of), INSERTS + UPDATES + DELETES);
      const rows = value(METRIC_NAMES.rowsWritten) ?? 0;
      exactly(rows, orderRows);
      expect(value(METRIC_NAMES.deadLetteredRows)).toBe(0);
      expect(value(METRIC_NAMES.lookupMisses)).toBe(0);

      const bytes = value(METRIC_NAMES.bytesWritten) ?? 0;
      // Every history row carries at least its ids, sequence, times and operation type.
      expect(bytes).toBeGreaterThan(rows * 100);
      const batches = value(METRIC_NAMES.batches) ?? 0;
      expect(batches).toBeGreaterThan(0);
      expect(batches).toBeLessThanOrEqual(rows);
      expect(value(`${METRIC_NAMES.batchDuration}_count`)).toBe(batches);
      expect(value(`${METRIC_NAMES.batchDuration}_bucket`, { le: '+Inf' })).toBe(batches);
      expect(value(`${METRIC_NAMES.batchDuration}_sum`)).toBeGreaterThan(0);

      expect(value(METRIC_NAMES.backfillDocumentsCopied)).toBe(BACKFILLED);
      expect(value(METRIC_NAMES.backfillDocumentsEstimated)).toBeCloseTo(BACKFILLED, -1);

      // Lag: now minus the cluster time (whole seconds) of the last checkpointed change, which is the last
      // change of the workload or a later idle position.
      const sinceLastWrite = (scrapedAt - lastWriteAt) / 1_000;
      const lag = value(METRIC_NAMES.replicationLag);
      expect(lag).toBeGreaterThanOrEqual(0);
      expect(lag).toBeLessThanOrEqual(sinceLastWrite + 3);
      const age = value(METRIC_NAMES.checkpointAge);
      expect(age).toBeGreaterThanOrEqual(0);
      expect(age).toBeLessThanOrEqual(sinceLastWrite);

      for (const state of MAPPING_STATES) {
        expect(value(METRIC_NAMES.mappingState, { state })).toBe(state === 'streaming' ? 1 : 0);
      }
      const blocked = { mapping: 'blocked' };
      expect(sampleValue(samples, METRIC_NAMES.mappingState, { ...blocked, state: 'failed' })).toBe(1);
      expect(sampleValue(samples, METRIC_NAMES.errors, { ...blocked, class: 'fatal' })).toBe(1);
      expect(sampleValue(samples, METRIC_NAMES.rowsWritten, blocked)).toBe(0);
      // Nothing of a failed mapping's lag: it never checkpointed.
      expect(sampleValue(samples, METRIC_NAMES.replicationLag, blocked)).toBeUndefined();

      // Removing a settings document drops every series of its mapping.
      await mongo
        .db(SETTINGS_DB)
        .collection<{ _id: string } & Document>(SETTINGS_COLLECTION)
        .deleteOne({ _id: 'blocked' });
      const after = await scrapeUntil(port, (s) => !s.some((x) => x.labels.mapping === 'blocked'), 10_000);
      expect(after.filter((s) => s.labels.mapping === 'blocked')).toEqual([]);
      expect(sampleValue(after, METRIC_NAMES.rowsWritten, of)).toBe(rows);
    } finally {
      await run.stop();
    }
  }, 180_000);

  it('logs JSON lines with the mapping context and no secret: connection-string options, passwords, key material', async () => {
    const settingsDb = `${SETTINGS_DB}_logs`;
    const notes = mongo.db(DB).collection<{ _id: number } & Document>('notes');
    // User data can hold secrets too: a dry run logs example rows, whose secret-named fields are redacted.
    await notes.insertMany([
      { _id: 1, title: 'a', password: 'user-password-in-a-document', apiKey: 'user-api-key-in-a-document' },
    ]);
    await mongo
      .db(settingsDb)
      .collection<{ _id: string } & Document>(SETTINGS_COLLECTION)
      .insertMany([
        {
          _id: 'notes',
          mongo_database: DB,
          mongo_collection: 'notes',
          bigquery_table: 'notes',
          dryrun: true,
          backfill_full_collection: true,
        },
        { _id: 'blocked', mongo_database: DB, mongo_collection: 'x', bigquery_table: BLOCKED_TABLE },
      ]);
    const raw: string[] = [];
    const logger = createLogger({
      level: 'debug',
      destination: { write: (line: string) => void raw.push(line) },
    });
    const uri = `${peerUri()}&tlsCertificateKeyFilePassword=${TLS_KEY_PASSWORD}`;
    const run = await start(configFor(settingsDb, uri), logger);
    try {
      await readyzUntil(
        run.archiver.metricsPort,
        (a) => a.detail.notes === 'dryrun' && a.detail.blocked === 'failed',
      );
      // A dry run is `dryrun` from its start, its copy included: the copy's example rows come a moment later.
      await vi.waitFor(
        () => {
          expect(raw.some((line) => line.includes('dry run: would write rows'))).toBe(true);
        },
        { timeout: 30_000, interval: 100 },
      );
    } finally {
      await run.stop();
    }
    // The peer accepts no credentials: a URI password only ever reaches the failure path.
    const withPassword = uri.replace('mongodb://', `mongodb://archiver:uri-password-${suffix}@`);
    const failure: unknown = await startArchiver(
      configFor(settingsDb, withPassword),
      logger,
      new AbortController().signal,
    ).then(
      () => new Error('startArchiver should have failed'),
      (error: unknown) => error,
    );
    const stderr: string[] = [];
    const spy = vi.spyOn(console, 'error').mockImplementation((line: string) => stderr.push(line));
    try {
      // What the CLI prints before exiting with 1.
      expect(reportFatal(failure)).toBe(EXIT.failure);
    } finally {
      spy.mockRestore();
    }
    expect(stderr).toHaveLength(1);

    const output = raw.join('') + stderr.join('\n');
    for (const secret of [
      TLS_KEY_PASSWORD,
      `uri-password-${suffix}`,
      'user-password-in-a-document',
      'user-api-key-in-a-document',
    ]) {
      expect(output).not.toContain(secret);
    }
    const lines = raw.map((line) => JSON.parse(line) as Record<string, unknown>);
    expect(lines.find((l) => l.msg === 'connected to MongoDB')).toMatchObject({
      level: 'info',
      mongo: expect.stringContaining('tlsCertificateKeyFilePassword=***') as unknown,
    });
    expect(lines.find((l) => l.msg === 'dry run: would write rows')).toMatchObject({
      mapping: 'notes',
      database: DB,
      collection: 'notes',
      table: 'notes',
      example: { title: 'a', password: '[REDACTED]' },
    });
    // Issue 13: the failure is under `err`, as docs/operations.md says, with what an operator needs.
    const failed = lines.find((l) => l.msg === 'mapping failed');
    expect(failed).toMatchObject({
      level: 'error',
      mapping: 'blocked',
      err: {
        type: 'BigQueryError',
        message: expect.stringContaining('is a VIEW, not a table') as unknown,
        stack: expect.stringMatching(/^BigQueryError: .*is a VIEW, not a table\n\s+at /) as unknown,
        code: 'BIGQUERY_FAILED',
        disposition: 'fatal',
      },
    });
    expect(failed).not.toHaveProperty('error');
  }, 120_000);
});
