import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { MongoClient, type Document, type Timestamp } from 'mongodb';
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from 'vitest';
import { type BigQueryClients } from '../../../src/bigquery/client.js';
import { type StatusReport } from '../../../src/cli/status.js';
import { emulatorClients } from '../support/bigquery-clients.js';
import {
  daemonEnv,
  randomWorkload,
  type Item,
  SETTINGS_COLLECTION,
  spawnDaemon,
  viewMatchesCollection,
  type DaemonProcess,
} from '../support/daemon.js';

const suffix = randomBytes(3).toString('hex');
const DATASET = `leases_${suffix}`;
const SETTINGS_DB = `archiver_leases_${suffix}`;
const DB = `leasedb_${suffix}`;
const MAPPINGS = ['m0', 'm1', 'm2', 'm3'] as const;
const LEASE_TTL_MS = 3_000;
/** Renewals and takeovers happen every third of the TTL. */
const TICK_MS = LEASE_TTL_MS / 3;
let mongo: MongoClient;
let clients: BigQueryClients;
const daemons: DaemonProcess[] = [];

beforeAll(async () => {
  mongo = new MongoClient(process.env.MBA_TEST_MONGODB_URI ?? '');
  await mongo.connect();
  clients = await emulatorClients();
});

afterAll(async () => {
  for (const d of daemons) {
    d.child.kill('SIGCONT');
    d.child.kill('SIGKILL');
  }
  await mongo.close();
  await clients.close();
});

function start(): DaemonProcess {
  const daemon = spawnDaemon(
    {
      ...daemonEnv(DATASET, SETTINGS_DB),
      LEASE_TTL_MS: String(LEASE_TTL_MS),
      LOG_LEVEL: 'info',
      // insertAll: the paused owner must wake up with changes read and try to checkpoint them, to show the
      // refusal. Through Storage Write it sometimes learnt of its lost lease before reading anything, had
      // nothing to checkpoint and so no write to refuse (1 run in 3); the fencing itself does not depend on
      // the writer (checkpoints are MongoDB writes), and the crash and outage tests use Storage Write.
      BIGQUERY_WRITER: 'insert-all',
    },
    { capture: true },
  );
  daemons.push(daemon);
  return daemon;
}

interface Holder {
  readonly pid: number | undefined;
  readonly token: number;
}

/** Live owner (by process id) and token of each mapping's lease. */
async function holders(): Promise<Map<string, Holder>> {
  const docs = await mongo
    .db(SETTINGS_DB)
    .collection(`${SETTINGS_COLLECTION}_leases`)
    .find({ kind: 'mapping' })
    .toArray();
  const now = Date.now();
  return new Map(
    docs.map((d) => {
      const live = d.expiresAt instanceof Date && d.expiresAt.getTime() > now && typeof d.owner === 'string';
      const pid = live ? Number(String(d.owner).split('/')[1]) : undefined;
      return [String(d._id).replace(/^mapping:/, ''), { pid, token: Number(d.token) }];
    }),
  );
}

async function states(): Promise<Map<string, string>> {
  const docs = await mongo.db(SETTINGS_DB).collection(SETTINGS_COLLECTION).find({}).toArray();
  return new Map(docs.map((d) => [String(d._id), String((d.status as Document | undefined)?.state)]));
}

/** Waits until every mapping is streaming under a live lease whose owner satisfies `ok`. */
async function waitForOwners(
  ok: (owners: Map<string, number | undefined>) => boolean,
  timeoutMs = 60_000,
): Promise<Map<string, number | undefined>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const owners = new Map([...(await holders())].map(([id, h]) => [id, h.pid]));
    const streaming = [...(await states()).values()].filter((s) => s === 'streaming').length;
    if (owners.size === MAPPINGS.length && streaming === MAPPINGS.length && ok(owners)) return owners;
    if (Date.now() > deadline) {
      throw new Error(
        `owners never settled: ${JSON.stringify([...owners])}, states ${JSON.stringify([...(await states())])}`,
      );
    }
    await sleep(100);
  }
}

const count = (owners: Map<string, number | undefined>, pid: number | undefined) =>
  [...owners.values()].filter((p) => p === pid).length;

/** Samples every mapping's checkpoint until stopped; records any that moved back. */
function watchCheckpoints(stop: AbortSignal): Promise<{ samples: number; movedBack: string[] }> {
  const last = new Map<string, bigint>();
  const movedBack: string[] = [];
  let samples = 0;
  return (async () => {
    while (!stop.aborted) {
      const docs = await mongo
        .db(SETTINGS_DB)
        .collection(`${SETTINGS_COLLECTION}_checkpoints`)
        .find({})
        .toArray();
      for (const doc of docs) {
        const ts = (doc.position as Document | undefined)?.clusterTime as Timestamp | undefined;
        if (ts === undefined) continue;
        const value = ts.toBigInt();
        const id = String(doc._id);
        const before = last.get(id);
        if (before !== undefined && value < before) movedBack.push(`${id}: ${before} -> ${value}`);
        last.set(id, value);
      }
      samples++;
      await sleep(20);
    }
    return { samples, movedBack };
  })();
}

describe('several instances sharing the mappings through leases', () => {
  it('owns each mapping once, takes over from a killed instance within the TTL, fences a paused one out, hands over at once on SIGTERM, and loses nothing', async ({
    annotate,
  }) => {
    onTestFailed(() => {
      // What the daemons said (they log to a pipe): the warnings and errors, and each one's last lines.
      for (const d of daemons) {
        const lines = d.output().trimEnd().split('\n');
        const notable = lines.filter((l) => /"level":(40|50|60)/.test(l));
        process.stderr.write(
          `daemon ${String(d.child.pid)}: ${notable.length} warnings/errors, last ones:\n${notable.slice(-15).join('\n')}\n` +
            `last lines:\n${lines.slice(-10).join('\n')}\n`,
        );
      }
    });
    for (const m of MAPPINGS) {
      await mongo
        .db(DB)
        .collection<{ _id: number; n: number; label: string }>(m)
        .insertMany(Array.from({ length: 300 }, (_, i) => ({ _id: i, n: i, label: 'seed' })));
    }
    await mongo
      .db(SETTINGS_DB)
      .collection<{ _id: string } & Document>(SETTINGS_COLLECTION)
      .insertMany(
        MAPPINGS.map((m) => ({
          _id: m,
          mongo_database: DB,
          mongo_collection: m,
          bigquery_table: m,
          backfill_full_collection: true,
        })),
      );
    const stopWorkload = new AbortController();
    const writes = randomWorkload(
      { collections: MAPPINGS.map((m) => mongo.db(DB).collection<Item>(m)), seeded: 300 },
      stopWorkload.signal,
    );
    const stopWatching = new AbortController();
    const checkpoints = watchCheckpoints(stopWatching.signal);

    // Two instances: each mapping has one owner, and each instance has two.
    const a = start();
    const b = start();
    await waitForOwners((o) => count(o, a.child.pid) === 2 && count(o, b.child.pid) === 2);

    // kill -9 of `a`: `b` takes its mappings once their leases expire.
    const killedAt = Date.now();
    a.child.kill('SIGKILL');
    await a.exited;
    await waitForOwners((o) => count(o, b.child.pid) === 4);
    const takeoverMs = Date.now() - killedAt;
    // The last renewal was at most a TTL before the kill ends; `b` looks every tick.
    expect(takeoverMs).toBeLessThan(LEASE_TTL_MS + TICK_MS + 2_000);

    // A new instance joins: the mappings are shared again.
    const c = start();
    await waitForOwners((o) => count(o, b.child.pid) === 2 && count(o, c.child.pid) === 2);
    const pausedOwned = [...(await holders())].filter(([, h]) => h.pid === b.child.pid).map(([id]) => id);
    const tokensBefore = await holders();

    // `b` freezes past its leases (SIGSTOP); `c` takes them over, with newer tokens.
    b.child.kill('SIGSTOP');
    await waitForOwners((o) => count(o, c.child.pid) === 4);
    await sleep(2 * TICK_MS);
    b.child.kill('SIGCONT');
    // `b` wakes up believing it owns its mappings, finds out, and stops them; then the two share again.
    await waitForOwners((o) => count(o, b.child.pid) === 2 && count(o, c.child.pid) === 2, 90_000);

    stopWorkload.abort();
    const ops = await writes;
    expect(ops).toBeGreaterThan(100);
    for (const m of MAPPINGS) {
      const { rows, distinct } = await viewMatchesCollection({
        mongo,
        clients,
        db: DB,
        collection: m,
        dataset: DATASET,
        table: m,
        fields: ['n', 'label'],
      });
      expect(distinct).toBe(rows);
    }
    stopWatching.abort();
    const watched = await checkpoints;
    expect(watched.samples).toBeGreaterThan(50);
    // No checkpoint ever went back, although the paused owner tried to write where it had got to.
    expect(watched.movedBack).toEqual([]);
    const after = await holders();
    for (const id of pausedOwned) {
      expect(after.get(id)?.token).toBeGreaterThan(tokensBefore.get(id)?.token ?? Infinity);
    }
    const settings = await mongo.db(SETTINGS_DB).collection(SETTINGS_COLLECTION).find({}).toArray();
    const checkpointDocs = await mongo
      .db(SETTINGS_DB)
      .collection(`${SETTINGS_COLLECTION}_checkpoints`)
      .find({})
      .toArray();
    for (const doc of settings) {
      // The settings and the checkpoints carry the newest owner's token: older ones are refused.
      expect(Number((doc.status as Document).fence)).toBe(after.get(String(doc._id))?.token);
    }
    expect(checkpointDocs).toHaveLength(settings.length);
    for (const doc of checkpointDocs) expect(Number(doc.fence)).toBe(after.get(String(doc._id))?.token);
    // `status` names the owner of each mapping.
    const status = spawnSync(process.execPath, ['--import', 'tsx', 'src/main.ts', 'status', '--json'], {
      env: { ...process.env, ...daemonEnv(DATASET, SETTINGS_DB) },
      encoding: 'utf8',
    });
    expect(status.status).toBe(0);
    const { mappings } = JSON.parse(status.stdout) as StatusReport;
    expect(mappings).toHaveLength(MAPPINGS.length);
    for (const mapping of mappings) {
      expect(mapping.state).toBe('streaming');
      // Where it resumes, from the checkpoints collection.
      expect(mapping.position).toMatch(/^\d{4}-\d\d-\d\dT/);
      const owner = /^\S+\/(\d+)\//.exec(mapping.holder ?? '')?.[1];
      expect([String(b.child.pid), String(c.child.pid)]).toContain(owner);
    }
    const bLog = b.output();
    expect(bLog).toMatch(/lease lost to another instance/);
    // On waking, it read the changes made meanwhile and, stopping, tried to checkpoint them: refused.
    expect(bLog).toMatch(/write refused: a newer owner fenced this instance out/);
    // SIGTERM (a rolling update): `c` flushes, checkpoints and releases its leases, so `b` takes them at its
    // next look, well before they would have expired.
    const stoppedAt = Date.now();
    c.child.kill('SIGTERM');
    expect(await c.exited).toBe(0);
    await waitForOwners((o) => count(o, b.child.pid) === 4);
    const handoverMs = Date.now() - stoppedAt;
    expect(handoverMs).toBeLessThan(LEASE_TTL_MS);
    b.child.kill('SIGTERM');
    expect(await b.exited).toBe(0);
    await annotate(
      JSON.stringify({
        takeoverMs,
        handoverMs,
        ops,
        checkpointSamples: watched.samples,
        refusedWritesOfPausedOwner: (bLog.match(/fenced this instance out/g) ?? []).length,
        leaseLostLines: (bLog.match(/lease lost to another instance/g) ?? []).length,
      }),
    );
  }, 300_000);
});
