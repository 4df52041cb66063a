// Issue 14 must-show 2, the server side: the MongoDB peer (mongo-java-server) is no replica set member (its
// hello has no setName), like a standalone server, and the oplog it keeps for change streams starts with the
// process and is never truncated: no window to watch. The daemon asks over the real wire protocol, says once
// that the headroom guard is off and why, exports no window, and keeps archiving and ready. The guard's
// numbers on a real oplog are shown by unit tests on recorded MongoDB answers (docs/testing.md).
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { MongoClient, type Document } from 'mongodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startArchiver } from '../../../src/app/archiver.js';
import { showStatus, type StatusReport } from '../../../src/cli/status.js';
import { type BigQueryClients } from '../../../src/bigquery/client.js';
import { loadBootstrapConfig } from '../../../src/config/bootstrap.js';
import { createLogger } from '../../../src/observability/logger.js';
import { METRIC_NAMES } from '../../../src/observability/metrics.js';
import { parsePrometheusText } from '../../support/prometheus-text.js';
import { emulatorClients } from '../support/bigquery-clients.js';
import {
  daemonEnv,
  SETTINGS_COLLECTION,
  viewMatchesCollection,
  waitForState,
  type Item,
} from '../support/daemon.js';

const suffix = randomBytes(3).toString('hex');
const DATASET = `headroom_${suffix}`;
const SETTINGS_DB = `headroom_settings_${suffix}`;
const DB = `headroom_src_${suffix}`;
/** Polls a second apart: several of them while the test runs, one log line for all. */
const POLL_MS = 1_000;

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

describe('the oplog headroom guard on a server without an oplog', () => {
  it('issue 14 must-show 2: says once that the guard is off and why, exports no window, and the daemon keeps archiving and ready', async () => {
    const items = mongo.db(DB).collection<Item>('items');
    await items.insertMany([1, 2, 3].map((i) => ({ _id: i, n: i, label: 'seed' })));
    await mongo.db(SETTINGS_DB).collection<{ _id: string } & Document>(SETTINGS_COLLECTION).insertOne({
      _id: 'items',
      mongo_database: DB,
      mongo_collection: 'items',
      bigquery_table: 'items',
      backfill_full_collection: true,
    });
    const lines: Record<string, unknown>[] = [];
    const config = loadBootstrapConfig({
      path: '/nonexistent/config.json',
      env: {
        ...daemonEnv(DATASET, SETTINGS_DB),
        SETTINGS_POLL_INTERVAL_MS: '300',
        BIGQUERY_WRITER: 'insert-all',
        OPLOG_WINDOW_POLL_INTERVAL_MS: String(POLL_MS),
      },
    });
    const logger = createLogger({
      level: 'info',
      destination: { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) },
    });
    const controller = new AbortController();
    const archiver = await startArchiver(config, logger, controller.signal);
    try {
      await waitForState(mongo, SETTINGS_DB, 'items', ['streaming'], 60_000);
      // A change after several polls of the guard still reaches the views.
      await sleep(4 * POLL_MS);
      await items.updateOne({ _id: 2 }, { $set: { label: 'after the polls' } });
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
        60_000,
      );
      expect(rows).toBe(distinct);

      const off = lines.filter((line) => String(line.msg).startsWith('oplog headroom guard off'));
      expect(off).toHaveLength(1);
      expect(off[0]).toMatchObject({ level: 'info', reason: 'no-oplog' });
      expect(String(off[0]?.msg)).toContain('not a replica set member');
      // Nothing else of the guard: no failed read, no warning.
      expect(lines.filter((line) => String(line.msg).includes('oplog') && line.level === 'warn')).toEqual([]);

      const port = archiver.metricsPort;
      const readyz = await fetch(`http://127.0.0.1:${String(port)}/readyz`);
      expect(readyz.status).toBe(200);
      expect(await readyz.json()).toEqual({ ready: true, detail: { items: 'streaming' } });
      const samples = parsePrometheusText(
        await (await fetch(`http://127.0.0.1:${String(port)}/metrics`)).text(),
      );
      expect(samples.filter((s) => s.name === METRIC_NAMES.oplogWindow)).toEqual([]);
      expect(samples.filter((s) => s.name === METRIC_NAMES.oplogHeadroom)).toEqual([]);

      // `status` reads the window the same way: it says why there is none, and shows no headroom.
      let json = '';
      await showStatus(config, { json: true }, { write: (chunk) => (json += chunk) });
      const report = JSON.parse(json) as StatusReport;
      const window = report.oplogWindow;
      expect(window && 'unavailable' in window && window.unavailable).toContain('not a replica set member');
      expect(report.mappings.find((m) => m.id === 'items')?.oplog).toBeNull();
    } finally {
      controller.abort();
      await archiver.done;
    }
  }, 180_000);
});
