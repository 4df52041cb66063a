import { readFileSync } from 'node:fs';
import { EJSON, Long, ObjectId } from 'bson';
import { describe, expect, it } from 'vitest';
import { MongoServerError, type MongoClient } from 'mongodb';
import { isConfigurationChange, MongoSettingsStore } from '../../../src/mongodb/settings-store.js';
import { settingsIdString } from '../../../src/core/settings.js';

const real = EJSON.parse(
  readFileSync(new URL('../../fixtures/change-events/real-mongodb-7.json', import.meta.url), 'utf8'),
  { relaxed: true },
) as Record<string, Record<string, unknown>>;

/** An update event on the settings collection as MongoDB 7 reports it (no lookup: no fullDocument). */
function update(
  updatedFields: Record<string, unknown>,
  removedFields: string[] = [],
  truncated: string[] = [],
) {
  return {
    _id: { _data: '8265A1B2C4000000012B' },
    operationType: 'update',
    ns: { db: 'archiver', coll: 'bigquery_archiver_settings' },
    documentKey: { _id: new ObjectId('65a1b2c3d4e5f60718293a4b') },
    updateDescription: {
      updatedFields,
      removedFields,
      truncatedArrays: truncated.map((field) => ({ field, newSize: 0 })),
    },
  };
}

describe('settings change stream filter (defect 3: the service restarted on its own writes)', () => {
  it("ignores updates that touch only the service's own fields", () => {
    expect(
      isConfigurationChange(update({ 'status.state': 'streaming', 'status.updatedAt': new Date() })),
    ).toBe(false);
    expect(isConfigurationChange(update({ status: { state: 'starting' } }))).toBe(false);
    expect(
      isConfigurationChange(update({ lastChangeId: { _data: '82' }, 'status.checkpoint.clusterTime': 1 })),
    ).toBe(false);
    expect(isConfigurationChange(update({ lastFailure: 'BigQuery said 503' }))).toBe(false);
    expect(isConfigurationChange(update({}, ['lastFailure', 'status.message']))).toBe(false);
    // issue 13: a failure is written with its time; neither wakes the supervisor as an edit would.
    expect(isConfigurationChange(update({ lastFailure: 'x', lastFailureAt: new Date() }))).toBe(false);
    expect(isConfigurationChange(update({}, ['lastFailure', 'lastFailureAt']))).toBe(false);
    expect(
      isConfigurationChange(update({ 'columns.3': { name: 'n', type: 'INTEGER' } }, [], ['columns'])),
    ).toBe(false);
  });

  it('reports updates that touch a configuration field, even alongside service fields', () => {
    expect(isConfigurationChange(update({ bigquery_table: 'renamed' }))).toBe(true);
    expect(isConfigurationChange(update({ 'status.state': 'x', dryrun: true }))).toBe(true);
    expect(isConfigurationChange(update({}, ['backfill_full_collection']))).toBe(true);
    // A field merely named like a service field is configuration.
    expect(isConfigurationChange(update({ statusline: 1 }))).toBe(true);
    expect(isConfigurationChange(real.update ?? {})).toBe(true);
  });

  it('reports every other event, and updates without an updateDescription (mongo-java-server)', () => {
    for (const key of ['insert', 'replace', 'delete', 'drop', 'rename', 'dropDatabase', 'invalidate']) {
      const event = real[key];
      expect(event?.operationType, key).toBe(key);
      expect(isConfigurationChange(event ?? {}), key).toBe(true);
    }
    expect(isConfigurationChange({ _id: { _data: '6b07' }, operationType: 'update' })).toBe(true);
    expect(
      isConfigurationChange({
        operationType: 'update',
        updateDescription: { updatedFields: {}, removedFields: 'x' },
      }),
    ).toBe(true);
  });
});

describe('settings document ids', () => {
  it('reads ObjectIds as hex, strings as they are, and anything else as canonical Extended JSON', () => {
    expect(settingsIdString(new ObjectId('65a1b2c3d4e5f60718293a4b'))).toBe('65a1b2c3d4e5f60718293a4b');
    expect(settingsIdString('orders')).toBe('orders');
    expect(settingsIdString(7)).toBe('{"$numberInt":"7"}');
    expect(settingsIdString(2.5)).toBe('{"$numberDouble":"2.5"}');
    expect(settingsIdString(Long.fromNumber(7))).toBe('{"$numberLong":"7"}');
    expect(settingsIdString({ tenant: 'x', n: 1 })).toBe('{"tenant":"x","n":{"$numberInt":"1"}}');
  });
});

describe('MongoSettingsStore.ensure', () => {
  /** A client whose database lists no collection and answers createCollection with `outcome`. */
  function clientCreating(outcome: () => Promise<unknown>) {
    const created: string[] = [];
    const db = {
      listCollections: () => ({ toArray: () => Promise.resolve([]) }),
      createCollection: (name: string) => {
        created.push(name);
        return outcome();
      },
      collection: (name: string) => ({ collectionName: name, namespace: `archiver.${name}` }),
    };
    const client = { db: () => db } as unknown as MongoClient;
    return { client, created };
  }

  it('accepts NamespaceExists: another replica created the collections between the check and the create', async () => {
    const { client, created } = clientCreating(() =>
      Promise.reject(
        new MongoServerError({
          code: 48,
          codeName: 'NamespaceExists',
          errmsg: 'Collection archiver.bigquery_archiver_settings already exists.',
        }),
      ),
    );
    await new MongoSettingsStore(client).ensure(AbortSignal.timeout(1_000));
    // issue 10 item 3: the checkpoints collection too, with the same tolerance of the race.
    expect(created).toEqual(['bigquery_archiver_settings', 'bigquery_archiver_settings_checkpoints']);
  });

  it('turns a refused creation into a configuration error that says what to do, and rethrows others', async () => {
    const refused = clientCreating(() =>
      Promise.reject(new MongoServerError({ code: 13, codeName: 'Unauthorized', errmsg: 'not authorized' })),
    );
    await expect(new MongoSettingsStore(refused.client).ensure(AbortSignal.timeout(1_000))).rejects.toThrow(
      /cannot create the settings collection archiver\.bigquery_archiver_settings: not authorized; create it beforehand/,
    );
    const down = clientCreating(() =>
      Promise.reject(
        new MongoServerError({ code: 91, codeName: 'ShutdownInProgress', errmsg: 'shutting down' }),
      ),
    );
    await expect(new MongoSettingsStore(down.client).ensure(AbortSignal.timeout(1_000))).rejects.toThrow(
      'shutting down',
    );
  });
});
