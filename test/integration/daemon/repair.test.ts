// Issue 14 must-show 1, the repair half: a daemon streams a mapping; the test damages the history table in
// BigQuery in two known `_id` ranges (rows of some documents deleted, bogus rows for ids MongoDB does not
// have, a row that makes one document differ), asks for a repair of those ranges while a workload writes
// elsewhere, and then `<table>_view` equals MongoDB, the repair having written rows only in those ranges.
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { MongoClient, type Collection, type Document } from 'mongodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startArchiver } from '../../../src/app/archiver.js';
import { requestRepair, waitForRepair } from '../../../src/app/repair.js';
import { daemonVerification } from '../../../src/app/verification.js';
import { type BigQueryClients } from '../../../src/bigquery/client.js';
import { type IdRange } from '../../../src/core/ports.js';
import {
  checkpointsCollectionName,
  encodeId,
  readRepairState,
  type RepairResult,
} from '../../../src/mongodb/checkpoint-store.js';
import { createLogger } from '../../../src/observability/logger.js';
import { emulatorClients } from '../support/bigquery-clients.js';
import {
  inProcessConfig,
  SETTINGS_COLLECTION,
  viewMatchesCollection,
  waitForState,
  type Item,
} from '../support/daemon.js';
import { shortOplog, type ShortOplogLog } from './short-oplog.js';
import { readStatus } from '../../../src/cli/status.js';
import { parsePrometheusText, sampleValue } from '../../support/prometheus-text.js';

const suffix = randomBytes(3).toString('hex');
const DATASET = `repair_${suffix}`;
const SETTINGS_DB = `repair_settings_${suffix}`;
/** The history-lost test's own settings: an archiver started on the first test's would run its mapping too. */
const LOST_SETTINGS_DB = `repair_lost_${suffix}`;
const BACKGROUND_SETTINGS_DB = `repair_background_${suffix}`;
const WINDOW_S = 4;
const DB = `repair_src_${suffix}`;
/** Documents with the even ids 0 to 2 * (SEEDED - 1): odd ids are free for bogus rows. */
const SEEDED = 3_000;
/** The damaged ranges: ids 1001..1200 and 4001..4200 (100 documents each). */
const RANGE_A: IdRange = { after: encodeId(1_000), upTo: encodeId(1_200) };
const RANGE_B: IdRange = { after: encodeId(4_000), upTo: encodeId(4_200) };
const LOST = [...evens(1_010, 1_030), ...evens(4_100, 4_110)];
const BOGUS = [1_101, 1_103, 4_151];
const CORRUPT = 1_150;

function evens(from: number, to: number): number[] {
  return Array.from({ length: (to - from) / 2 + 1 }, (_, i) => from + 2 * i);
}

function docId(id: number): string {
  return `{"$numberInt":"${String(id)}"}`;
}

function inRanges(id: number): boolean {
  return (id > 1_000 && id <= 1_200) || (id > 4_000 && id <= 4_200);
}

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

async function query(sql: string): Promise<Document[]> {
  const [rows] = await clients.bigquery.query({ query: sql });
  return rows as Document[];
}

/** Updates of ids outside the damaged ranges and inserts of new ids above them, until `stop`. */
async function elsewhere(items: Collection<Item>, stop: AbortSignal): Promise<number> {
  let ops = 0;
  while (!stop.aborted) {
    if (ops % 2 === 0) await items.insertOne({ _id: 100_000 + ops, n: ops, label: 'inserted' });
    else await items.updateOne({ _id: 2 * (ops % 400) }, { $set: { label: `updated-${String(ops)}` } });
    ops++;
    await sleep(20);
  }
  return ops;
}

describe('repair', () => {
  it('issue 14 must-show 1: a repair of the damaged ranges makes the view equal MongoDB, writing rows only there', async () => {
    const items = mongo.db(DB).collection<Item>('items');
    await items.insertMany(
      Array.from({ length: SEEDED }, (_, i) => ({ _id: 2 * i, n: 2 * i, label: 'seed' })),
    );
    const settings = mongo.db(SETTINGS_DB).collection<{ _id: string } & Document>(SETTINGS_COLLECTION);
    await settings.insertOne({
      _id: 'items',
      mongo_database: DB,
      mongo_collection: 'items',
      bigquery_table: 'items',
      backfill_full_collection: true,
    });
    const config = inProcessConfig(DATASET, SETTINGS_DB, 'insert-all');
    const controller = new AbortController();
    const archiver = await startArchiver(
      config,
      createLogger({ level: (process.env.MBA_TEST_LOG as 'info' | undefined) ?? 'silent' }),
      controller.signal,
    );
    const table = `\`${clients.projectId}.${DATASET}.items\``;
    const target = {
      mongo,
      clients,
      db: DB,
      collection: 'items',
      dataset: DATASET,
      table: 'items',
      fields: ['n', 'label'],
    };
    try {
      await waitForState(mongo, SETTINGS_DB, 'items', ['streaming'], 120_000);
      await viewMatchesCollection(target, 120_000);
      // One document changed through the stream, whose row the damage removes: the view keeps the old one.
      await items.updateOne({ _id: CORRUPT }, { $set: { label: 'changed' } });
      await viewMatchesCollection(target, 120_000);
      const fullCopy = Number(
        (await query(`SELECT COUNT(*) AS n FROM ${table} WHERE operationType = 'backfill'`))[0]?.n,
      );

      // The damage, straight in BigQuery: history lost, bogus documents, one document made to differ (a row
      // sorting just after its backfill row, so before anything written later).
      // Written as the archiver writes (insertAll), with `_seq`s of the copy's snapshot: they sort before
      // anything written later.
      const [original] = await query(
        `SELECT _seq, _cluster_time FROM ${table} WHERE _doc_id = '${docId(CORRUPT)}' AND operationType = 'backfill'`,
      );
      const seq = String(original?._seq);
      const at = new Date(
        String((original?._cluster_time as { value: string } | undefined)?.value),
      ).toISOString();
      const row = (id: number, label: string, extra: Record<string, unknown>) => ({
        _id: docId(id),
        n: id,
        label,
        time_archived: at,
        _cluster_time: at,
        _seq: seq,
        _doc_id: docId(id),
        ...extra,
      });
      await clients.bigquery
        .dataset(DATASET)
        .table('items')
        .insert([
          ...BOGUS.map((id) =>
            row(id, 'bogus', { operationType: 'insert', _event_id: `bogus:${String(id)}` }),
          ),
        ]);
      await query(
        `DELETE FROM ${table} WHERE _doc_id IN (${LOST.map((i) => `'${docId(i)}'`).join(', ')}) ` +
          `OR (_doc_id = '${docId(CORRUPT)}' AND operationType = 'update')`,
      );
      const damaged = await query(
        `SELECT _doc_id, label FROM ${table}_view WHERE _doc_id IN ('${docId(1_010)}', '${docId(1_101)}', '${docId(CORRUPT)}')`,
      );
      expect(damaged.map((r) => `${String(r._doc_id)}:${String(r.label)}`).sort()).toEqual([
        `${docId(1_101)}:bogus`,
        `${docId(CORRUPT)}:seed`,
      ]);

      const stop = new AbortController();
      const workload = elsewhere(items, stop.signal);
      const requestedAt = await requestRepair(mongo, config, 'items', [RANGE_A, RANGE_B], 'verify');
      const result = await waitForRepair(mongo, config, 'items', requestedAt, { timeoutMs: 120_000 });
      stop.abort();
      expect(await workload).toBeGreaterThan(10);

      expect(result).toMatchObject({ reason: 'verify', ranges: 2, documents: 200, deletes: BOGUS.length });
      await viewMatchesCollection(target, 120_000);
      // The repair's rows: every row at its snapshot start (the newest backfill `_seq`), all in the ranges.
      const written = await query(
        `SELECT _doc_id, operationType FROM ${table} WHERE _seq = (SELECT MAX(_seq) FROM ${table} WHERE operationType = 'backfill')`,
      );
      const ids = written.map((r) =>
        Number((JSON.parse(String(r._doc_id)) as { $numberInt: string }).$numberInt),
      );
      expect(ids.filter((id) => !inRanges(id))).toEqual([]);
      expect(
        written
          .filter((r) => r.operationType === 'delete')
          .map((r) => String(r._doc_id))
          .sort(),
      ).toEqual(BOGUS.map(docId).sort());
      expect(written).toHaveLength(200 + BOGUS.length);
      process.stdout.write(
        `repair wrote ${String(written.length)} rows (${String(result?.documents)} documents, ` +
          `${String(result?.deletes)} deletes) over 2 ranges; the full copy wrote ${String(fullCopy)} rows\n`,
      );
      // The mapping kept streaming through the repair, from its own position.
      expect((await settings.findOne({ _id: 'items' }))?.lastFailure).toBeUndefined();
    } finally {
      controller.abort();
      await archiver.done;
    }
  }, 300_000);

  it('issue 14 must-show 1: on_history_lost: repair converges after a lost resume token, writing far fewer rows than a full copy', async () => {
    const items = mongo.db(DB).collection<Item>('lost');
    await items.insertMany(
      Array.from({ length: SEEDED }, (_, i) => ({ _id: 2 * i, n: 2 * i, label: 'seed' })),
    );
    const settings = mongo.db(LOST_SETTINGS_DB).collection<{ _id: string } & Document>(SETTINGS_COLLECTION);
    await settings.insertOne({
      _id: 'lost',
      mongo_database: DB,
      mongo_collection: 'lost',
      bigquery_table: 'lost',
      backfill_full_collection: true,
      on_history_lost: 'repair',
    });
    const log: ShortOplogLog = { opens: [] };
    const decorateChangeSource = shortOplog(WINDOW_S, log);
    const config = inProcessConfig(DATASET, LOST_SETTINGS_DB, 'insert-all');
    const start = (signal: AbortSignal) =>
      startArchiver(
        config,
        createLogger({ level: (process.env.MBA_TEST_LOG as 'info' | undefined) ?? 'silent' }),
        signal,
        { decorateChangeSource, verification: daemonVerification },
      );
    const table = `\`${clients.projectId}.${DATASET}.lost\``;
    const target = {
      mongo,
      clients,
      db: DB,
      collection: 'lost',
      dataset: DATASET,
      table: 'lost',
      fields: ['n', 'label'],
    };
    const first = new AbortController();
    const running = await start(first.signal);
    try {
      await waitForState(mongo, LOST_SETTINGS_DB, 'lost', ['streaming'], 120_000);
      await viewMatchesCollection(target, 120_000);
    } finally {
      first.abort();
      await running.done;
    }
    const fullCopy = Number(
      (await query(`SELECT COUNT(*) AS n FROM ${table} WHERE operationType = 'backfill'`))[0]?.n,
    );
    // Down longer than the window, with changes meanwhile in two corners of the collection: updates,
    // deletes (no copy shows them; the repair's delete rows do) and inserts.
    for (const id of [102, 104, 106]) await items.updateOne({ _id: id }, { $set: { label: 'while-down' } });
    for (const id of [110, 112]) await items.deleteOne({ _id: id });
    await items.insertMany([
      { _id: 115, n: 115, label: 'while-down' },
      { _id: 5_001, n: 5_001, label: 'while-down' },
    ]);
    await items.updateOne({ _id: 5_000 }, { $set: { label: 'while-down' } });
    await sleep((WINDOW_S + 1) * 1_000);

    const second = new AbortController();
    const restarted = await start(second.signal);
    const stop = new AbortController();
    try {
      // Writes at the top of the id space while the mapping verifies: its checkpoint moves past each read.
      const workload = (async () => {
        let ops = 0;
        while (!stop.signal.aborted) {
          await items.insertOne({ _id: 200_000 + ops, n: ops, label: 'inserted' });
          ops++;
          await sleep(50);
        }
        return ops;
      })();
      const result = await waitForLastRepair(LOST_SETTINGS_DB, 'lost', 240_000);
      stop.abort();
      expect(await workload).toBeGreaterThan(0);
      await viewMatchesCollection(target, 120_000);

      // The saved position was refused once (the history was lost), and the stream started again at once.
      expect(log.opens.filter((o) => o.refused)).toHaveLength(1);
      expect(log.opens.at(-1)).toMatchObject({ kind: 'startAt', refused: false });
      expect(result.reason).toBe('history-lost');
      expect(result.deletes).toBe(2);
      const written = result.documents + result.deletes;
      expect(written).toBeLessThan(fullCopy / 2);
      // No second copy of the whole collection: the copy's snapshot and the repair's, nothing else.
      const [snapshots] = await clients.bigquery.query({
        query: `SELECT COUNT(DISTINCT _seq) AS n FROM ${table} WHERE operationType = 'backfill'`,
      });
      expect(Number((snapshots as Document[])[0]?.n)).toBe(2);
      process.stdout.write(
        `on_history_lost: repair wrote ${String(written)} rows (${String(result.documents)} documents, ` +
          `${String(result.deletes)} deletes) over ${String(result.ranges)} ranges; a full copy writes ${String(fullCopy)} rows\n`,
      );
      expect((await settings.findOne({ _id: 'lost' }))?.lastFailure).toBeUndefined();
      const overview = (await readStatus(mongo, config)).mappings.find((m) => m.id === 'lost');
      expect(overview?.lastVerification?.rangesDiffering).toBe(result.ranges);
      expect(overview?.repair?.last).toMatchObject({ reason: 'history-lost', deletes: 2 });
    } finally {
      stop.abort();
      second.abort();
      await restarted.done;
    }
  }, 420_000);
});

describe('the background verifier', () => {
  it('issue 14: finds bogus rows in the view, reports them in mba_verify_* and status, and with repair: true repairs them', async () => {
    const items = mongo.db(DB).collection<Item>('background');
    await items.insertMany(
      Array.from({ length: 1_000 }, (_, i) => ({ _id: 2 * i, n: 2 * i, label: 'seed' })),
    );
    const settings = mongo
      .db(BACKGROUND_SETTINGS_DB)
      .collection<{ _id: string } & Document>(SETTINGS_COLLECTION);
    await settings.insertOne({
      _id: 'background',
      mongo_database: DB,
      mongo_collection: 'background',
      bigquery_table: 'background',
      backfill_full_collection: true,
      verify: { interval_minutes: 60, share: 1, repair: true },
    });
    const config = inProcessConfig(DATASET, BACKGROUND_SETTINGS_DB, 'insert-all');
    const controller = new AbortController();
    const archiver = await startArchiver(
      config,
      createLogger({ level: (process.env.MBA_TEST_LOG as 'info' | undefined) ?? 'silent' }),
      controller.signal,
      { verification: daemonVerification },
    );
    const target = {
      mongo,
      clients,
      db: DB,
      collection: 'background',
      dataset: DATASET,
      table: 'background',
      fields: ['n', 'label'],
    };
    const stop = new AbortController();
    try {
      await waitForState(mongo, BACKGROUND_SETTINGS_DB, 'background', ['streaming'], 120_000);
      await viewMatchesCollection(target, 120_000);
      const table = `\`${clients.projectId}.${DATASET}.background\``;
      const [copied] = await query(
        `SELECT _seq, _cluster_time FROM ${table} WHERE operationType = 'backfill' LIMIT 1`,
      );
      const at = new Date(
        String((copied?._cluster_time as { value: string } | undefined)?.value),
      ).toISOString();
      await clients.bigquery
        .dataset(DATASET)
        .table('background')
        .insert(
          [301, 1_501].map((id) => ({
            _id: docId(id),
            n: id,
            label: 'bogus',
            time_archived: at,
            _cluster_time: at,
            _seq: String(copied?._seq),
            _doc_id: docId(id),
            operationType: 'insert',
            _event_id: `bogus:${String(id)}`,
          })),
        );
      // Writes at the top of the id space: the mapping's checkpoint moves past each of the verifier's reads.
      const workload = (async () => {
        let ops = 0;
        while (!stop.signal.aborted) {
          await items.insertOne({ _id: 200_000 + ops, n: ops, label: 'inserted' });
          ops++;
          await sleep(50);
        }
        return ops;
      })();
      // The first look finds the mapping still copying; the next comes DEFAULT_BACKGROUND_VERIFY_TICK_MS later.
      const result = await waitForLastRepair(BACKGROUND_SETTINGS_DB, 'background', 180_000);
      stop.abort();
      expect(await workload).toBeGreaterThan(0);
      expect(result).toMatchObject({ reason: 'background', deletes: 2 });
      await viewMatchesCollection(target, 120_000);

      const samples = parsePrometheusText(
        await (await fetch(`http://127.0.0.1:${String(archiver.metricsPort)}/metrics`)).text(),
      );
      const labels = { mapping: 'background' };
      expect(sampleValue(samples, 'mba_verify_runs_total', labels)).toBe(1);
      expect(sampleValue(samples, 'mba_verify_documents_extra', labels)).toBe(2);
      expect(sampleValue(samples, 'mba_verify_documents_missing', labels)).toBe(0);
      expect(sampleValue(samples, 'mba_repair_rows_total', { mapping: 'background', kind: 'delete' })).toBe(
        2,
      );
      const status = await readStatus(mongo, config);
      const overview = status.mappings.find((m) => m.id === 'background');
      expect(overview?.lastVerification).toMatchObject({ extra: 2, missing: 0 });
      expect(overview?.repair?.last).toMatchObject({ reason: 'background', deletes: 2 });
    } finally {
      stop.abort();
      controller.abort();
      await archiver.done;
    }
  }, 420_000);
});

/** The last repair of `mapping` once one is recorded. */
async function waitForLastRepair(
  settingsDb: string,
  mapping: string,
  timeoutMs: number,
): Promise<RepairResult> {
  const checkpoints = mongo.db(settingsDb).collection(checkpointsCollectionName(SETTINGS_COLLECTION));
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const last = readRepairState(await checkpoints.findOne({ _id: mapping } as Document)).last;
    if (last) return last;
    if (Date.now() > deadline) throw new Error(`no repair of ${mapping} within ${String(timeoutMs)} ms`);
    await sleep(250);
  }
}
