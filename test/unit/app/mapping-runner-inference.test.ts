// Issue 13: with BigQuery down, every restart of a mapping sampled its collection again. The runner is
// given fakes for its ports; the MongoDB client is never connected (no request reaches it: the run fails
// before anything is read but the sample, which is a fake).
import { MongoClient, type Document } from 'mongodb';
import { afterAll, describe, expect, it } from 'vitest';
import { createMappingRunner, type Sampler } from '../../../src/app/mapping-runner.js';
import { loadBootstrapConfig } from '../../../src/config/bootstrap.js';
import { parseMappingSettings } from '../../../src/config/settings.js';
import { type SettingsStore } from '../../../src/core/ports.js';
import { type MappingHooks } from '../../../src/core/supervisor.js';
import { createLogger } from '../../../src/observability/logger.js';

const mongo = new MongoClient('mongodb://127.0.0.1:1/?directConnection=true');
const config = loadBootstrapConfig({
  path: '/nonexistent/config.json',
  env: { MONGO_CLIENT: 'mongodb://127.0.0.1:1', BIGQUERY_PROJECT: 'my-project', BIGQUERY_DATASET: 'archive' },
});
const unused = () => Promise.reject(new Error('not used before the destination opens'));
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

afterAll(async () => {
  await mongo.close();
});

/**
 * A runner whose BigQuery is missing, so that every run fails right after its schema is prepared (as it
 * would with BigQuery down), and the samples it drew.
 */
function failingRunner(): { run: ReturnType<typeof createMappingRunner>; samples: () => number } {
  let samples = 0;
  const sample: Sampler = () => {
    samples++;
    return Promise.resolve([{ _id: 1, name: 'a' }] as Document[]);
  };
  const run = createMappingRunner({
    mongo,
    bigquery: undefined,
    target: 'bigquery',
    config,
    store,
    settingsCollection: mongo.db('archiver').collection('settings'),
    checkpointsCollection: mongo.db('archiver').collection('checkpoints'),
    sample,
    logger: createLogger({ level: 'silent' }),
  });
  return { run, samples: () => samples };
}

const document = { _id: 'ads', mongo_database: 'shop', mongo_collection: 'ads', bigquery_table: 'ads' };

async function failedRun(
  runner: ReturnType<typeof failingRunner>,
  settings: ReturnType<typeof parseMappingSettings>,
) {
  await expect(runner.run(settings, new AbortController().signal, hooks)).rejects.toThrow(
    /BigQuery clients are missing/,
  );
}

describe('mapping runs without declared columns (issue 13: one sample across retries)', () => {
  it('a run restarted after a failure reuses the columns inferred before: the collection is sampled once', async () => {
    const runner = failingRunner();
    const settings = parseMappingSettings(document);
    for (let attempt = 0; attempt < 3; attempt++) await failedRun(runner, settings);
    expect(runner.samples()).toBe(1);
  });

  it('a changed configuration (a resync, another table...) samples again', async () => {
    const runner = failingRunner();
    await failedRun(runner, parseMappingSettings(document));
    await failedRun(runner, parseMappingSettings({ ...document, resync_requested_at: new Date(0) }));
    expect(runner.samples()).toBe(2);
  });

  it('another mapping samples its own collection', async () => {
    const runner = failingRunner();
    await failedRun(runner, parseMappingSettings(document));
    await failedRun(runner, parseMappingSettings({ ...document, _id: 'other' }));
    expect(runner.samples()).toBe(2);
  });
});

describe('a mapping that left this process (issue 13 review)', () => {
  it('samples again when it comes back: what was kept of it is forgotten once it is removed or handed over', async () => {
    const runner = failingRunner();
    const settings = parseMappingSettings(document);
    await failedRun(runner, settings);
    runner.run.forget('ads');
    await failedRun(runner, settings);
    expect(runner.samples()).toBe(2);
  });
});
