// Issue 12 build item 3: MAX_MAPPINGS_PREPARING bounds the mappings preparing their tables at once, and
// apart from them the mappings copying their collection at once. With a cap of 1, two mappings prepare one
// after the other, copy one after the other, and both end streaming with their views complete; a copy in
// progress does not keep another mapping from preparing and streaming.
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { MongoClient, type Document } from 'mongodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startArchiver } from '../../../src/app/archiver.js';
import { type BigQueryClients } from '../../../src/bigquery/client.js';
import { type WriterDecorator } from '../../../src/bigquery/destination.js';
import { createLogger } from '../../../src/observability/logger.js';
import { parsePrometheusText, sampleValue } from '../../support/prometheus-text.js';
import { emulatorClients } from '../support/bigquery-clients.js';
import {
  inProcessConfig,
  mappingState,
  SETTINGS_COLLECTION,
  viewMatchesCollection,
  waitForState,
  type Item,
} from '../support/daemon.js';

const suffix = randomBytes(3).toString('hex');
const DATASET = `slots_${suffix}`;
const SETTINGS_DB = `archiver_slots_${suffix}`;
const DB = `slotsdb_${suffix}`;
const MAPPINGS = ['first', 'second'] as const;
let mongo: MongoClient;
let clients: BigQueryClients;

beforeAll(async () => {
  mongo = new MongoClient(process.env.MBA_TEST_MONGODB_URI ?? '');
  await mongo.connect();
  clients = await emulatorClients();
});

afterAll(async () => {
  await mongo.close();
  await clients.close();
});

interface LogLine {
  readonly mapping?: string | undefined;
  readonly msg?: string | undefined;
  readonly writer?: string | undefined;
}

/**
 * The most slots held at once for `work`, replayed from the log in the order it was written, and who logged
 * that it waited for one.
 */
function slotUse(
  lines: readonly LogLine[],
  work: string,
): { most: number; took: string[]; waited: string[] } {
  let held = 0;
  let most = 0;
  const took: string[] = [];
  const waited: string[] = [];
  for (const line of lines) {
    if (line.msg === `took a slot to ${work}`) {
      held++;
      most = Math.max(most, held);
      took.push(line.mapping ?? '?');
    } else if (line.msg === `gave back the slot to ${work}`) {
      held--;
    } else if (line.msg?.startsWith(`waiting for a slot to ${work}`)) {
      waited.push(line.mapping ?? '?');
    }
  }
  return { most, took, waited };
}

describe('MAX_MAPPINGS_PREPARING', () => {
  it('issue 12: with a cap of 1, two mappings prepare one after the other and copy one after the other, and both end streaming (their idle write streams closed and opened again for new rows)', async () => {
    for (const name of MAPPINGS) {
      await mongo
        .db(DB)
        .collection<Item>(name)
        .insertMany(Array.from({ length: 300 }, (_, i) => ({ _id: i, n: i, label: 'seed' })));
      await mongo.db(SETTINGS_DB).collection<{ _id: string } & Document>(SETTINGS_COLLECTION).insertOne({
        _id: name,
        mongo_database: DB,
        mongo_collection: name,
        bigquery_table: name,
        backfill_full_collection: true,
      });
    }
    const raw: string[] = [];
    const logger = createLogger({ level: 'debug', destination: { write: (line: string) => raw.push(line) } });
    const controller = new AbortController();
    const archiver = await startArchiver(
      {
        ...inProcessConfig(DATASET, SETTINGS_DB, 'storage-write'),
        MAX_MAPPINGS_PREPARING: 1,
        WRITE_STREAM_IDLE_MS: 1_000,
      },
      logger,
      controller.signal,
    );
    try {
      for (const name of MAPPINGS) {
        await waitForState(mongo, SETTINGS_DB, name, ['streaming'], 90_000);
        await mongo.db(DB).collection<Item>(name).insertOne({ _id: 1_000, n: 1, label: 'streamed' });
      }
      const viewsHold = async (rows: number) => {
        for (const name of MAPPINGS) {
          const view = await viewMatchesCollection({
            mongo,
            clients,
            db: DB,
            collection: name,
            dataset: DATASET,
            table: name,
            fields: ['n', 'label'],
          });
          expect(view.rows).toBe(rows);
        }
      };
      const gauge = async (name: string) => {
        const text = await (await fetch(`http://127.0.0.1:${archiver.metricsPort}/metrics`)).text();
        return sampleValue(parsePrometheusText(text), name, {});
      };
      await viewsHold(301);
      expect(await gauge('mba_mappings_preparing')).toBe(0);
      expect(await gauge('mba_mappings_waiting_to_prepare')).toBe(0);

      // Idle for WRITE_STREAM_IDLE_MS, the write streams close; rows that come later open them again.
      const deadline = Date.now() + 20_000;
      while ((await gauge('mba_storage_write_connections_open')) !== 0 && Date.now() < deadline) {
        await sleep(200);
      }
      expect(await gauge('mba_storage_write_connections_open')).toBe(0);
      for (const name of MAPPINGS) {
        await mongo.db(DB).collection<Item>(name).insertOne({ _id: 1_001, n: 2, label: 'after-idle' });
      }
      await viewsHold(302);
    } finally {
      controller.abort();
      await archiver.done;
    }

    const lines = raw.map((line) => JSON.parse(line) as LogLine);
    // Both wrote through Storage Write connections (the gauge of open connections went to 0 from there).
    const writers = lines.filter((line) => line.msg === 'writer chosen').map((line) => line.writer);
    expect(writers).toEqual(['storage-write', 'storage-write']);
    const prepare = slotUse(lines, 'prepare the tables');
    const copy = slotUse(lines, 'copy the collection');
    expect(prepare.took.sort()).toEqual([...MAPPINGS]);
    expect(copy.took.sort()).toEqual([...MAPPINGS]);
    // One slot of each kind: never two mappings preparing at once, nor two copying at once.
    expect(prepare.most).toBe(1);
    expect(copy.most).toBe(1);
    // The two mappings start together: one of them had to wait, and said so once.
    expect(prepare.waited.length + copy.waited.length).toBeGreaterThanOrEqual(1);
    expect(new Set(prepare.waited).size).toBe(prepare.waited.length);
  }, 180_000);

  it('issue 12 review: with a cap of 1, a copy in progress does not keep another mapping from preparing and streaming', async () => {
    const db = `${DB}_held`;
    const settings = mongo.db(SETTINGS_DB).collection<{ _id: string } & Document>(SETTINGS_COLLECTION);
    await mongo
      .db(db)
      .collection<Item>('copying')
      .insertMany(Array.from({ length: 50 }, (_, i) => ({ _id: i, n: i, label: 'seed' })));
    await settings.insertOne({
      _id: 'held_copying',
      mongo_database: db,
      mongo_collection: 'copying',
      bigquery_table: 'held_copying',
      backfill_full_collection: true,
    });
    // The copy's appends wait until the test lets them go: the copy stays in progress, holding its slot.
    let copyStarted: () => void = () => undefined;
    const started = new Promise<void>((resolve) => {
      copyStarted = resolve;
    });
    let letGo: () => void = () => undefined;
    const released = new Promise<void>((resolve) => {
      letGo = resolve;
    });
    const decorateWriter: WriterDecorator = (writer, table) =>
      table.tableId !== 'held_copying'
        ? writer
        : {
            kind: writer.kind,
            append: async (rows, signal) => {
              copyStarted();
              await released;
              return writer.append(rows, signal);
            },
            encode: (row) => writer.encode(row),
            ...(writer.rowEncoding && { rowEncoding: writer.rowEncoding.bind(writer) }),
            updateSchema: (schema) => writer.updateSchema(schema),
            close: () => writer.close(),
          };
    const controller = new AbortController();
    const archiver = await startArchiver(
      { ...inProcessConfig(DATASET, SETTINGS_DB, 'insert-all'), MAX_MAPPINGS_PREPARING: 1 },
      createLogger({ level: 'silent' }),
      controller.signal,
      { decorateWriter },
    );
    try {
      await started;
      await waitForState(mongo, SETTINGS_DB, 'held_copying', ['backfilling'], 30_000);
      // A mapping added while the copy holds the one copy slot prepares (its own slot) and streams.
      await mongo.db(db).collection<Item>('quick').insertOne({ _id: 0, n: 0, label: 'seed' });
      await settings.insertOne({
        _id: 'held_quick',
        mongo_database: db,
        mongo_collection: 'quick',
        bigquery_table: 'held_quick',
      });
      await waitForState(mongo, SETTINGS_DB, 'held_quick', ['streaming'], 30_000);
      expect(await mappingState(mongo, SETTINGS_DB, 'held_copying')).toBe('backfilling');

      letGo();
      await waitForState(mongo, SETTINGS_DB, 'held_copying', ['streaming'], 60_000);
    } finally {
      letGo();
      controller.abort();
      await archiver.done;
    }
  }, 180_000);
});
