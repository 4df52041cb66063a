import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { MongoClient, ObjectId, type CommandStartedEvent, type Document } from 'mongodb';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { parseMappingSettings } from '../../../src/config/settings.js';
import { INFERRED_COLUMNS_FIELD } from '../../../src/core/settings.js';
import { parseColumnSpecs } from '../../../src/schema/column-spec.js';
import { MongoCheckpointStore } from '../../../src/mongodb/checkpoint-store.js';
import { MongoSettingsStore, type MongoSettingsStoreOptions } from '../../../src/mongodb/settings-store.js';
import { BSON_DECODE_OPTIONS } from '../../../src/base/bson-kind.js';

const uri = process.env.MBA_TEST_MONGODB_URI ?? '';
let client: MongoClient;
const commands: CommandStartedEvent[] = [];
const stores: MongoSettingsStore[] = [];

beforeAll(async () => {
  client = new MongoClient(uri, { ...BSON_DECODE_OPTIONS, monitorCommands: true });
  // Test instrumentation: which commands reached the server.
  client.on('commandStarted', (event) => commands.push(event));
  await client.connect();
});

afterEach(async () => {
  await Promise.all(stores.splice(0).map((store) => store.close()));
});

afterAll(async () => {
  await client.close();
});

const hex = () => randomBytes(4).toString('hex');

function storeFor(options: MongoSettingsStoreOptions, on: MongoClient = client): MongoSettingsStore {
  const store = new MongoSettingsStore(on, options);
  stores.push(store);
  return store;
}

const signal = () => new AbortController().signal;

const mapping = {
  mongo_database: 'bidding',
  mongo_collection: 'ad_cpta',
  bigquery_table: 'ad_cpta_history',
  backfill_full_collection: true,
  dryrun: false,
};

/** Waits until `condition` holds (or fails after `ms`). */
async function until(condition: () => boolean, ms = 5_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await sleep(20);
  }
}

/** Milliseconds `promise` took to settle. */
async function timed(promise: Promise<unknown>): Promise<number> {
  const started = Date.now();
  await promise;
  return Date.now() - started;
}

describe('MongoDB settings store', () => {
  it('creates the settings and checkpoints collections when absent, also when two replicas race to create them', async () => {
    const database = `cfg_${hex()}`;
    const store = storeFor({ database });
    await store.ensure(signal());
    await store.ensure(signal());
    await Promise.all(
      [storeFor({ database, collection: 'raced' }), storeFor({ database, collection: 'raced' })].map((s) =>
        s.ensure(signal()),
      ),
    );
    const names = (await client.db(database).listCollections({}, { nameOnly: true }).toArray()).map(
      (c) => c.name,
    );
    // Both creations succeeded and the collections are there. Counted once each: when two creates race,
    // mongo-java-server may create the collection twice and list it twice (docs/testing.md); real MongoDB
    // refuses the second with NamespaceExists, which `ensure` accepts (unit test).
    expect([...new Set(names)].sort()).toEqual([
      'bigquery_archiver_settings',
      'bigquery_archiver_settings_checkpoints',
      'raced',
      'raced_checkpoints',
    ]);
    expect(await store.list(signal())).toEqual([]);
  });

  it('lists every document, invalid ones included, with its _id as a string, sorted by it', async () => {
    const store = storeFor({ database: `cfg_${hex()}` });
    await store.ensure(signal());
    const objectId = new ObjectId('65a1b2c3d4e5f60718293a4b');
    const documents: Document[] = [
      { _id: objectId, ...mapping },
      { _id: 'orders', ...mapping, mongo_collection: 'orders' },
      // A string id that reads like the ObjectId above: both stay addressable.
      { _id: '65a1b2c3d4e5f60718293a4b', ...mapping, mongo_collection: 'twin' },
      // Invalid: validation is the supervisor's job; the store lists it like the others.
      { _id: 7, mongo_database: 'a.b' },
      { _id: { tenant: 'x' }, ...mapping, bigquery_table: 42 },
    ];
    await store.collection.insertMany(documents);

    const entries = await store.list(signal());
    expect(entries.map((e) => e.id)).toEqual([
      '"65a1b2c3d4e5f60718293a4b"',
      '65a1b2c3d4e5f60718293a4b',
      'orders',
      '{"$numberInt":"7"}',
      '{"tenant":"x"}',
    ]);
    expect(entries.find((e) => e.id === '65a1b2c3d4e5f60718293a4b')?.document).toEqual(documents[0]);
    expect(entries.find((e) => e.id === '{"$numberInt":"7"}')?.document).toEqual(documents[3]);

    // Each id reaches its own document.
    await store.reportFailure('"65a1b2c3d4e5f60718293a4b"', 'twin failed');
    await store.reportFailure(
      '{"$numberInt":"7"}',
      'invalid settings: mongo_database: not a valid MongoDB database name',
    );
    expect(await store.collection.findOne({ _id: '65a1b2c3d4e5f60718293a4b' } as Document)).toMatchObject({
      mongo_collection: 'twin',
      lastFailure: 'twin failed',
    });
    expect(await store.collection.findOne({ _id: objectId })).not.toHaveProperty('lastFailure');
    expect(await store.collection.findOne({ _id: 7 } as Document)).toHaveProperty(
      'lastFailure',
      'invalid settings: mongo_database: not a valid MongoDB database name',
    );
  });

  it('writes status, lastFailure and columns without touching the configuration or the checkpoint', async () => {
    const store = storeFor({ database: `cfg_${hex()}` });
    await store.ensure(signal());
    const { insertedId } = await store.collection.insertOne({ ...mapping });
    const configurationKey = parseMappingSettings({ _id: insertedId, ...mapping }).configurationKey;
    const checkpoints = new MongoCheckpointStore({
      checkpoints: store.checkpoints,
      settings: store.collection,
      settingsId: insertedId,
      scope: 'bidding.ad_cpta -> ds.ad_cpta_history',
    });
    const checkpoint = {
      position: { token: '8265A1B2C3000000012B', clusterTime: { t: 1_705_095_875, i: 1 } },
      backfill: { snapshotStart: { t: 1_705_095_800, i: 3 }, lastId: undefined, copied: 0, done: true },
    };
    await checkpoints.save(checkpoint, signal());
    const [entry] = await store.list(signal());
    const id = entry?.id ?? '';
    expect(id).toBe(insertedId.toHexString());

    await store.reportStatus(id, {
      state: 'retrying',
      message: 'BigQuery said 503',
      eventsRead: 10,
    });
    await store.reportStatus(id, { state: 'streaming', rowsWritten: 5 });
    await store.reportFailure(id, 'BigQuery said 503');
    await store.saveColumns(id, [{ name: '_id', type: 'STRING', mongo_field: '_id', primary_key: true }]);
    const failed = await store.collection.findOne({ _id: insertedId });
    // issue 13: with its time, which `status` shows next to it.
    expect(failed).toMatchObject({ ...mapping, lastFailure: 'BigQuery said 503' });
    expect(failed?.lastFailureAt).toBeInstanceOf(Date);
    await store.reportFailure(id, null);

    const document = await store.collection.findOne({ _id: insertedId });
    expect(document).toMatchObject({
      ...mapping,
      lastChangeId: { _data: '8265A1B2C3000000012B' },
      columns: [{ name: '_id', type: 'STRING', mongo_field: '_id', primary_key: true }],
      status: { state: 'streaming', eventsRead: 10, rowsWritten: 5 },
    });
    expect(document).not.toHaveProperty('lastFailure');
    expect(document).not.toHaveProperty('lastFailureAt');
    // The message belonged to the `retrying` state.
    expect(document?.status).not.toHaveProperty('message');
    expect(document?.status).toHaveProperty('updatedAt', expect.any(Date));
    expect(document?.status).toHaveProperty('lastCheckpointAt', expect.any(Date));
    expect(await checkpoints.load(signal())).toEqual(checkpoint);
    expect(parseMappingSettings(document ?? {}).configurationKey).toBe(configurationKey);
  });

  it('issue 10 item 5: columns saved as inferred read back as inferred (add_columns by default); saved as declared, they drop the fingerprint', async () => {
    const store = storeFor({ database: `cfg_${hex()}` });
    await store.ensure(signal());
    const { insertedId } = await store.collection.insertOne({ ...mapping });
    const id = insertedId.toHexString();
    const columns = parseColumnSpecs([
      { name: '_id', type: 'STRING', mongo_field: '_id', primary_key: true },
      { name: 'n', type: 'INTEGER' },
    ]).columns;
    const reread = async () => {
      const entry = (await store.list(signal())).find((e) => e.id === id);
      return parseMappingSettings(entry?.document ?? {});
    };

    await store.saveColumns(id, columns, undefined, 'inferred');
    expect(await reread()).toMatchObject({
      columns,
      columnsOrigin: 'inferred',
      schemaEvolution: 'add_columns',
    });

    await store.saveColumns(id, columns, undefined, 'declared');
    expect(await store.collection.findOne({ _id: insertedId })).not.toHaveProperty(INFERRED_COLUMNS_FIELD);
    expect(await reread()).toMatchObject({ columnsOrigin: 'declared', schemaEvolution: 'off' });
  });

  it('replaces a status that is not a document, and writes nothing for an unknown id', async () => {
    const store = storeFor({ database: `cfg_${hex()}` });
    await store.ensure(signal());
    const { insertedId } = await store.collection.insertOne({ ...mapping, status: 'written by hand' });
    // A fresh store (another process, say) that never listed: the id is looked up.
    await store.reportStatus(insertedId.toHexString(), { state: 'starting' });
    expect(await store.collection.findOne({ _id: insertedId })).toMatchObject({
      ...mapping,
      status: { state: 'starting', updatedAt: expect.any(Date) as unknown },
    });
    await store.reportFailure('nobody', 'boom');
    await store.reportStatus('nobody', { state: 'failed' });
    expect(await store.collection.countDocuments()).toBe(1);
  });

  it('issue 11: a backfilling status keeps its progress (copied, estimated, rate, ETA) for `status` to show', async () => {
    const store = storeFor({ database: `cfg_${hex()}` });
    await store.ensure(signal());
    const { insertedId } = await store.collection.insertOne({ ...mapping });
    const progress = {
      backfillCopied: 25_000,
      backfillEstimated: 100_000,
      backfillRate: 512.5,
      backfillEtaSeconds: 147,
    };
    await store.reportStatus(insertedId.toHexString(), { state: 'backfilling', ...progress });
    expect(await store.collection.findOne({ _id: insertedId })).toMatchObject({
      status: { state: 'backfilling', ...progress },
    });
  });

  it('wakes up on a configuration change, also one made between two waits', async () => {
    const store = storeFor({ database: `cfg_${hex()}`, pollMs: 30_000 });
    await store.ensure(signal());
    const { insertedId } = await store.collection.insertOne({ ...mapping });
    await store.list(signal());
    const lifetime = new AbortController();
    const waiting = store.waitForChange(lifetime.signal);
    await until(() => store.watching);
    await store.collection.updateOne({ _id: insertedId }, { $set: { bigquery_table: 'renamed' } });
    expect(await timed(waiting)).toBeLessThan(5_000);

    // Not waiting now: the stream stays open, so this change is not missed.
    await store.collection.insertOne({ ...mapping, mongo_collection: 'orders' });
    expect(await timed(store.waitForChange(lifetime.signal))).toBeLessThan(5_000);
    await store.collection.deleteOne({ _id: insertedId });
    expect(await timed(store.waitForChange(lifetime.signal))).toBeLessThan(5_000);
    expect(store.watching).toBe(true);

    const stopped = store.waitForChange(lifetime.signal);
    lifetime.abort(new Error('shutting down'));
    await expect(stopped).rejects.toThrow('shutting down');
    expect(store.watching).toBe(false);
  });

  it('polls only, and never opens a change stream, when the settings live in the config database', async () => {
    // Real MongoDB refuses change streams on `config` (error 73); mongo-java-server would accept one.
    const store = storeFor({
      database: 'config',
      collection: `bigquery_archiver_settings_${hex()}`,
      pollMs: 1_500,
    });
    await store.ensure(signal());
    const { insertedId } = await store.collection.insertOne({ ...mapping });
    await store.list(signal());
    const since = commands.length;
    const waiting = store.waitForChange(signal());
    await sleep(200);
    await store.collection.updateOne({ _id: insertedId }, { $set: { bigquery_table: 'renamed' } });
    expect(await timed(waiting)).toBeGreaterThanOrEqual(1_200);
    expect(store.watching).toBe(false);
    const streams = commands
      .slice(since)
      .filter((c) => c.commandName === 'aggregate' && JSON.stringify(c.command).includes('$changeStream'));
    expect(streams).toEqual([]);
    expect(await store.list(signal())).toMatchObject([{ document: { bigquery_table: 'renamed' } }]);
  });

  it('falls back to polling, without failing, when the change stream cannot be opened', async () => {
    // Nothing listens on port 1: every operation fails once server selection gives up.
    const unreachable = new MongoClient('mongodb://127.0.0.1:1/?directConnection=true', {
      ...BSON_DECODE_OPTIONS,
      serverSelectionTimeoutMS: 200,
    });
    try {
      const store = storeFor({ database: `cfg_${hex()}`, pollMs: 1_000 }, unreachable);
      const first = await timed(store.waitForChange(signal()));
      expect(first).toBeGreaterThanOrEqual(900);
      expect(first).toBeLessThan(3_000);
      expect(store.watching).toBe(false);
      expect(await timed(store.waitForChange(signal()))).toBeGreaterThanOrEqual(900);
      expect(store.watching).toBe(false);
    } finally {
      await unreachable.close();
    }
  });
});
