// Issue 14: a settings document with `dryrun: true` logs the plan `plan` prints for it, once per
// configuration. The runner is given fakes for its ports and a recording BigQuery transport; the MongoDB
// client is never connected (the run is stopped before it would read the stream's start).
import { MongoClient, type Document } from 'mongodb';
import { afterAll, describe, expect, it } from 'vitest';
import { DIGEST_GAPS_MESSAGE } from '../../../src/app/digest-gaps.js';
import { createMappingRunner, type Sampler } from '../../../src/app/mapping-runner.js';
import { type BigQueryClients } from '../../../src/bigquery/client.js';
import { loadBootstrapConfig } from '../../../src/config/bootstrap.js';
import { parseMappingSettings } from '../../../src/config/settings.js';
import { type SettingsStore } from '../../../src/core/ports.js';
import { type MappingHooks } from '../../../src/core/supervisor.js';
import { createLogger } from '../../../src/observability/logger.js';
import { RecordingBigQuery } from '../bigquery/recording-bigquery.js';

const mongo = new MongoClient('mongodb://127.0.0.1:1/?directConnection=true');
const config = loadBootstrapConfig({
  path: '/nonexistent/config.json',
  env: { MONGO_CLIENT: 'mongodb://127.0.0.1:1', BIGQUERY_PROJECT: 'mba-test', BIGQUERY_DATASET: 'archive' },
});
const unused = () => Promise.reject(new Error('not used by a dry run'));
const store: SettingsStore = {
  ensure: unused,
  list: unused,
  waitForChange: unused,
  reportFailure: unused,
  reportStatus: unused,
  saveColumns: unused,
  fenceOf: unused,
  fencesOf: unused,
};
const hooks: MappingHooks = { report: () => undefined, columnsSaved: () => undefined };
const document = {
  _id: 'ads',
  mongo_database: 'shop',
  mongo_collection: 'ads',
  bigquery_table: 'ads',
  dryrun: true,
  columns: [{ name: 'n', type: 'INTEGER' }],
};

afterAll(async () => {
  await mongo.close();
});

function dryRunner(options: { sample?: Sampler; planTimeoutMs?: number } = {}) {
  const fake = new RecordingBigQuery('mba-test');
  const messages: string[] = [];
  const logger = createLogger({
    level: 'info',
    format: 'json',
    destination: {
      write: (line: string) => void messages.push((JSON.parse(line) as { msg: string }).msg),
      isTTY: false,
    },
  });
  const sample: Sampler =
    options.sample ?? (() => Promise.resolve([{ _id: 1, n: 1, extra: 'x' }] as Document[]));
  const run = createMappingRunner({
    mongo,
    bigquery: { projectId: 'mba-test', bigquery: fake.client } as unknown as BigQueryClients,
    target: 'bigquery',
    config,
    store,
    settingsCollection: mongo.db('archiver').collection('settings'),
    checkpointsCollection: mongo.db('archiver').collection('checkpoints'),
    sample,
    logger,
    ...(options.planTimeoutMs !== undefined && { planTimeoutMs: options.planTimeoutMs }),
  });
  const plans = () => messages.filter((m) => m === 'dry run: the plan of this mapping (what run would do)');
  const gapWarnings = () => messages.filter((m) => m === DIGEST_GAPS_MESSAGE);
  return { run, plans, fake, gapWarnings, messages };
}

/** One run of the dry-run mapping, stopped before it would read MongoDB's current time. */
async function stoppedRun(runner: ReturnType<typeof dryRunner>, settings: Record<string, unknown>) {
  const stop = new AbortController();
  stop.abort();
  await expect(runner.run(parseMappingSettings(settings), stop.signal, hooks)).rejects.toThrow();
}

describe('a dry-run mapping logs its plan (issue 14)', () => {
  it('once per configuration, reading BigQuery only', async () => {
    const runner = dryRunner();
    await stoppedRun(runner, document);
    await stoppedRun(runner, document);
    expect(runner.plans()).toHaveLength(1);
    await stoppedRun(runner, { ...document, bigquery_table: 'ads_v2' });
    expect(runner.plans()).toHaveLength(2);
    expect(runner.fake.requests.every((r) => r.method === 'GET')).toBe(true);
  });

  it('not for a mapping that writes', async () => {
    const runner = dryRunner();
    await expect(
      runner.run(parseMappingSettings({ ...document, dryrun: false }), AbortSignal.abort(), hooks),
    ).rejects.toThrow();
    expect(runner.plans()).toEqual([]);
  });

  it('does not hold up the start of the mapping past its deadline (finding 17)', async () => {
    // A sample that never answers (a MongoDB that accepts the connection and says nothing).
    const runner = dryRunner({ sample: () => new Promise<Document[]>(() => undefined), planTimeoutMs: 50 });
    await stoppedRun(runner, document);
    expect(runner.plans()).toEqual([]);
    expect(runner.messages).toContain('dry run: the plan took too long; the mapping starts without it');
  }, 5_000);
});

describe('a mapping whose repair relies on verification (review finding 1)', () => {
  it('is warned once per configuration that JSON lists inside lists are compared by presence only', async () => {
    const runner = dryRunner();
    await stoppedRun(runner, document);
    expect(runner.gapWarnings()).toEqual([]);
    // Issue 14: `_unmapped`, JSON columns and REPEATED JSON columns are compared by content: no warning.
    await stoppedRun(runner, {
      ...document,
      on_history_lost: 'repair',
      columns: [
        ...document.columns,
        { name: 'doc', type: 'JSON' },
        { name: 'tags', type: 'JSON', mode: 'REPEATED' },
      ],
    });
    expect(runner.gapWarnings()).toEqual([]);
    const repairing = {
      ...document,
      on_history_lost: 'repair',
      columns: [
        ...document.columns,
        {
          name: 'items',
          type: 'RECORD',
          mode: 'REPEATED',
          fields: [{ name: 'tags', type: 'JSON', mode: 'REPEATED' }],
        },
      ],
    };
    await stoppedRun(runner, repairing);
    await stoppedRun(runner, repairing);
    expect(runner.gapWarnings()).toHaveLength(1);
  });
});
