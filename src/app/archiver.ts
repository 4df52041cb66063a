import { MongoClient, type MongoClientOptions } from 'mongodb';
import { createBigQueryClients, type BigQueryClients, type BigQueryConnection } from '../bigquery/client.js';
import { describeBigQueryFailure } from '../bigquery/connectivity.js';
import { type WriterDecorator } from '../bigquery/destination.js';
import { BigQueryViewReader } from '../bigquery/view-reader.js';
import { type StorageWriteTarget } from '../bigquery/storage-write-writer.js';
import { workerThreads, type BootstrapConfig } from '../config/bootstrap.js';
import { parseMappingSettings } from '../config/settings.js';
import { BigQueryError, ConfigError, SettingsError } from '../errors.js';
import { Slots } from '../core/slots.js';
import { Supervisor } from '../core/supervisor.js';
import { sampleDocuments } from '../mongodb/sampler.js';
import { MongoLeaseStore } from '../mongodb/lease-store.js';
import { MongoSettingsStore } from '../mongodb/settings-store.js';
import { describeMongoConnectFailure } from '../mongodb/connectivity.js';
import { MongoDbError, classifyMongoError } from '../mongodb/error-mapping.js';
import { startHealthServer } from '../observability/health-server.js';
import { scrubText, supervisorLog, type Logger } from '../observability/logger.js';
import { Metrics } from '../observability/metrics.js';
import { availableCores } from '../observability/runtime.js';
import { BSON_DECODE_OPTIONS } from '../base/bson-kind.js';
import { createMappingRunner, type ChangeSourceDecorator } from './mapping-runner.js';
import { chooseStreamScope, DatabaseStreams } from './database-streams.js';
import { MongoDatabaseStreamSource } from '../mongodb/database-stream.js';
import { rawChangeStreamsUnavailable } from '../mongodb/raw-change-source.js';
import { EncoderPool } from '../workers/prepare.js';
import {
  checkpointsCollectionName,
  readRepairState,
  recordVerification,
} from '../mongodb/checkpoint-store.js';
import { mongoOplogProbe, readOplogWindow, readResumePoints } from '../mongodb/oplog-window.js';
import { OplogGuard } from './oplog-guard.js';
import { settingsIdString, type MappingSettings } from '../core/settings.js';
import { type MappingVerifier, type ViewReader } from '../core/verify-model.js';
import { type IdRange } from '../core/ports.js';
import { type ColumnSpec } from '../schema/types.js';
import { BackgroundVerifier, verificationSummary, type VerifyCandidate } from './background-verifier.js';
import { requestRepair } from './repair.js';

export interface RunningArchiver {
  readonly supervisor: Supervisor;
  readonly metricsPort: number;
  /** Resolves when the archiver stopped after `signal` aborted (every mapping flushed and checkpointed). */
  readonly done: Promise<void>;
}

/** What an in-process archiver in a test may replace; the daemon (`run`) passes none. */
export interface ArchiverSeams {
  /** Wraps every history-table writer, for fault injection in front of the emulator. */
  readonly decorateWriter?: WriterDecorator;
  /** Wraps every mapping's change source, for fault injection in front of MongoDB (a short oplog window). */
  readonly decorateChangeSource?: ChangeSourceDecorator;
  /** How mappings are verified and their views read, given the daemon's clients; default: viewReaderOnly. */
  readonly verification?: (clients: {
    readonly mongo: MongoClient;
    readonly bigquery: BigQueryClients;
    readonly config: BootstrapConfig;
  }) => VerificationWiring;
}

/** The verify side of the daemon: a reader of each mapping's view, and its verifier. */
export interface VerificationWiring {
  /** The reader of a mapping's `<table>_view`, whose table has `columns`. */
  readonly viewReader: (settings: MappingSettings, columns: readonly ColumnSpec[]) => ViewReader;
  /** Without it, `on_history_lost: repair` fails as `fail` does, and no background verifier runs. */
  readonly verifier?: (settings: MappingSettings) => MappingVerifier;
}

/**
 * What the daemon reads views with when it is given no verification wiring: the BigQuery reader of each
 * mapping's view, and no verifier (the `run` command passes `daemonVerification`, which has both).
 */
export function viewReaderOnly(clients: {
  readonly bigquery: BigQueryClients;
  readonly config: BootstrapConfig;
}): VerificationWiring {
  return {
    viewReader: (settings, columns) =>
      new BigQueryViewReader({
        bigquery: clients.bigquery.bigquery,
        projectId: clients.bigquery.projectId,
        datasetId: settings.bigqueryDataset ?? clients.config.BIGQUERY_DATASET,
        table: settings.bigqueryTable,
        columns,
      }),
  };
}

/** Where BigQuery is, from the bootstrap configuration. */
export function bigQueryConnection(config: BootstrapConfig) {
  if (config.BIGQUERY_EMULATOR_ENDPOINT !== undefined) {
    const grpc = config.BIGQUERY_EMULATOR_GRPC;
    if (grpc === undefined)
      throw new ConfigError(
        'BIGQUERY_EMULATOR_GRPC is missing: it must be set with BIGQUERY_EMULATOR_ENDPOINT',
      );
    const [host = '', port = ''] = grpc.split(':');
    return {
      kind: 'emulator' as const,
      projectId: config.BIGQUERY_PROJECT,
      apiEndpoint: config.BIGQUERY_EMULATOR_ENDPOINT,
      grpcHost: host,
      grpcPort: Number(port),
    };
  }
  return {
    kind: 'google' as const,
    projectId: config.BIGQUERY_PROJECT,
    ...(config.SERVICE_ACCOUNT_FILE !== undefined && { keyFilename: config.SERVICE_ACCOUNT_FILE }),
  };
}

/**
 * The longest the client waits on a socket for an answer (`socketTimeoutMS`) unless the connection string
 * says otherwise. Without it a connection that stopped answering (half-open) holds its operation until the
 * operating system's keepalive gives up on it, often a quarter of an hour later. Change streams wait at most
 * 1 s per getMore (maxAwaitTimeMS), bookkeeping writes at most 30 s (they carry their own bound); this is the
 * backstop for reads, far above a slow backfill or sampling batch on a large collection. The driver's
 * per-operation `timeoutMS` is no longer an option: it has no effect in driver 7.
 */
export const DEFAULT_MONGO_SOCKET_TIMEOUT_MS = 10 * 60_000;

/** How the daemon's connections name themselves to the server (in its logs and `currentOp`). */
const APP_NAME = 'mongo-bigquery-archiver';

/** The client options of the daemon for connection string `uri`. */
export function mongoClientOptions(uri: string): MongoClientOptions {
  // A value in the connection string wins (the options object would override it).
  const ownSocketTimeout = /[?&]sockettimeoutms=/i.test(uri);
  return {
    // Regexes stay BSONRegExp (BSON_DECODE_OPTIONS): the default decoding loses MongoDB options.
    ...BSON_DECODE_OPTIONS,
    appName: APP_NAME,
    ...(!ownSocketTimeout && { socketTimeoutMS: DEFAULT_MONGO_SOCKET_TIMEOUT_MS }),
  };
}

/**
 * The bookkeeping client's pool unless the connection string sets `maxPoolSize`: settings reads and their
 * change stream, lease rounds, checkpoint and status writes, each short, none waiting on the server.
 */
export const DEFAULT_BOOKKEEPING_POOL_SIZE = 10;

/** The data client's pool before the mappings' share: the driver's own default. */
const DATA_POOL_BASE = 100;
/**
 * Per mapping: its change stream holds a connection for up to 1 s per idle read on a real server, and a
 * backfill or sampling read may run beside it.
 */
const DATA_POOL_PER_MAPPING = 2;

/** Connections the data client may open for `mappings` settings documents (see dataClientOptions). */
export function dataPoolSize(mappings: number): number {
  return DATA_POOL_BASE + DATA_POOL_PER_MAPPING * mappings;
}

/** A `maxPoolSize` in the connection string wins over ours (the options object would override it). */
function ownsPoolSize(uri: string): boolean {
  return /[?&]maxpoolsize=/i.test(uri);
}

/**
 * Options of the data client (change streams, backfill, sampling) for `mappings` settings documents listed
 * at start: the pool is sized so that every change stream can hold a connection and reads still get one.
 * Mappings added later share it.
 */
export function dataClientOptions(uri: string, mappings: number): MongoClientOptions {
  return {
    ...mongoClientOptions(uri),
    ...(!ownsPoolSize(uri) && { maxPoolSize: dataPoolSize(mappings) }),
  };
}

/**
 * Options of the bookkeeping client (settings, leases, checkpoints): the data client's, with a small pool of
 * its own, so that a lease renewal or a checkpoint save never waits for a connection behind the change
 * streams, and an appName of its own (`-bookkeeping`), which tells its connections apart on the server.
 */
export function bookkeepingClientOptions(uri: string): MongoClientOptions {
  return {
    ...mongoClientOptions(uri),
    appName: `${APP_NAME}-bookkeeping`,
    ...(!ownsPoolSize(uri) && { maxPoolSize: DEFAULT_BOOKKEEPING_POOL_SIZE }),
  };
}

/** The daemon's two MongoDB clients, connected, and the settings store on the bookkeeping one. */
export interface MongoClients {
  /** Change streams, backfills and sampling. */
  readonly data: MongoClient;
  /** Settings, leases and checkpoints. */
  readonly bookkeeping: MongoClient;
  readonly store: MongoSettingsStore;
  /** Closes both clients. */
  close(): Promise<void>;
}

/**
 * Connects the bookkeeping client, lists the settings documents through it once (to size the data client's
 * pool), then connects the data client.
 */
export async function connectMongoClients(
  config: BootstrapConfig,
  signal: AbortSignal,
): Promise<MongoClients> {
  const uri = config.MONGO_CLIENT;
  const bookkeeping = new MongoClient(uri, bookkeepingClientOptions(uri));
  let data: MongoClient | undefined;
  try {
    await connectNamingMongo(bookkeeping, uri);
    const store = new MongoSettingsStore(bookkeeping, {
      database: config.SETTINGS_DATABASE,
      collection: config.SETTINGS_COLLECTION,
      pollMs: config.SETTINGS_POLL_INTERVAL_MS,
    });
    const mappings = (await store.list(signal)).length;
    data = new MongoClient(uri, dataClientOptions(uri, mappings));
    await connectNamingMongo(data, uri);
    const both = [data, bookkeeping] as const;
    return {
      data,
      bookkeeping,
      store,
      close: async () => {
        await Promise.all(both.map((client) => client.close()));
      },
    };
  } catch (error) {
    await Promise.all([bookkeeping.close(), data?.close()]);
    throw error;
  }
}

/**
 * Connects `client`; a failure says which server, why and what to check (`MongoDB at h:27017 unreachable
 * (connection refused): check MONGO_CLIENT...`) instead of the driver's bare `connect ECONNREFUSED`, keeping
 * the driver's error as `cause`. The daemon cannot run without MongoDB: `run` exits with this line.
 */
export async function connectNamingMongo(client: MongoClient, uri: string): Promise<void> {
  try {
    await client.connect();
  } catch (error) {
    const waitedMs = client.options.serverSelectionTimeoutMS;
    throw new MongoDbError(classifyMongoError(error), describeMongoConnectFailure(error, uri, waitedMs), {
      cause: error,
    });
  }
}

export function connectMongo(config: BootstrapConfig): MongoClient {
  return new MongoClient(config.MONGO_CLIENT, mongoClientOptions(config.MONGO_CLIENT));
}

/**
 * The composition root of the daemon: MongoDB and BigQuery clients, settings store, supervisor, metrics
 * and health endpoints. Stops when `signal` aborts.
 */
export async function startArchiver(
  config: BootstrapConfig,
  logger: Logger,
  signal: AbortSignal,
  seams: ArchiverSeams = {},
): Promise<RunningArchiver> {
  const clients = await connectMongoClients(config, signal);
  // What this start opened, in order: a failure of any later step closes them all (the newest first), so a
  // failed start leaves no MongoDB client, BigQuery client or worker thread behind.
  const opened: (() => Promise<void>)[] = [() => clients.close()];
  try {
    return await startOnClients(config, logger, signal, seams, clients, opened);
  } catch (error) {
    await closeAll(opened);
    throw error;
  }
}

/** How long the start's BigQuery probe waits for an answer before it says BigQuery does not answer. */
const BIGQUERY_PROBE_TIMEOUT_MS = 10_000;

/**
 * Asks BigQuery once, at start, for the default dataset, and logs an error naming BigQuery and what to check
 * when that fails. The daemon goes on regardless: each mapping retries its own BigQuery requests (an outage
 * passes), but without this line an unreachable endpoint would show only as each mapping's bare failure.
 */
async function warnIfBigQueryUnreachable(
  clients: BigQueryClients,
  connection: BigQueryConnection,
  dataset: string,
  logger: Logger,
  signal: AbortSignal,
): Promise<void> {
  const probe = clients.bigquery.dataset(dataset).exists();
  const timeout = new Promise<'timeout'>((resolve) => {
    setTimeout(resolve, BIGQUERY_PROBE_TIMEOUT_MS, 'timeout').unref();
  });
  try {
    if ((await Promise.race([probe, timeout])) !== 'timeout' || signal.aborted) return;
    logger.error(
      { timeoutMs: BIGQUERY_PROBE_TIMEOUT_MS },
      describeBigQueryFailure(new Error('no answer: timed out'), connection, 'read the default dataset') +
        '; the mappings retry',
    );
  } catch (error) {
    if (signal.aborted) return;
    logger.error(
      { err: error },
      `${describeBigQueryFailure(error, connection, 'read the default dataset')}; the mappings retry`,
    );
  }
}

/**
 * Closes what `opened` holds, newest first, each even if another failed to close. A close that fails is
 * dropped on purpose: the caller rethrows the start's own failure, which it must not hide.
 */
async function closeAll(opened: (() => Promise<void>)[]): Promise<void> {
  for (const close of opened.reverse()) {
    await close().catch(() => undefined);
  }
}

/** `startArchiver` once the MongoDB clients are connected; whatever it opens it adds to `opened`. */
async function startOnClients(
  config: BootstrapConfig,
  logger: Logger,
  signal: AbortSignal,
  seams: ArchiverSeams,
  clients: MongoClients,
  opened: (() => Promise<void>)[],
): Promise<RunningArchiver> {
  // Change streams, backfills and sampling; the settings store, leases and checkpoints use the bookkeeping
  // client, whose connections these never hold.
  const mongo = clients.data;
  const store = clients.store;
  logger.info(
    {
      mongo: scrubText(config.MONGO_CLIENT),
      dataPoolSize: mongo.options.maxPoolSize,
      bookkeepingPoolSize: clients.bookkeeping.options.maxPoolSize,
    },
    'connected to MongoDB',
  );
  const target: StorageWriteTarget =
    config.BIGQUERY_EMULATOR_ENDPOINT !== undefined ? config.BIGQUERY_EMULATOR_KIND : 'bigquery';
  const connection = bigQueryConnection(config);
  const bigquery: BigQueryClients = await createBigQueryClients(connection).catch((error: unknown) => {
    // Credentials that cannot be loaded: nothing could ever be written, so the start fails, saying why.
    throw new BigQueryError('fatal', describeBigQueryFailure(error, connection, 'load the credentials'), {
      cause: error,
    });
  });
  opened.push(() => bigquery.close());
  void warnIfBigQueryUnreachable(bigquery, connection, config.BIGQUERY_DATASET, logger, signal);
  const threads = workerThreads(config, availableCores());
  // Shared by every mapping. The change streams are read raw for them, unless a raw cursor cannot do what
  // the driver's would (mongos or a load balancer route its getMores anew; a secondary read preference):
  // the streams are then read decoded here, and only the backfill uses the workers.
  const encoderPool = threads > 0 ? new EncoderPool({ threads }) : undefined;
  if (encoderPool) opened.push(() => encoderPool.close());
  const rawUnavailable = encoderPool ? await rawChangeStreamsUnavailable(mongo, signal) : undefined;
  logger.info(
    {
      workerThreads: threads,
      ...(rawUnavailable !== undefined && { changeStreamsDecodedHere: rawUnavailable }),
    },
    threads > 0
      ? 'decoding, mapping and encoding on worker threads'
      : 'decoding, mapping and encoding on the main thread (WORKER_THREADS)',
  );
  // Mappings share one change stream per source database where CHANGE_STREAM_SCOPE and the deployment allow
  // it; the fan-out of each database is made when its first mapping starts.
  const streamScope = await chooseStreamScope(mongo, config.CHANGE_STREAM_SCOPE, signal);
  logger.info(
    { changeStreamScope: streamScope.scope, reason: streamScope.reason },
    streamScope.scope === 'database'
      ? 'change streams: one per source database, shared by its mappings'
      : 'change streams: one per mapping',
  );
  const databaseStreams = new DatabaseStreams({
    scope: streamScope.scope,
    sharedSource: (database) =>
      new MongoDatabaseStreamSource(mongo, database, {
        onNotice: (message) => {
          logger.warn({ database }, message);
        },
      }),
    logger,
    signal,
  });
  const metrics = new Metrics();
  // One line for every mapping of the daemon: at most MAX_MAPPINGS_PREPARING prepare their tables at once,
  // and as many copy their collection. Two pools, so that long copies never hold up preparations (a start,
  // a restart after an error). The gauges show both pools together.
  const pools = { preparing: { held: 0, waiting: 0 }, copying: { held: 0, waiting: 0 } };
  const observe = (pool: keyof typeof pools) => (state: { held: number; waiting: number }) => {
    pools[pool] = state;
    metrics.preparing({
      held: pools.preparing.held + pools.copying.held,
      waiting: pools.preparing.waiting + pools.copying.waiting,
    });
  };
  const preparing = new Slots(config.MAX_MAPPINGS_PREPARING, observe('preparing'));
  const copying = new Slots(config.MAX_MAPPINGS_PREPARING, observe('copying'));
  if (config.SETTINGS_DATABASE === 'config') {
    logger.warn(
      'settings are in the `config` database: Atlas and real clusters restrict it; prefer a normal database (SETTINGS_DATABASE)',
    );
  }
  // Mappings are shared with the other instances through leases next to the settings.
  const leases = new MongoLeaseStore(
    clients.bookkeeping.db(config.SETTINGS_DATABASE).collection(`${config.SETTINGS_COLLECTION}_leases`),
    { ttlMs: config.LEASE_TTL_MS },
  );
  logger.info({ instance: leases.owner, leaseTtlMs: leases.ttlMs }, 'sharing mappings through leases');
  const verification = (seams.verification ?? viewReaderOnly)({ mongo, bigquery, config });
  const runMapping = createMappingRunner({
    mongo,
    bigquery,
    target,
    config,
    store,
    settingsCollection: store.collection,
    checkpointsCollection: store.checkpoints,
    sample: (collection, maxSamples, s) => sampleDocuments(collection, { maxSamples, signal: s }),
    logger,
    metrics,
    ...(seams.decorateWriter && { decorateWriter: seams.decorateWriter }),
    ...(seams.decorateChangeSource && { decorateChangeSource: seams.decorateChangeSource }),
    preparing,
    copying,
    ...(encoderPool && { encoderPool }),
    ...(rawUnavailable !== undefined && { rawChangeStreamsUnavailable: rawUnavailable }),
    databaseStreams,
    viewReader: verification.viewReader,
    ...(verification.verifier && { verifier: verification.verifier }),
  });
  const supervisor = new Supervisor({
    store,
    parseSettings: parseMappingSettings,
    leases,
    runMapping,
    log: supervisorLog(logger),
    onStatus: (id, status) => {
      metrics.mappingState(id, status.state);
    },
    onLeaseRound: ({ seconds, held }) => {
      metrics.leaseRound(seconds, held);
    },
    onRebalance: (seconds) => {
      metrics.rebalance(seconds);
    },
    onRemoved: (id) => {
      runMapping.forget(id);
      metrics.forgetMapping(id).catch((error: unknown) => {
        logger.warn({ mapping: id, err: error }, 'could not drop the metrics of a removed mapping');
      });
    },
  });
  const oplogGuard = createOplogGuard(config, clients, supervisor, metrics, logger);
  const health = await startHealthServer({
    port: config.METRICS_PORT,
    host: config.METRICS_HOST,
    metrics,
    readiness: () => oplogGuard.annotate(supervisor.ready()),
    liveness: () => supervisor.health(),
    logger,
  });
  logger.info({ port: health.port, host: config.METRICS_HOST }, 'metrics and health endpoints listening');
  const guarding = oplogGuard.run(signal);
  // One verification at a time for the whole daemon, of the mappings it streams whose settings ask for it.
  const verifier = verification.verifier;
  const verifying = verifier
    ? new BackgroundVerifier({
        states: () => supervisor.states(),
        candidates: (s) => verifyCandidates(store, s),
        verifier,
        record: (settings, report) =>
          recordVerification(store.checkpoints, settings.documentId, verificationSummary(report)),
        requestRepair: async (settings: MappingSettings, ranges: readonly IdRange[]) => {
          await requestRepair(clients.bookkeeping, config, settings.id, ranges, 'background');
        },
        log: logger,
        metrics,
      }).run(signal)
    : Promise.resolve();
  const done = Promise.all([supervisor.run(signal), verifying]).finally(async () => {
    await guarding;
    await health.close();
    await encoderPool?.close();
    await bigquery.close();
    await clients.close();
    logger.info('archiver stopped');
  });
  return { supervisor, metricsPort: health.port, done: done.then(() => undefined) };
}

/** Every valid mapping's settings, with when its last verification finished (kept with its checkpoint). */
async function verifyCandidates(store: MongoSettingsStore, signal: AbortSignal): Promise<VerifyCandidate[]> {
  const [entries, checkpoints] = await Promise.all([
    store.list(signal),
    store.checkpoints
      .find(
        {},
        { projection: { lastVerification: 1, repairRequests: 1, repair: 1, historyLostAt: 1 }, signal },
      )
      .toArray(),
  ]);
  const lastOf = new Map(
    checkpoints.map((doc) => {
      const last: unknown = doc.lastVerification;
      const at =
        typeof last === 'object' && last !== null && 'finishedAt' in last && last.finishedAt instanceof Date
          ? last.finishedAt
          : undefined;
      return [settingsIdString(doc._id), at] as const;
    }),
  );
  // A repair pending or running, or a verification owed after a lost history: no new repair request then.
  const owed = new Set(
    checkpoints
      .filter((doc) => {
        const state = readRepairState(doc);
        return state.pending.length > 0 || state.progress !== undefined || state.historyLostAt !== undefined;
      })
      .map((doc) => settingsIdString(doc._id)),
  );
  return entries.flatMap((entry) => {
    try {
      const settings = parseMappingSettings(entry.document);
      const withId = settings.id === entry.id ? settings : { ...settings, id: entry.id };
      const id = settingsIdString(entry.document._id);
      return [{ settings: withId, lastVerifiedAt: lastOf.get(id), repairOwed: owed.has(id) }];
    } catch (error) {
      // An invalid document does not run: the supervisor already reports it.
      if (error instanceof SettingsError) return [];
      throw error;
    }
  });
}

/**
 * The oplog headroom guard of the daemon (`run` polls until its signal aborts): the window through the data client
 * (the source's server), the resume points from the checkpoints collection, for the mappings this instance
 * runs (the supervisor's readiness detail, but the invalid ones, which run nothing).
 */
function createOplogGuard(
  config: BootstrapConfig,
  clients: MongoClients,
  supervisor: Supervisor,
  metrics: Metrics,
  logger: Logger,
): OplogGuard {
  const probe = mongoOplogProbe(clients.data);
  const checkpoints = clients.bookkeeping
    .db(config.SETTINGS_DATABASE)
    .collection(checkpointsCollectionName(config.SETTINGS_COLLECTION));
  return new OplogGuard({
    readWindow: (s) => readOplogWindow(probe, s),
    mappings: () =>
      Object.entries(supervisor.ready().detail)
        .filter(([, state]) => state !== 'invalid')
        .map(([id]) => id),
    resumePoints: (ids, s) => readResumePoints(checkpoints, ids, s),
    warnRatio: config.OPLOG_HEADROOM_WARN_RATIO,
    intervalMs: config.OPLOG_WINDOW_POLL_INTERVAL_MS,
    metrics,
    logger,
  });
}
