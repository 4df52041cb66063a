import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { Long, MongoClient, Timestamp, type Document } from 'mongodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startArchiver, type RunningArchiver } from '../../../src/app/archiver.js';
import { requestResync } from '../../../src/app/resync.js';
import { type BigQueryClients } from '../../../src/bigquery/client.js';
import { type BootstrapConfig } from '../../../src/config/bootstrap.js';
import { encodeId } from '../../../src/mongodb/checkpoint-store.js';
import { MongoChangeSource } from '../../../src/mongodb/change-source.js';
import { createLogger } from '../../../src/observability/logger.js';
import { docIdString } from '../../../src/transform/values.js';
import { emulatorClients } from '../support/bigquery-clients.js';
import { inProcessConfig } from '../support/daemon.js';

const suffix = randomBytes(3).toString('hex');
const DATASET = `daemon_${suffix}`;
const SETTINGS_DB = `archiver_${suffix}`;
let mongo: MongoClient;
let clients: BigQueryClients;
let config: BootstrapConfig;

beforeAll(async () => {
  mongo = new MongoClient(process.env.MBA_TEST_MONGODB_URI ?? '');
  await mongo.connect();
  clients = await emulatorClients();
  // insertAll, the legacy writer, end to end here; the crash and outage tests use Storage Write.
  config = inProcessConfig(DATASET, SETTINGS_DB, 'insert-all');
});

afterAll(async () => {
  await mongo.close();
  await clients.close();
});

async function start(
  overrides: Partial<BootstrapConfig> = {},
  logLines?: string[],
): Promise<{ archiver: RunningArchiver; stop: () => Promise<void> }> {
  const controller = new AbortController();
  const logger = logLines
    ? createLogger({ level: 'info', destination: { write: (line: string) => logLines.push(line) } })
    : createLogger({ level: process.env.MBA_DEBUG_DAEMON ? 'debug' : 'silent' });
  const archiver = await startArchiver({ ...config, ...overrides }, logger, controller.signal);
  return {
    archiver,
    stop: async () => {
      controller.abort();
      await archiver.done;
    },
  };
}

async function viewRows(table: string): Promise<Document[]> {
  const [rows] = await clients.bigquery.query({
    query: `SELECT _doc_id, n, label FROM \`${clients.projectId}.${DATASET}.${table}_view\``,
  });
  return rows as Document[];
}

/** What the view must hold for the collection: one row per document, with its current values. */
async function expectedRows(db: string, collection: string): Promise<string[]> {
  const docs = await mongo.db(db).collection(collection).find({}).toArray();
  return docs.map((d) => `${docIdString(d._id)}|${String(d.n)}|${String(d.label)}`).sort();
}

async function viewMatches(db: string, collection: string, table: string, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last: string[] = [];
  for (;;) {
    const expected = await expectedRows(db, collection);
    last = (await viewRows(table).catch(() => []))
      .map((r) => `${String(r._doc_id)}|${String(r.n)}|${String(r.label)}`)
      .sort();
    if (JSON.stringify(last) === JSON.stringify(expected)) return;
    if (Date.now() > deadline) {
      expect(last).toEqual(expected);
      return;
    }
    await sleep(300);
  }
}

describe('the archiver daemon against the peers', () => {
  it('backfills during a mixed workload, streams afterwards, and resumes after a graceful restart with no loss or duplicate', async () => {
    const db = `shop_${suffix}`;
    const orders = mongo.db(db).collection<{ _id: number; n: number; label: string }>('orders');
    await orders.insertMany(Array.from({ length: 1_500 }, (_, i) => ({ _id: i, n: i, label: 'seed' })));
    await mongo
      .db(SETTINGS_DB)
      .collection<{ _id: string } & Document>('bigquery_archiver_settings')
      .insertOne({
        _id: 'orders',
        mongo_database: db,
        mongo_collection: 'orders',
        bigquery_table: 'orders',
        backfill_full_collection: true,
      });
    let run = await start();
    // Changes while the backfill copies the collection.
    for (let i = 0; i < 20; i++) {
      await orders.updateOne({ _id: i * 50 }, { $set: { label: 'during-backfill' }, $inc: { n: 1_000 } });
      await orders.insertOne({ _id: 10_000 + i, n: i, label: 'new' });
    }
    await orders.deleteMany({ _id: { $gte: 1_400, $lt: 1_410 } });
    await viewMatches(db, 'orders', 'orders');

    await run.stop();
    // Changes while the daemon is down are picked up from the checkpoint.
    await orders.updateMany({ _id: { $lt: 5 } }, { $set: { label: 'while-down' } });
    await orders.deleteOne({ _id: 10_001 });
    run = await start();
    await orders.insertOne({ _id: 20_000, n: 1, label: 'after-restart' });
    await viewMatches(db, 'orders', 'orders');
    const settings = await mongo
      .db(SETTINGS_DB)
      .collection('bigquery_archiver_settings')
      .findOne({ _id: 'orders' } as Document);
    expect(settings?.columns).toBeDefined();
    expect(settings?.lastChangeId).toBeDefined();
    await run.stop();

    // The views hold no duplicate: one row per document.
    const rows = await viewRows('orders');
    expect(new Set(rows.map((r) => String(r._doc_id))).size).toBe(rows.length);
  }, 180_000);

  it('issue 11 build 6: the stream mapped on worker threads and on the main thread writes the same views, across a restart from one to the other', async () => {
    const db = `threads_${suffix}`;
    const items = mongo.db(db).collection<{ _id: number; n: number; label: string }>('items');
    await items.insertMany(Array.from({ length: 200 }, (_, i) => ({ _id: i, n: i, label: 'seed' })));
    await mongo
      .db(SETTINGS_DB)
      .collection<{ _id: string } & Document>('bigquery_archiver_settings')
      .insertOne({
        _id: 'threads',
        mongo_database: db,
        mongo_collection: 'items',
        bigquery_table: 'threads',
        backfill_full_collection: true,
      });
    const logged: string[] = [];
    let run = await start({ WORKER_THREADS: 2 }, logged);
    for (let i = 0; i < 30; i++) {
      await items.updateOne({ _id: i }, { $set: { label: 'on-workers' }, $inc: { n: 1_000 } });
      await items.insertOne({ _id: 1_000 + i, n: i, label: 'new-on-workers' });
    }
    await items.deleteMany({ _id: { $gte: 190 } });
    await viewMatches(db, 'items', 'threads');
    const lines = logged.map((line) => JSON.parse(line) as Record<string, unknown>);
    expect(lines).toContainEqual(
      expect.objectContaining({
        mapping: 'threads',
        workerThreads: 2,
        msg: expect.stringContaining('decoded, mapped and encoded on the worker threads') as unknown,
      }),
    );
    await run.stop();

    const mainThread: string[] = [];
    run = await start({ WORKER_THREADS: 0 }, mainThread);
    await items.updateMany({ _id: { $lt: 10 } }, { $set: { label: 'on-main-thread' } });
    await items.insertOne({ _id: 5_000, n: 5, label: 'new-on-main-thread' });
    await viewMatches(db, 'items', 'threads');
    expect(
      mainThread.some((line) => line.includes('decoded, mapped and encoded on the worker threads')),
    ).toBe(false);
    await run.stop();
    const rows = await viewRows('threads');
    expect(new Set(rows.map((r) => String(r._doc_id))).size).toBe(rows.length);
  }, 120_000);

  it('runs the valid mappings next to an invalid settings document, and a dry run touches no BigQuery', async () => {
    const db = `misc_${suffix}`;
    await mongo
      .db(db)
      .collection<{ _id: number; n: number; label: string }>('items')
      .insertMany([{ _id: 1, n: 1, label: 'a' }]);
    await mongo
      .db(db)
      .collection<{ _id: number; n: number }>('drafts')
      .insertMany([{ _id: 1, n: 1 }]);
    const settings = mongo
      .db(SETTINGS_DB)
      .collection<{ _id: string } & Document>('bigquery_archiver_settings');
    await settings.insertMany([
      {
        _id: 'items',
        mongo_database: db,
        mongo_collection: 'items',
        bigquery_table: 'items',
        backfill_full_collection: true,
      },
      {
        _id: 'broken',
        mongo_database: db,
        mongo_collection: 'x',
        bigquery_table: 'x',
        columns: [{ name: 'a', type: 'FLOATY' }],
      },
      {
        _id: 'drafts',
        mongo_database: db,
        mongo_collection: 'drafts',
        bigquery_table: 'drafts',
        dryrun: true,
        backfill_full_collection: true,
      },
    ]);
    const run = await start();
    try {
      await viewMatches(db, 'items', 'items');
      const deadline = Date.now() + 30_000;
      let broken: Document | null = null;
      // The dry run's states as readiness shows them: `dryrun` all along, its backfill included.
      const draftStates = new Set<string | undefined>();
      while (Date.now() < deadline) {
        draftStates.add(run.archiver.supervisor.ready().detail.drafts);
        broken = await settings.findOne({ _id: 'broken' });
        const status = broken?.status as Document | undefined;
        if (status?.state === 'invalid' && draftStates.has('dryrun')) break;
        await sleep(50);
      }
      expect(broken?.lastFailure).toBe(
        'invalid settings: columns[0].type: expected one of STRING, BYTES, INTEGER, FLOAT, BOOLEAN, TIMESTAMP, DATE, TIME, DATETIME, RECORD, NUMERIC, BIGNUMERIC, JSON',
      );
      expect(draftStates).toContain('dryrun');
      expect(draftStates).not.toContain('backfilling');
      const [tables] = await clients.bigquery.dataset(DATASET).getTables();
      expect(tables.map((t) => t.id)).not.toContain('drafts');
      const drafts = await settings.findOne({ _id: 'drafts' });
      expect(drafts?.lastChangeId).toBeUndefined();
    } finally {
      await run.stop();
    }
  }, 120_000);

  it('survives its change stream cursor being killed by another client, and restarts only the mapping whose settings change', async () => {
    const db = `multi_${suffix}`;
    const a = mongo.db(db).collection<{ _id: number; n: number; label: string }>('a');
    const b = mongo.db(db).collection<{ _id: number; n: number; label: string }>('b');
    await a.insertMany([{ _id: 1, n: 1, label: 'a' }]);
    await b.insertMany([{ _id: 1, n: 1, label: 'b' }]);
    const settings = mongo
      .db(SETTINGS_DB)
      .collection<{ _id: string } & Document>('bigquery_archiver_settings');
    await settings.insertMany([
      {
        _id: 'a',
        mongo_database: db,
        mongo_collection: 'a',
        bigquery_table: 'multi_a',
        backfill_full_collection: true,
      },
      {
        _id: 'b',
        mongo_database: db,
        mongo_collection: 'b',
        bigquery_table: 'multi_b',
        backfill_full_collection: true,
      },
    ]);
    const run = await start();
    const starts = new Map<string, number>();
    try {
      await viewMatches(db, 'a', 'multi_a');
      await viewMatches(db, 'b', 'multi_b');
      // mongo-java-server numbers its cursors from 1: kill every open one, as an operator's killCursors would.
      await mongo.db(db).command({
        killCursors: 'a',
        cursors: Array.from({ length: 500 }, (_, i) => Long.fromNumber(i + 1)),
      });
      await a.insertOne({ _id: 2, n: 2, label: 'after-kill' });
      await a.updateOne({ _id: 1 }, { $set: { label: 'after-kill' } });
      await viewMatches(db, 'a', 'multi_a');

      const watch = setInterval(() => {
        for (const [id, state] of run.archiver.supervisor.states()) {
          if (state === 'starting') starts.set(id, (starts.get(id) ?? 0) + 1);
        }
      }, 5);
      await settings.updateOne({ _id: 'b' }, { $set: { bigquery_table: 'multi_b2' } });
      await viewMatches(db, 'b', 'multi_b2');
      await a.insertOne({ _id: 3, n: 3, label: 'still-running' });
      await viewMatches(db, 'a', 'multi_a');
      clearInterval(watch);
      expect(starts.get('a')).toBeUndefined();
      expect(starts.get('b')).toBeGreaterThan(0);
    } finally {
      await run.stop();
    }
  }, 120_000);

  it('resync copies a collection again on demand, and the view converges', async () => {
    const db = `resync_${suffix}`;
    const notes = mongo.db(db).collection<{ _id: number; n: number; label: string }>('notes');
    await notes.insertMany(Array.from({ length: 30 }, (_, i) => ({ _id: i, n: i, label: 'old' })));
    const settings = mongo
      .db(SETTINGS_DB)
      .collection<{ _id: string } & Document>('bigquery_archiver_settings');
    // Without a backfill, only changes from now on are archived.
    await settings.insertOne({
      _id: 'notes',
      mongo_database: db,
      mongo_collection: 'notes',
      bigquery_table: 'notes',
    });
    const run = await start();
    try {
      // Streaming from "now": a change counts only once the mapping has taken its start position.
      await waitForView(() => Promise.resolve(run.archiver.supervisor.ready().detail.notes === 'streaming'));
      expect(await viewRows('notes')).toEqual([]);
      await notes.insertOne({ _id: 100, n: 100, label: 'new' });
      await waitForView(async () => (await viewRows('notes').catch(() => [])).length === 1);
      await requestResync(mongo, config, 'notes');
      await viewMatches(db, 'notes', 'notes');
      expect(await viewRows('notes')).toHaveLength(31);
    } finally {
      await run.stop();
    }
  }, 120_000);

  it('archives through the Storage Write API, the default writer, with rows encoded once', async () => {
    const db = `storage_${suffix}`;
    const items = mongo.db(db).collection<{ _id: number; n: number; label: string }>('flat');
    await items.insertMany(Array.from({ length: 200 }, (_, i) => ({ _id: i, n: i, label: 'seed' })));
    await mongo
      .db(SETTINGS_DB)
      .collection<{ _id: string } & Document>('bigquery_archiver_settings')
      .insertOne({
        _id: 'flat',
        mongo_database: db,
        mongo_collection: 'flat',
        bigquery_table: 'flat',
        backfill_full_collection: true,
      });
    const lines: string[] = [];
    const run = await start({ BIGQUERY_WRITER: 'storage-write' }, lines);
    try {
      await viewMatches(db, 'flat', 'flat');
      await items.insertMany(Array.from({ length: 50 }, (_, i) => ({ _id: 1_000 + i, n: i, label: 'new' })));
      await items.updateMany({ _id: { $lt: 30 } }, { $set: { label: 'updated' }, $inc: { n: 7 } });
      await items.deleteMany({ _id: { $gte: 100, $lt: 120 } });
      await viewMatches(db, 'flat', 'flat');
      const rows = await viewRows('flat');
      expect(new Set(rows.map((r) => String(r._doc_id))).size).toBe(rows.length);
      const chosen = lines
        .map((l) => JSON.parse(l) as Document)
        .find((l) => l.msg === 'writer chosen' && l.mapping === 'flat');
      expect(chosen).toMatchObject({ mapping: 'flat', writer: 'storage-write' });
    } finally {
      await run.stop();
    }
  }, 120_000);

  it('puts a row too large for BigQuery in the dead-letter table, says so in lastFailure, and goes on', async () => {
    const db = `dead_${suffix}`;
    const big = mongo.db(db).collection<{ _id: number; n: number; label: string }>('big');
    await big.insertOne({ _id: 1, n: 1, label: 'small' });
    const settings = mongo
      .db(SETTINGS_DB)
      .collection<{ _id: string } & Document>('bigquery_archiver_settings');
    await settings.insertOne({
      _id: 'big',
      mongo_database: db,
      mongo_collection: 'big',
      bigquery_table: 'big',
      backfill_full_collection: true,
    });
    const run = await start();
    try {
      await viewMatches(db, 'big', 'big');
      // Over the 9 MB a row may have in a BigQuery request (MongoDB takes up to 16 MB).
      await big.insertOne({ _id: 2, n: 2, label: 'x'.repeat(9_500_000) });
      await big.insertOne({ _id: 3, n: 3, label: 'after' });
      await waitForView(async () => (await viewRows('big').catch(() => [])).length === 2);
      const rows = await viewRows('big');
      expect(rows.map((r) => Number(r.n)).sort()).toEqual([1, 3]);
      const [dead] = (await clients.bigquery.query({
        query: `SELECT _doc_id, reason FROM \`${clients.projectId}.${DATASET}.big_errors\``,
      })) as unknown as [{ _doc_id: string; reason: string }[]];
      expect(dead).toHaveLength(1);
      expect(dead[0]?.reason).toMatch(/exceeds the \d+-byte limit/);
      const doc = await settings.findOne({ _id: 'big' });
      expect(doc?.lastFailure).toMatch(
        /^1 row\(s\) refused by BigQuery were written to big_errors .*exceeds/,
      );
    } finally {
      await run.stop();
    }
  }, 120_000);

  it('archives a collection dropped and re-created, while running and across a restart, with no stale or hidden row', async () => {
    const db = `recreate_${suffix}`;
    const things = mongo.db(db).collection<{ _id: number; n: number; label: string }>('things');
    await things.insertMany(Array.from({ length: 20 }, (_, i) => ({ _id: i, n: i, label: 'first-life' })));
    await mongo
      .db(SETTINGS_DB)
      .collection<{ _id: string } & Document>('bigquery_archiver_settings')
      .insertOne({
        _id: 'things',
        mongo_database: db,
        mongo_collection: 'things',
        bigquery_table: 'things',
        backfill_full_collection: true,
      });
    let run = await start();
    try {
      await viewMatches(db, 'things', 'things');
      // Dropped while running: the view empties.
      await things.drop();
      await waitForView(async () => (await viewRows('things').catch(() => [null])).length === 0);
      // Re-created, partly with the ids of the first life: only the new documents show.
      await things.insertMany([
        { _id: 5, n: 500, label: 'second-life' },
        { _id: 100, n: 100, label: 'second-life' },
      ]);
      await things.updateOne({ _id: 100 }, { $set: { label: 'second-life-updated' } });
      await viewMatches(db, 'things', 'things');
    } finally {
      await run.stop();
    }
    // A restart resumes from a checkpoint taken after the drop (the peer answers with a replayed invalidate).
    await things.insertOne({ _id: 101, n: 101, label: 'while-down' });
    run = await start();
    try {
      await things.insertOne({ _id: 102, n: 102, label: 'after-restart' });
      await viewMatches(db, 'things', 'things');
      const [markers] = (await clients.bigquery.query({
        query: `SELECT COUNT(*) AS n FROM \`${clients.projectId}.${DATASET}.things\` WHERE operationType = 'drop'`,
      })) as unknown as [{ n: number }[]];
      // One marker per drop or invalidate the server reported; none for the replay after the restart.
      expect(markers[0]?.n).toBe(1);
      const rows = await viewRows('things');
      expect(new Set(rows.map((r) => String(r._doc_id))).size).toBe(rows.length);
    } finally {
      await run.stop();
    }
  }, 120_000);

  it('issue 10 item 3: settings documents replaced with their original format while the daemon is down resume from their checkpoints: nothing lost, nothing copied again', async () => {
    const db = `replaced_${suffix}`;
    const withBackfill = mongo.db(db).collection<Item>('copied');
    const withoutBackfill = mongo.db(db).collection<Item>('streamed');
    await withBackfill.insertMany(Array.from({ length: 40 }, (_, i) => ({ _id: i, n: i, label: 'seed' })));
    const columns = [
      { name: '_id', type: 'STRING', mongo_field: '_id', primary_key: true },
      { name: 'n', type: 'INTEGER' },
      { name: 'label', type: 'STRING' },
    ];
    // As a user writes them (the original README's format): what a GUI edit or a re-save puts back.
    const originals: (Document & { _id: string })[] = [
      {
        _id: 'copied',
        mongo_database: db,
        mongo_collection: 'copied',
        bigquery_table: 'copied',
        backfill_full_collection: true,
        columns,
      },
      {
        _id: 'streamed',
        mongo_database: db,
        mongo_collection: 'streamed',
        bigquery_table: 'streamed',
        columns,
      },
    ];
    const settings = mongo
      .db(SETTINGS_DB)
      .collection<Document & { _id: string }>('bigquery_archiver_settings');
    await settings.insertMany(originals);
    // A mapping without a backfill archives what happens once it streams.
    const streaming = async (archiver: RunningArchiver) => {
      while (archiver.supervisor.states().get('streamed') !== 'streaming') await sleep(50);
    };
    let run = await start();
    await streaming(run.archiver);
    await withoutBackfill.insertOne({ _id: 1, n: 1, label: 'streamed' });
    await viewMatches(db, 'copied', 'copied');
    await viewMatches(db, 'streamed', 'streamed');
    await run.stop();

    await withBackfill.updateMany({ _id: { $lt: 5 } }, { $set: { label: 'while-down' } });
    await withoutBackfill.insertOne({ _id: 2, n: 2, label: 'while-down' });
    await withoutBackfill.updateOne({ _id: 1 }, { $set: { label: 'while-down' } });
    for (const original of originals) await settings.replaceOne({ _id: original._id }, original);

    run = await start();
    await streaming(run.archiver);
    await withoutBackfill.insertOne({ _id: 3, n: 3, label: 'after-restart' });
    await viewMatches(db, 'copied', 'copied');
    await viewMatches(db, 'streamed', 'streamed');
    await run.stop();
    // The collection was copied once: the checkpoint, not the settings document, says the backfill is done.
    const [copies] = (await clients.bigquery.query({
      query: `SELECT COUNT(*) AS n FROM \`${clients.projectId}.${DATASET}.copied\` WHERE operationType = 'backfill'`,
    })) as unknown as [{ n: number }[]];
    expect(Number(copies[0]?.n)).toBe(40);
  }, 120_000);

  it('issue 11 review: backfill_full_collection turned on for a mapping that streams keeps its position: a delete made while the daemon was down still reaches the views', async () => {
    const db = `turnedon_${suffix}`;
    const items = mongo.db(db).collection<Item>('items');
    await items.insertMany(Array.from({ length: 10 }, (_, i) => ({ _id: i, n: i, label: 'seed' })));
    const settings = mongo
      .db(SETTINGS_DB)
      .collection<Document & { _id: string }>('bigquery_archiver_settings');
    const mapping: Document & { _id: string } = {
      _id: 'turnedon',
      mongo_database: db,
      mongo_collection: 'items',
      bigquery_table: 'turnedon',
      columns: [
        { name: '_id', type: 'STRING', mongo_field: '_id', primary_key: true },
        { name: 'n', type: 'INTEGER' },
        { name: 'label', type: 'STRING' },
      ],
    };
    await settings.insertOne(mapping);
    let run = await start();
    while (run.archiver.supervisor.states().get('turnedon') !== 'streaming') await sleep(50);
    // Archived by the stream: the view has it.
    await items.updateOne({ _id: 3 }, { $set: { label: 'streamed' } });
    const streamedRow = async () => (await viewRows('turnedon')).some((r) => r._doc_id === docIdString(3));
    const deadline = Date.now() + 60_000;
    while (!(await streamedRow().catch(() => false)) && Date.now() < deadline) await sleep(300);
    await run.stop();
    // While the daemon is down: document 3 goes, and the user asks for the whole collection.
    await items.deleteOne({ _id: 3 });
    await settings.updateOne({ _id: 'turnedon' }, { $set: { backfill_full_collection: true } });
    run = await start();
    try {
      await viewMatches(db, 'items', 'turnedon');
    } finally {
      await run.stop();
    }
  }, 120_000);

  it('issue 10 item 9: a backfill interrupted after a new snapshot (on_history_lost: resnapshot) is finished after a restart, not skipped', async () => {
    const db = `resnap_${suffix}`;
    const items = mongo.db(db).collection<Item>('items');
    await items.insertMany(Array.from({ length: 40 }, (_, i) => ({ _id: i, n: i, label: 'seed' })));
    const snapshotStart = await new MongoChangeSource(mongo, mongo.db(db).collection('items')).currentTime(
      AbortSignal.timeout(10_000),
    );
    // What the checkpoints hold when a new snapshot was interrupted after its first chunk: the lost position
    // cleared, the copy half done. Nothing in the settings asks for a backfill.
    await mongo
      .db(SETTINGS_DB)
      .collection<Document & { _id: string }>('bigquery_archiver_settings_checkpoints')
      .insertOne({
        _id: 'resnap',
        scope: `${db}.items -> ${DATASET}.resnap`,
        resync: false,
        backfill: {
          snapshotStart: new Timestamp({ t: snapshotStart.t, i: snapshotStart.i }),
          lastId: encodeId(19),
          copied: 20,
          done: false,
        },
      });
    await mongo
      .db(SETTINGS_DB)
      .collection<Document & { _id: string }>('bigquery_archiver_settings')
      .insertOne({
        _id: 'resnap',
        mongo_database: db,
        mongo_collection: 'items',
        bigquery_table: 'resnap',
        on_history_lost: 'resnapshot',
        columns: [
          { name: '_id', type: 'STRING', mongo_field: '_id', primary_key: true },
          { name: 'n', type: 'INTEGER' },
          { name: 'label', type: 'STRING' },
        ],
      });
    const run = await start();
    try {
      const copied = async () => {
        const [rows] = (await clients.bigquery
          .query({
            query: `SELECT _doc_id FROM \`${clients.projectId}.${DATASET}.resnap\` WHERE operationType = 'backfill'`,
          })
          .catch(() => [[]])) as unknown as [{ _doc_id: string }[]];
        return rows.map((r) => r._doc_id).sort();
      };
      const expected = Array.from({ length: 20 }, (_, i) => docIdString(20 + i)).sort();
      const deadline = Date.now() + 60_000;
      while (JSON.stringify(await copied()) !== JSON.stringify(expected) && Date.now() < deadline) {
        await sleep(300);
      }
      // The rest of the copy, from where it stopped: documents 20 to 39, once each.
      expect(await copied()).toEqual(expected);
    } finally {
      await run.stop();
    }
  }, 120_000);
});

interface Item {
  _id: number;
  n: number;
  label: string;
}

async function waitForView(check: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + 60_000;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('view never reached the expected state');
    await sleep(200);
  }
}
