import { MongoClient, type MongoClientOptions } from 'mongodb';
import { createBigQueryClients, type BigQueryClients } from '../bigquery/client.js';
import { type WriterDecorator } from '../bigquery/destination.js';
import { type StorageWriteTarget } from '../bigquery/storage-write-writer.js';
import { workerThreads, type BootstrapConfig } from '../config/bootstrap.js';
import { parseMappingSettings } from '../config/settings.js';
import { ConfigError } from '../errors.js';
import { Slots } from '../core/slots.js';
import { Supervisor } from '../core/supervisor.js';
import { sampleDocuments } from '../mongodb/sampler.js';
import { MongoLeaseStore } from '../mongodb/lease-store.js';
import { MongoSettingsStore } from '../mongodb/settings-store.js';
import { startHealthServer } from '../observability/health-server.js';
import { scrubText, supervisorLog, type Logger } from '../observability/logger.js';
import { Metrics } from '../observability/metrics.js';
import { availableCores } from '../observability/runtime.js';
import { BSON_DECODE_OPTIONS } from '../base/bson-kind.js';
import { createMappingRunner, type ChangeSourceDecorator } from './mapping-runner.js';
import { rawChangeStreamsUnavailable } from '../mongodb/raw-change-source.js';
import { EncoderPool } from '../workers/prepare.js';

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

/** The client options of the daemon for connection string `uri`. */
export function mongoClientOptions(uri: string): MongoClientOptions {
  // A value in the connection string wins (the options object would override it).
  const ownSocketTimeout = /[?&]sockettimeoutms=/i.test(uri);
  return {
    // Regexes stay BSONRegExp (BSON_DECODE_OPTIONS): the default decoding loses MongoDB options.
    ...BSON_DECODE_OPTIONS,
    appName: 'mongo-bigquery-archiver',
    ...(!ownSocketTimeout && { socketTimeoutMS: DEFAULT_MONGO_SOCKET_TIMEOUT_MS }),
  };
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
  const mongo = connectMongo(config);
  await mongo.connect();
  logger.info({ mongo: scrubText(config.MONGO_CLIENT) }, 'connected to MongoDB');
  const target: StorageWriteTarget =
    config.BIGQUERY_EMULATOR_ENDPOINT !== undefined ? config.BIGQUERY_EMULATOR_KIND : 'bigquery';
  const bigquery: BigQueryClients = await createBigQueryClients(bigQueryConnection(config)).catch(
    async (error: unknown) => {
      await mongo.close();
      throw error;
    },
  );
  const threads = workerThreads(config, availableCores());
  // Shared by every mapping. The change streams are read raw for them, unless a raw cursor cannot do what
  // the driver's would (mongos or a load balancer route its getMores anew; a secondary read preference):
  // the streams are then read decoded here, and only the backfill uses the workers.
  const encoderPool = threads > 0 ? new EncoderPool({ threads }) : undefined;
  const rawUnavailable = encoderPool
    ? await rawChangeStreamsUnavailable(mongo, signal).catch(async (error: unknown) => {
        await Promise.all([encoderPool.close(), bigquery.close(), mongo.close()]);
        throw error;
      })
    : undefined;
  logger.info(
    {
      workerThreads: threads,
      ...(rawUnavailable !== undefined && { changeStreamsDecodedHere: rawUnavailable }),
    },
    threads > 0
      ? 'decoding, mapping and encoding on worker threads'
      : 'decoding, mapping and encoding on the main thread (WORKER_THREADS)',
  );
  const metrics = new Metrics();
  // One line for every mapping of the daemon: at most this many prepare their tables or copy at once.
  const preparing = new Slots(config.MAX_MAPPINGS_PREPARING, (state) => {
    metrics.preparing(state);
  });
  const store = new MongoSettingsStore(mongo, {
    database: config.SETTINGS_DATABASE,
    collection: config.SETTINGS_COLLECTION,
    pollMs: config.SETTINGS_POLL_INTERVAL_MS,
  });
  if (config.SETTINGS_DATABASE === 'config') {
    logger.warn(
      'settings are in the `config` database: Atlas and real clusters restrict it; prefer a normal database (SETTINGS_DATABASE)',
    );
  }
  // Mappings are shared with the other instances through leases next to the settings.
  const leases = new MongoLeaseStore(
    mongo.db(config.SETTINGS_DATABASE).collection(`${config.SETTINGS_COLLECTION}_leases`),
    { ttlMs: config.LEASE_TTL_MS },
  );
  logger.info({ instance: leases.owner, leaseTtlMs: leases.ttlMs }, 'sharing mappings through leases');
  const supervisor = new Supervisor({
    store,
    parseSettings: parseMappingSettings,
    leases,
    runMapping: createMappingRunner({
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
      ...(encoderPool && { encoderPool }),
      ...(rawUnavailable !== undefined && { rawChangeStreamsUnavailable: rawUnavailable }),
    }),
    log: supervisorLog(logger),
    onStatus: (id, status) => {
      metrics.mappingState(id, status.state);
    },
    onRemoved: (id) => {
      metrics.forgetMapping(id).catch((error: unknown) => {
        logger.warn({ mapping: id, err: error }, 'could not drop the metrics of a removed mapping');
      });
    },
  });
  const health = await startHealthServer({
    port: config.METRICS_PORT,
    host: config.METRICS_HOST,
    metrics,
    readiness: () => supervisor.ready(),
    liveness: () => supervisor.health(),
    logger,
  });
  logger.info({ port: health.port, host: config.METRICS_HOST }, 'metrics and health endpoints listening');
  const done = supervisor.run(signal).finally(async () => {
    await health.close();
    await encoderPool?.close();
    await bigquery.close();
    await mongo.close();
    logger.info('archiver stopped');
  });
  return { supervisor, metricsPort: health.port, done };
}
