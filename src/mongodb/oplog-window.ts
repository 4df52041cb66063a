import { type Collection, type Document, type MongoClient } from 'mongodb';
import { bsonKind, isDocument } from '../base/bson-kind.js';
import { within } from '../core/deadline.js';
import { type OplogWindow, type OplogWindowReading } from '../core/oplog-headroom.js';
import { settingsIdString } from '../core/settings.js';
import { DEFAULT_MONGO_OPERATION_TIMEOUT_MS } from './bounded.js';
import { toClusterTime } from './change-event.js';
import { codeOf, MONGO_CODES, mongoBoundary } from './error-mapping.js';
import { helloOf } from './raw-change-source.js';

/*
 * How the oplog window is read, cheaply and with the least privilege that allows it:
 *
 * 1. `hello`: behind mongos (`msg: 'isdbgrid'`) the shards' oplogs are out of reach (`local` cannot be read
 *    through mongos, and each shard has its own oplog), so the guard is off there. A server that is no
 *    replica set member (no `setName`) has no oplog that change streams could depend on: a standalone
 *    MongoDB has none at all, and the MongoDB stand-in of the tests (mongo-java-server) keeps a
 *    `local.oplog.rs` of its own that starts with the process and is never truncated, whose span would be
 *    taken for a dangerously short window. The guard is off there too, as `chooseStreamScope` does not trust
 *    such a server with a database-level stream.
 * 2. The oldest and newest entries of `local.oplog.rs`, as `rs.printReplicationInfo()` reads them:
 *    `find` sorted by `{ $natural: 1 }` and `{ $natural: -1 }`, limit 1, projecting `ts`. The oplog is a
 *    capped collection kept in insertion order, so each read touches one entry at one end, never a scan.
 *    Needs `find` on `local.oplog.rs`: the `read` role on `local` (what Atlas documents for oplog access)
 *    or `clusterMonitor` (which includes it).
 *    With it, `$collStats` of the oplog (the same privilege: `collStats` is in the `read` role) for its
 *    size and configured maximum (`storageStats.size`, `maxSize`): an oplog that is not full yet has
 *    dropped nothing, and its short window is no threat (OPLOG_FILLING_SHARE). Without them (refused, or an
 *    older server), the oplog is taken as full, the cautious reading.
 * 3. Only when the find is refused (Unauthorized, 13): `serverStatus` with its `oplog` section, which is off by
 *    default and reports `earliestOptime` (the first entry, read the same way) and `latestOptime` (the last
 *    applied, in memory). Needs the `serverStatus` action (`clusterMonitor`).
 *
 * An empty or absent `local.oplog.rs` (a member still in initial sync) is no window either. Any other failure (network, election, a bound running out) is thrown, classified as usual:
 * the guard tries again at its next poll.
 */

/** The three answers the reading needs; the daemon's is `mongoOplogProbe`, tests give recorded answers. */
export interface OplogProbe {
  hello(signal: AbortSignal): Promise<Document>;
  /** The oldest (`1`) or newest (`-1`) oplog entry, projected to `ts`; null when the oplog is empty or absent. */
  oplogEntry(order: 1 | -1, signal: AbortSignal): Promise<Document | null>;
  /** `serverStatus` with its `oplog` section. */
  serverStatus(signal: AbortSignal): Promise<Document>;
  /** `$collStats` of `local.oplog.rs`, its `storageStats` projected to `size` and `maxSize`. */
  oplogStats(signal: AbortSignal): Promise<Document | null>;
}

/** The probe of a connected client, each answer bounded like any bookkeeping read. */
export function mongoOplogProbe(client: MongoClient): OplogProbe {
  const oplog: Collection = client.db('local').collection('oplog.rs');
  return {
    hello: (signal) => helloOf(client, within(signal, DEFAULT_MONGO_OPERATION_TIMEOUT_MS)),
    oplogEntry: (order, signal) =>
      oplog.findOne(
        {},
        {
          sort: { $natural: order },
          projection: { _id: 0, ts: 1 },
          signal: within(signal, DEFAULT_MONGO_OPERATION_TIMEOUT_MS),
        },
      ),
    oplogStats: (signal) =>
      oplog
        .aggregate(
          [
            { $collStats: { storageStats: {} } },
            { $project: { 'storageStats.size': 1, 'storageStats.maxSize': 1 } },
          ],
          { signal: within(signal, DEFAULT_MONGO_OPERATION_TIMEOUT_MS) },
        )
        .next(),
    serverStatus: (signal) =>
      client
        .db('admin')
        .command(
          { serverStatus: 1, oplog: 1 },
          { signal: within(signal, DEFAULT_MONGO_OPERATION_TIMEOUT_MS) },
        ),
  };
}

/** Cluster time seconds of a BSON Timestamp; undefined for anything else. */
function timestampSeconds(value: unknown): number | undefined {
  return bsonKind(value) === 'Timestamp' ? toClusterTime(value).t : undefined;
}

/** The window from the oldest and newest oplog entries (`{ ts: Timestamp }` each); undefined without both. */
export function windowFromOplogEntries(
  first: Document | null,
  last: Document | null,
  source: string,
): OplogWindow | undefined {
  const firstSeconds = timestampSeconds(first?.ts);
  const lastSeconds = timestampSeconds(last?.ts);
  if (firstSeconds === undefined || lastSeconds === undefined) return undefined;
  return { source, firstSeconds, lastSeconds };
}

/** The oplog's size and maximum from a `$collStats` answer; undefined without both. */
export function sizeFromCollStats(stats: Document | null): OplogWindow['size'] {
  const storage: unknown = stats?.storageStats;
  if (!isDocument(storage)) return undefined;
  const bytes = Number(storage.size);
  const maxBytes = Number(storage.maxSize);
  return Number.isFinite(bytes) && Number.isFinite(maxBytes) && maxBytes > 0
    ? { bytes, maxBytes }
    : undefined;
}

/**
 * The oplog's size, or undefined when the server does not tell it (a refusal, an older server): the size
 * only softens the verdict, so its absence is no failure of the reading.
 */
async function oplogSize(probe: OplogProbe, signal: AbortSignal): Promise<OplogWindow['size']> {
  try {
    return sizeFromCollStats(await probe.oplogStats(signal));
  } catch (error) {
    if (signal.aborted) throw error;
    return undefined;
  }
}

function withSize(window: OplogWindow, size: OplogWindow['size']): OplogWindow {
  return size ? { ...window, size } : window;
}

/** The window from a `serverStatus` reply's `oplog` section; undefined when it has none (not a replica set). */
export function windowFromServerStatus(reply: Document, source: string): OplogWindow | undefined {
  const section: unknown = reply.oplog;
  if (!isDocument(section)) return undefined;
  const firstSeconds = timestampSeconds(section.earliestOptime);
  const lastSeconds = timestampSeconds(section.latestOptime);
  if (firstSeconds === undefined || lastSeconds === undefined) return undefined;
  return { source, firstSeconds, lastSeconds };
}

const UNAUTHORIZED_MESSAGE =
  'the MongoDB user may read neither local.oplog.rs nor serverStatus: grant it the read role on the ' +
  'local database, or clusterMonitor';

function unauthorized(error: unknown): boolean {
  return codeOf(error) === MONGO_CODES.Unauthorized;
}

/**
 * Reads the source's oplog window through `probe` (see the comment at the top of this file for how and
 * with which privileges). A server that does not tell it is an `unavailable` reading with the reason;
 * other failures are thrown, wrapped as every MongoDB failure of the adapter.
 */
export function readOplogWindow(probe: OplogProbe, signal: AbortSignal): Promise<OplogWindowReading> {
  return mongoBoundary(async () => {
    const hello = await probe.hello(signal);
    if (hello.msg === 'isdbgrid') {
      return {
        kind: 'unavailable',
        reason: 'mongos',
        message:
          'connected through mongos: each shard has its own oplog, which mongos does not show; watch each shard’s oplog window with your MongoDB monitoring',
      };
    }
    if (typeof hello.setName !== 'string') {
      return {
        kind: 'unavailable',
        reason: 'no-oplog',
        message:
          'the server is not a replica set member (hello reports no setName): it has no oplog to watch',
      };
    }
    const source = hello.setName;
    try {
      const first = await probe.oplogEntry(1, signal);
      const last = first === null ? null : await probe.oplogEntry(-1, signal);
      const window = windowFromOplogEntries(first, last, source);
      if (window) return { kind: 'window', window: withSize(window, await oplogSize(probe, signal)) };
      return {
        kind: 'unavailable',
        reason: 'no-oplog',
        message:
          'the server has no oplog (local.oplog.rs is absent or empty): it is not a replica set member',
      };
    } catch (error) {
      if (!unauthorized(error)) throw error;
    }
    try {
      const window = windowFromServerStatus(await probe.serverStatus(signal), source);
      if (window) return { kind: 'window', window };
      return {
        kind: 'unavailable',
        reason: 'no-oplog',
        message: 'serverStatus reports no oplog section: the server is not a replica set member',
      };
    } catch (error) {
      if (!unauthorized(error)) throw error;
      return { kind: 'unavailable', reason: 'unauthorized', message: UNAUTHORIZED_MESSAGE };
    }
  });
}

/**
 * Where a stored checkpoint (a document of the checkpoints collection) resumes its stream, in cluster time
 * seconds: its position, or, for a backfill that saved none yet, the snapshot start (the stream starts
 * there). Undefined when it has neither (a mapping that never started).
 */
export function resumeSecondsOf(checkpoint: Document): number | undefined {
  const position: unknown = checkpoint.position;
  const fromPosition = isDocument(position) ? timestampSeconds(position.clusterTime) : undefined;
  if (fromPosition !== undefined) return fromPosition;
  const backfill: unknown = checkpoint.backfill;
  return isDocument(backfill) ? timestampSeconds(backfill.snapshotStart) : undefined;
}

/**
 * The resume point of every mapping of `ids` that has one, from the checkpoints collection: one read for all
 * of them, each document projected to the two times that matter. The saved checkpoint is what a restart
 * resumes from, so it is what the oplog must still hold.
 */
export function readResumePoints(
  checkpoints: Collection,
  ids: readonly string[],
  signal: AbortSignal,
): Promise<ReadonlyMap<string, number>> {
  return mongoBoundary(async () => {
    const wanted = new Set(ids);
    const points = new Map<string, number>();
    if (wanted.size === 0) return points;
    const docs = await checkpoints
      .find(
        {},
        {
          projection: { 'position.clusterTime': 1, 'backfill.snapshotStart': 1 },
          signal: within(signal, DEFAULT_MONGO_OPERATION_TIMEOUT_MS),
        },
      )
      .toArray();
    for (const doc of docs) {
      const id = settingsIdString(doc._id);
      const seconds = resumeSecondsOf(doc);
      if (wanted.has(id) && seconds !== undefined) points.set(id, seconds);
    }
    return points;
  });
}
