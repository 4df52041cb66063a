// A graceful stop during a backfill (issue 10 item 17): the chunk already read is written and its progress
// saved before the stop completes, so the next owner does not copy it again. An in-process archiver whose
// history-table writer answers its first append only after a delay, as a slow BigQuery would.
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { MongoClient, type Document } from 'mongodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startArchiver } from '../../../src/app/archiver.js';
import { DEFAULT_BACKFILL_CHUNKS_IN_FLIGHT } from '../../../src/app/backfill-role.js';
import { DEFAULT_BACKFILL_PARALLELISM } from '../../../src/core/settings.js';
import { type WriterDecorator } from '../../../src/bigquery/destination.js';
import { type BigQueryClients } from '../../../src/bigquery/client.js';
import { type TableWriter } from '../../../src/bigquery/writer.js';
import { DEFAULT_BACKFILL_CHUNK } from '../../../src/mongodb/snapshot-reader.js';
import { createLogger } from '../../../src/observability/logger.js';
import { emulatorClients } from '../support/bigquery-clients.js';
import { inProcessConfig, SETTINGS_COLLECTION, waitForState } from '../support/daemon.js';

const suffix = randomBytes(3).toString('hex');
const DATASET = `stop_${suffix}`;
const SETTINGS_DB = `stop_settings_${suffix}`;
const DB = `stop_src_${suffix}`;
/**
 * More than the chunks the backfill holds at once (DEFAULT_BACKFILL_CHUNKS_IN_FLIGHT per range, in
 * DEFAULT_BACKFILL_PARALLELISM ranges), so the stop falls inside the backfill.
 */
const SEEDED = 10_000;
/** How long the first append of the history table takes to be answered. */
const SLOW_APPEND_MS = 2_000;

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

/** Holds the first append of every writer for SLOW_APPEND_MS; `started` resolves when one is held. */
function slowFirstAppend(): { decorate: WriterDecorator; started: Promise<number> } {
  let announce: (rows: number) => void = () => undefined;
  const started = new Promise<number>((resolve) => {
    announce = resolve;
  });
  let held = false;
  const decorate: WriterDecorator = (writer) => {
    const slow: TableWriter = {
      kind: writer.kind,
      encode: (row) => writer.encode(row),
      async append(rows, signal) {
        if (!held) {
          held = true;
          announce(rows.length);
          // An unanswered request: its caller may give up on it (the signal), as with a real one.
          await sleep(SLOW_APPEND_MS, undefined, signal && { signal });
        }
        return writer.append(rows, signal);
      },
      updateSchema: (schema) => writer.updateSchema(schema),
      close: () => writer.close(),
    };
    return slow;
  };
  return { decorate, started };
}

describe('graceful stop during a backfill', () => {
  it('issue 10 item 17: writes the chunk in hand and saves its progress before the stop completes', async () => {
    const items = mongo.db(DB).collection<{ _id: number; n: number }>('items');
    await items.insertMany(Array.from({ length: SEEDED }, (_, i) => ({ _id: i, n: i })));
    await mongo
      .db(SETTINGS_DB)
      .collection<{ _id: string } & Document>(SETTINGS_COLLECTION)
      .insertOne({
        _id: 'items',
        mongo_database: DB,
        mongo_collection: 'items',
        bigquery_table: 'items',
        backfill_full_collection: true,
        columns: [{ name: 'n', type: 'INT64' }],
      });
    const config = inProcessConfig(DATASET, SETTINGS_DB, 'insert-all');
    const { decorate, started } = slowFirstAppend();
    const controller = new AbortController();
    const logger = createLogger({ level: process.env.MBA_DEBUG_DAEMON ? 'debug' : 'silent' });
    const archiver = await startArchiver(config, logger, controller.signal, { decorateWriter: decorate });
    let stopped = false;
    try {
      await waitForState(mongo, SETTINGS_DB, 'items', ['backfilling'], 60_000);
      // The first request of the first chunk (the sink may split a chunk into several requests).
      expect(await started).toBeGreaterThan(0);
      controller.abort();
      await archiver.done;
      stopped = true;

      const checkpoint = await mongo
        .db(SETTINGS_DB)
        .collection<{ _id: string } & Document>(`${SETTINGS_COLLECTION}_checkpoints`)
        .findOne({ _id: 'items' });
      const backfill = checkpoint?.backfill as { copied?: number; done?: boolean } | undefined;
      // Issue 11: the chunks in hand are the one held and the ones read ahead of it (at most
      // DEFAULT_BACKFILL_CHUNKS_IN_FLIGHT per range): all of them are written and counted, nothing more.
      const copied = backfill?.copied ?? 0;
      expect(copied).toBeGreaterThanOrEqual(DEFAULT_BACKFILL_CHUNK);
      expect(copied).toBeLessThanOrEqual(
        DEFAULT_BACKFILL_CHUNK * DEFAULT_BACKFILL_CHUNKS_IN_FLIGHT * DEFAULT_BACKFILL_PARALLELISM,
      );
      expect(copied).toBeLessThan(SEEDED);
      expect(backfill?.done).toBe(false);
      const [rows] = (await clients.bigquery.query({
        query: `SELECT COUNT(*) AS copies FROM \`${clients.projectId}.${DATASET}.items\` WHERE operationType = 'backfill'`,
      })) as unknown as [{ copies: number }[]];
      expect(Number(rows[0]?.copies)).toBe(copied);
    } finally {
      if (!stopped) {
        controller.abort();
        await archiver.done;
      }
    }
  }, 120_000);
});
