// Issue 14 (the gap that kept it open): `verify` compares JSON columns and `_unmapped` by content, not by
// presence. A mapping declares a JSON column (`meta`); with capture_unmapped on and schema evolution off (the
// default for declared columns), a field no column reads (`extra`) waits in `_unmapped`. While a writer
// changes both, verify reports nothing. With the daemon stopped, a change to `extra` alone, or to `meta`
// alone, is reported for exactly those documents (exit 3). History rows whose JSON text is respelt (keys
// reordered, whitespace, `1.0` for `1`) are not reported; rows whose JSON content differs are, and
// `verify --repair` makes the view equal again (exit 0). The emulator keeps JSON text as written, so the
// respelt rows stand for what real BigQuery's normalised text looks like (the canonical form itself is
// unit-tested in test/unit/transform/json-canonical.test.ts).
// Issue 14 (REPEATED JSON): a declared REPEATED JSON column (`list`) was compared by presence only; an element
// changed while the daemon was stopped (120) is now reported, and a history row with one element differing
// (270) is reported and repaired.
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { MongoClient, type Collection, type Document } from 'mongodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type BigQueryClients } from '../../../src/bigquery/client.js';
import { EXIT } from '../../../src/cli/common.js';
import { parseColumnSpecs } from '../../../src/schema/column-spec.js';
import { compileRowMapper } from '../../../src/transform/row-mapper.js';
import { docIdString } from '../../../src/transform/values.js';
import { emulatorClients } from '../support/bigquery-clients.js';
import {
  daemonEnv,
  SETTINGS_COLLECTION,
  runCli,
  spawnDaemon,
  viewMatchesCollection,
  waitForState,
  type DaemonProcess,
} from '../support/daemon.js';

const suffix = randomBytes(3).toString('hex');
const DATASET = `vjson_${suffix}`;
const SETTINGS_DB = `archiver_vjson_${suffix}`;
const DB = `vjsondb_${suffix}`;
const SEEDED = 300;
const COLUMNS = [
  { name: '_id', type: 'STRING', mongo_field: '_id' },
  { name: 'n', type: 'INTEGER' },
  { name: 'meta', type: 'JSON' },
  { name: 'list', type: 'JSON', mode: 'REPEATED' },
];

const env = (): NodeJS.ProcessEnv => ({
  ...daemonEnv(DATASET, SETTINGS_DB),
  BIGQUERY_WRITER: 'insert-all',
  // The verifier waits for the checkpoint to pass its reads; an idle stream saves its position this often.
  IDLE_CHECKPOINT_INTERVAL_MS: '1000',
});

let mongo: MongoClient;
let clients: BigQueryClients;
let daemon: DaemonProcess | undefined;
let items: Collection<Document & { _id: number }>;

interface Ids {
  count: number;
  ids: string[];
}
interface Report {
  documentsChecked: number;
  missing: Ids;
  extra: Ids;
  differing: Ids;
  differingRanges: unknown[];
  bytesScanned: number;
}
interface Outcome {
  before: Report;
  repair?: { ranges: unknown[]; result: { documents: number; deletes: number } | null };
  after: Report | null;
}

/** `mongo-bigquery-archiver verify items --json <args>` as its own process. */
async function verifyCli(args: readonly string[]): Promise<{ code: number | null; stdout: string }> {
  const { code, stdout } = await runCli(['verify', 'items', '--json', ...args], env(), { stderr: 'inherit' });
  return { code, stdout };
}

const seed = (i: number) => ({
  _id: i,
  n: i,
  meta: { k: i, tags: ['a', 'é'] },
  extra: { note: `seed-${String(i)}`, at: [1, 2.5] },
  list: [{ i, half: i / 2 }, 'é', [i]],
});
const id = (n: number) => docIdString(n);
const target = () => ({
  mongo,
  clients,
  db: DB,
  collection: 'items',
  dataset: DATASET,
  table: 'items',
  fields: ['n'],
});

beforeAll(async () => {
  mongo = new MongoClient(process.env.MBA_TEST_MONGODB_URI ?? '');
  await mongo.connect();
  clients = await emulatorClients();
  items = mongo.db(DB).collection('items');
  await items.insertMany(Array.from({ length: SEEDED }, (_, i) => seed(i)));
  await mongo.db(SETTINGS_DB).collection<{ _id: string } & Document>(SETTINGS_COLLECTION).insertOne({
    _id: 'items',
    mongo_database: DB,
    mongo_collection: 'items',
    bigquery_table: 'items',
    backfill_full_collection: true,
    capture_unmapped: true,
    schema_evolution: 'off',
    columns: COLUMNS,
  });
  daemon = spawnDaemon(env());
  await waitForState(mongo, SETTINGS_DB, 'items', ['streaming'], 120_000);
  await viewMatchesCollection(target());
}, 180_000);

afterAll(async () => {
  daemon?.child.kill('SIGKILL');
  await clients.bigquery
    .dataset(DATASET)
    .delete({ force: true })
    .catch(() => undefined);
  await clients.close();
  await mongo.close();
});

describe('verify compares JSON columns and _unmapped by content', () => {
  it('reports nothing while a writer changes the JSON values during the verify', async () => {
    const [unmapped] = await clients.bigquery.query({
      query: `SELECT COUNT(*) AS n FROM \`${clients.projectId}.${DATASET}.items_view\` WHERE _unmapped IS NOT NULL AND meta IS NOT NULL`,
    });
    // Every document has both: `extra` waits in `_unmapped`, `meta` is in its JSON column.
    expect((unmapped as { n: number }[])[0]?.n).toBe(SEEDED);
    const stop = new AbortController();
    const writer = (async () => {
      let ops = 0;
      while (!stop.signal.aborted) {
        const i = (ops * 37) % SEEDED;
        await items.updateOne(
          { _id: i },
          [
            { $set: { 'extra.note': `written-${String(ops)}` } },
            { $set: { 'meta.k': ops, 'meta.more': { x: ops / 2 } } },
            { $set: { list: [{ i, half: ops / 2 }, 'é', [ops]] } },
          ][ops % 3] ?? {},
        );
        ops++;
        await sleep(20);
      }
      return ops;
    })();
    try {
      const { code, stdout } = await verifyCli(['--ranges', '4', '--settle-timeout', '60']);
      const report = JSON.parse(stdout) as Report;
      expect(report.missing.count + report.extra.count + report.differing.count).toBe(0);
      expect(report.documentsChecked).toBe(SEEDED);
      expect(code).toBe(EXIT.ok);
    } finally {
      stop.abort();
      expect(await writer).toBeGreaterThan(0);
    }
  }, 180_000);

  it('names the documents whose _unmapped field, JSON column or REPEATED JSON element alone changed while the daemon was stopped', async () => {
    await viewMatchesCollection(target());
    daemon?.child.kill('SIGTERM');
    await daemon?.exited;
    daemon = undefined;
    // Only a field that lands in `_unmapped` (10, 150), only the JSON column (200), only one element of the
    // REPEATED JSON column (120: the same number of elements, so its SQL row hash is unchanged).
    await items.updateOne({ _id: 10 }, { $set: { 'extra.note': 'changed while stopped' } });
    await items.updateOne({ _id: 150 }, { $set: { 'extra.at': [1, 2.5, 3] } });
    await items.updateOne({ _id: 200 }, { $set: { 'meta.k': -200 } });
    await items.updateOne({ _id: 120 }, { $set: { list: [{ i: 120, half: -60 }, 'é', [120]] } });

    const { code, stdout } = await verifyCli(['--ranges', '4', '--settle-timeout', '3']);
    const report = JSON.parse(stdout) as Report;
    expect(report.differing.ids).toEqual([id(10), id(120), id(150), id(200)].sort());
    expect(report.missing.count + report.extra.count).toBe(0);
    expect(code).toBe(EXIT.differences);
  }, 180_000);

  it('ignores history rows whose JSON text is only respelt, and repairs those whose JSON content differs', async () => {
    // The daemon streams what changed while it was stopped.
    daemon = spawnDaemon(env());
    await waitForState(mongo, SETTINGS_DB, 'items', ['streaming'], 120_000);
    await viewMatchesCollection(target());
    const mapper = compileRowMapper(parseColumnSpecs(COLUMNS).columns);
    // Newer than every row the daemon wrote, older than the rows a repair writes (its snapshot comes later).
    const [latest] = await clients.bigquery.query({
      query: `SELECT MAX(_seq) AS s FROM \`${clients.projectId}.${DATASET}.items\``,
    });
    const seq = `${String((latest as { s: string }[])[0]?.s)}z`;
    type Text = (text: string) => string;
    /** A newer history row of document `n`: its row as the daemon maps it, its JSON texts made over. */
    const newer = async (n: number, meta: Text, unmapped: Text, list: Text = (text) => text) => {
      const doc = await items.findOne({ _id: n });
      if (doc === null) throw new Error(`document ${String(n)} is gone`);
      const row = mapper.map(doc).row;
      const docId = id(n);
      return {
        ...row,
        meta: meta(String(row.meta)),
        list: (row.list as string[]).map(list),
        _unmapped: unmapped(String(row._unmapped)),
        _doc_id: docId,
        _seq: seq,
        _event_id: `newer-${docId}`,
        operationType: 'update',
        _cluster_time: new Date().toISOString(),
        time_archived: new Date().toISOString(),
      };
    };
    /** The same content, another text: keys reversed, spaces, `1.0` for `1`, `\u00e9` for `é`. */
    const respelt = (text: string): string => {
      const write = (v: unknown): string => {
        if (typeof v === 'number') return Number.isInteger(v) ? `${String(v)}.0` : v.toExponential();
        if (typeof v === 'string') return JSON.stringify(v).replaceAll('é', '\\u00e9');
        if (Array.isArray(v)) return `[ ${v.map(write).join(' , ')} ]`;
        if (v !== null && typeof v === 'object') {
          const members = Object.entries(v).reverse();
          return `{\n  ${members.map(([k, x]) => `${JSON.stringify(k)} : ${write(x)}`).join(',\n  ')} }`;
        }
        return JSON.stringify(v);
      };
      return write(JSON.parse(text));
    };
    /** Other content: a key added. */
    const changed = (text: string): string =>
      JSON.stringify({ ...(JSON.parse(text) as Record<string, unknown>), added: 1 });
    const same: Text = (text) => text;
    /** Other content in the first element only (an object); the others as they are. */
    const firstChanged: Text = (text) => (text.startsWith('{') ? changed(text) : text);
    // 60 and 61: the same content as MongoDB, respelt (`list`'s elements too); 90: `_unmapped` differs;
    // 250: `meta` differs; 270: one element of `list` differs.
    const rows = [
      await newer(60, respelt, respelt, respelt),
      await newer(61, respelt, respelt, respelt),
      await newer(90, same, changed),
      await newer(250, changed, same),
      await newer(270, same, same, firstChanged),
    ];
    expect(rows[0]?.meta).not.toBe(mapper.map((await items.findOne({ _id: 60 })) ?? {}).row.meta);
    await clients.bigquery
      .dataset(DATASET)
      .table('items')
      .insert(
        rows.map((json) => ({ insertId: json._event_id, json })),
        { raw: true },
      );

    const { code, stdout } = await verifyCli([
      '--ranges',
      '4',
      '--settle-timeout',
      '60',
      '--repair',
      '--repair-timeout',
      '240',
    ]);
    const outcome = JSON.parse(stdout) as Outcome;
    expect(outcome.before.differing.ids).toEqual([id(90), id(250), id(270)].sort());
    expect(outcome.before.missing.count + outcome.before.extra.count).toBe(0);
    // Only the narrowed ranges around the two documents are copied again.
    const written = (outcome.repair?.result?.documents ?? 0) + (outcome.repair?.result?.deletes ?? 0);
    expect(written).toBeLessThan(SEEDED / 4);
    process.stdout.write(
      `verify --repair of 3 JSON-only differences wrote ${String(written)} rows over ${String(outcome.repair?.ranges.length)} ranges; a full copy writes ${String(SEEDED)}\n`,
    );
    expect(outcome.after?.differing.count).toBe(0);
    expect(outcome.after?.missing.count).toBe(0);
    expect(outcome.after?.extra.count).toBe(0);
    expect(code).toBe(EXIT.ok);
  }, 400_000);
});
