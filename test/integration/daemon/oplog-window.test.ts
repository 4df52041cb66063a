// Issue 11 must-show 3: a backfill that outlasts the oplog window loses no change. An in-process archiver
// whose change source refuses to start at a cluster time older than WINDOW_S (as MongoDB does once the
// oplog moved past it: ChangeStreamHistoryLost, 286) and whose backfill appends are slowed so that the copy
// takes longer than that window. The stream starts with the backfill, at its snapshot, so it is never
// asked for history the window no longer has.
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { MongoClient, type Collection, type Document } from 'mongodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startArchiver } from '../../../src/app/archiver.js';
import { type BigQueryClients } from '../../../src/bigquery/client.js';
import { createLogger } from '../../../src/observability/logger.js';
import { emulatorClients } from '../support/bigquery-clients.js';
import {
  inProcessConfig,
  SETTINGS_COLLECTION,
  viewMatchesCollection,
  waitForState,
  type Item,
} from '../support/daemon.js';
import { shortOplog, slowBackfill, type ShortOplogLog } from './short-oplog.js';

const suffix = randomBytes(3).toString('hex');
const DATASET = `window_${suffix}`;
const SETTINGS_DB = `window_settings_${suffix}`;
const DB = `window_src_${suffix}`;
/** The resnapshot test's own settings: an archiver started on the first test's would run its mapping too. */
const RESNAP_SETTINGS_DB = `window_resnap_${suffix}`;
const WINDOW_S = 4;
const SEEDED = 3_000;
/**
 * Per backfill append: the copy of SEEDED documents takes well over WINDOW_S even with every request
 * overlapping (the ranges, the chunks of a range and the requests of a chunk all go out together).
 */
const APPEND_DELAY_MS = 6_000;

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

/**
 * Updates and deletes of the seeded documents and inserts of new ones with negative ids, until `stop`: the
 * copy (reading upwards from the lowest id) has passed the new ones, so they reach the views through the
 * change stream only, and the copy's end does not keep moving (inserts at the top would have the copy
 * chase them at the rate they come).
 */
async function behindTheCopy(items: Collection<Item>, stop: AbortSignal): Promise<number> {
  let ops = 0;
  while (!stop.aborted) {
    const r = Math.random();
    const id = Math.floor(Math.random() * SEEDED);
    if (r < 0.4) await items.insertOne({ _id: -1 - ops, n: ops, label: 'inserted' });
    else if (r < 0.8)
      await items.updateOne({ _id: id }, { $set: { label: `updated-${ops}` }, $inc: { n: 1 } });
    else await items.deleteOne({ _id: id });
    ops++;
    await sleep(20);
  }
  return ops;
}

describe('a backfill longer than the oplog window', () => {
  it('issue 11 must-show 3: changes made during the copy are all in the views, with no lost history and no new snapshot', async () => {
    const items = mongo.db(DB).collection<Item>('items');
    await items.insertMany(Array.from({ length: SEEDED }, (_, i) => ({ _id: i, n: i, label: 'seed' })));
    const settings = mongo.db(SETTINGS_DB).collection<{ _id: string } & Document>(SETTINGS_COLLECTION);
    await settings.insertOne({
      _id: 'items',
      mongo_database: DB,
      mongo_collection: 'items',
      bigquery_table: 'items',
      backfill_full_collection: true,
      // A lost history would be a failure, not a silent new copy.
      on_history_lost: 'fail',
    });
    const log: ShortOplogLog = { opens: [] };
    const controller = new AbortController();
    const archiver = await startArchiver(
      inProcessConfig(DATASET, SETTINGS_DB, 'insert-all'),
      createLogger({ level: (process.env.MBA_TEST_LOG as 'info' | undefined) ?? 'silent' }),
      controller.signal,
      { decorateWriter: slowBackfill(APPEND_DELAY_MS), decorateChangeSource: shortOplog(WINDOW_S, log) },
    );
    try {
      const copyStarted = Date.now();
      await waitForState(mongo, SETTINGS_DB, 'items', ['backfilling'], 60_000);
      const stop = new AbortController();
      const workload = behindTheCopy(items, stop.signal);
      await waitForState(mongo, SETTINGS_DB, 'items', ['streaming', 'failed'], 120_000);
      const copySeconds = (Date.now() - copyStarted) / 1_000;
      // A little more after the copy, so the stream carries changes of both phases.
      await sleep(1_000);
      stop.abort();
      const ops = await workload;
      expect(ops).toBeGreaterThan(50);
      // The scenario did happen: the copy outlasted the window.
      expect(copySeconds).toBeGreaterThan(WINDOW_S);

      // No open was refused (the stream never asked for history older than the window), no failure.
      expect(log.opens.filter((o) => o.refused)).toEqual([]);
      const doc = await settings.findOne({ _id: 'items' });
      expect(doc?.lastFailure).toBeUndefined();
      expect((doc?.status as Document | undefined)?.state).toBe('streaming');
      const { rows, distinct } = await viewMatchesCollection(
        {
          mongo,
          clients,
          db: DB,
          collection: 'items',
          dataset: DATASET,
          table: 'items',
          fields: ['n', 'label'],
        },
        120_000,
      );
      expect(rows).toBe(distinct);
      // One snapshot (no new copy after a lost history): every backfill row carries the same cluster time.
      const [snapshots] = await clients.bigquery.query({
        query: `SELECT COUNT(DISTINCT _cluster_time) AS n FROM \`${clients.projectId}.${DATASET}.items\` WHERE operationType = 'backfill'`,
      });
      expect(Number((snapshots as Document[])[0]?.n)).toBe(1);
    } finally {
      controller.abort();
      await archiver.done;
    }
  }, 300_000);

  it('issue 11: on_history_lost: resnapshot restarts the copy and the stream from a new snapshot, and the views converge', async () => {
    const items = mongo.db(DB).collection<Item>('again');
    await items.insertMany(Array.from({ length: 500 }, (_, i) => ({ _id: i, n: i, label: 'seed' })));
    const settings = mongo.db(RESNAP_SETTINGS_DB).collection<{ _id: string } & Document>(SETTINGS_COLLECTION);
    await settings.insertOne({
      _id: 'again',
      mongo_database: DB,
      mongo_collection: 'again',
      bigquery_table: 'again',
      backfill_full_collection: true,
      on_history_lost: 'resnapshot',
    });
    const log: ShortOplogLog = { opens: [] };
    const decorateChangeSource = shortOplog(WINDOW_S, log);
    const config = inProcessConfig(DATASET, RESNAP_SETTINGS_DB, 'insert-all');
    const start = (signal: AbortSignal) =>
      startArchiver(
        config,
        createLogger({ level: (process.env.MBA_TEST_LOG as 'info' | undefined) ?? 'silent' }),
        signal,
        { decorateChangeSource },
      );
    const first = new AbortController();
    const running = await start(first.signal);
    try {
      await waitForState(mongo, RESNAP_SETTINGS_DB, 'again', ['streaming'], 60_000);
      await items.updateOne({ _id: 1 }, { $set: { label: 'streamed' } });
      await sleep(2_000);
    } finally {
      first.abort();
      await running.done;
    }
    // Down longer than the window, with changes meanwhile: the saved position has left the oplog.
    await items.updateOne({ _id: 2 }, { $set: { label: 'while-down' } });
    // (Not a delete: a document deleted during the gap is in no snapshot, so nothing tells the views it went.)
    await items.insertOne({ _id: 1_000, n: 1_000, label: 'while-down' });
    await sleep((WINDOW_S + 1) * 1_000);
    const second = new AbortController();
    const restarted = await start(second.signal);
    try {
      const { rows, distinct } = await viewMatchesCollection(
        {
          mongo,
          clients,
          db: DB,
          collection: 'again',
          dataset: DATASET,
          table: 'again',
          fields: ['n', 'label'],
        },
        120_000,
      );
      expect(rows).toBe(distinct);
      // The resume was refused once, and both roles started again from a new snapshot.
      expect(log.opens.filter((o) => o.refused).map((o) => o.kind)).toEqual(['resumeAfter']);
      expect(log.opens.at(-1)).toMatchObject({ kind: 'startAt', refused: false });
      const [snapshots] = await clients.bigquery.query({
        query: `SELECT COUNT(DISTINCT _cluster_time) AS n FROM \`${clients.projectId}.${DATASET}.again\` WHERE operationType = 'backfill'`,
      });
      expect(Number((snapshots as Document[])[0]?.n)).toBe(2);
      const doc = await settings.findOne({ _id: 'again' });
      expect(doc?.lastFailure).toBeUndefined();
    } finally {
      second.abort();
      await restarted.done;
    }
  }, 300_000);
});
