import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { MongoClient, type Collection } from 'mongodb';
import { createBigQueryClients, type BigQueryClients } from '../bigquery/client.js';
import { bigQueryWhere, describeBigQueryFailure } from '../bigquery/connectivity.js';
import { type BootstrapConfig } from '../config/bootstrap.js';
import { parseMappingSettings } from '../config/settings.js';
import { settingsIdString, type MappingSettings } from '../core/settings.js';
import { SettingsError, errorMessage } from '../errors.js';
import {
  connectFailingFast,
  describeMongoConnectFailure,
  describeMongoRefusal,
  mongoHosts,
} from '../mongodb/connectivity.js';
import { bigQueryConnection, mongoClientOptions } from './archiver.js';
import { CheckFailure, CheckSkipped, type Check, type CheckPass } from './checks.js';
import { historyTableConflicts } from './schema-check.js';

/**
 * The scratch table `validate` creates and drops in each existing target dataset to prove it writable. It
 * expires after this long, should the drop never arrive (the process killed in between).
 */
const SCRATCH_TABLE_TTL_MS = 60 * 60_000;
/** Scratch tables start with this; the rest is random, so that two runs never meet. */
export const SCRATCH_TABLE_PREFIX = '_mba_validate_';
/**
 * The driver gives up on server selection this much before the check's own bound, so that its error (which
 * says why: a refused connection, an unknown host) is the one reported, not a bare timeout.
 */
const DRIVER_HEADROOM_MS = 250;

/** What the checks share: one MongoDB client and one set of BigQuery clients, made once and closed once. */
export interface Preflight {
  readonly checks: readonly Check[];
  /** Closes what the checks opened; call once every check has finished. */
  close(): Promise<void>;
}

/**
 * The checks of `validate` (docs/operations.md, "validate"): the key file, MongoDB, the settings
 * collection and each mapping's change stream, BigQuery, each target dataset (writable) and each mapping's
 * history table (its columns agree). Every MongoDB and BigQuery line names the service and what to check.
 */
export function preflightChecks(config: BootstrapConfig, timeoutMs: number): Preflight {
  const uri = config.MONGO_CLIENT;
  const mongo = new MongoClient(uri, {
    ...mongoClientOptions(uri),
    serverSelectionTimeoutMS: Math.max(100, timeoutMs - DRIVER_HEADROOM_MS),
    connectTimeoutMS: timeoutMs,
  });
  const connection = bigQueryConnection(config);
  const where = bigQueryWhere(connection);
  // Made by the first check that needs BigQuery, once; the dataset and table checks wait for the `bigquery`
  // check's request, and are skipped when it failed (its line says why).
  let made: Promise<BigQueryClients> | undefined;
  let reached: Promise<BigQueryClients> | undefined;
  const clients = (): Promise<BigQueryClients> => (made ??= createBigQueryClients(connection));
  const reach = (): Promise<BigQueryClients> =>
    (reached ??= (async () => {
      const ready = await clients();
      // The cheapest request that needs the credentials and the project: the default dataset's metadata.
      await ready.bigquery.dataset(config.BIGQUERY_DATASET).exists();
      return ready;
    })());
  const readyClients = async (): Promise<BigQueryClients> => {
    try {
      return await reach();
    } catch {
      throw new CheckSkipped('BigQuery could not be reached: see the bigquery line');
    }
  };
  const datasetsChecked = new Set<string>();
  const datasetCheck = (dataset: string): Check[] => {
    if (datasetsChecked.has(dataset)) return [];
    datasetsChecked.add(dataset);
    return [
      {
        name: `dataset ${dataset}`,
        run: async () => ({ detail: await datasetWritable(await readyClients(), dataset, connection) }),
        timedOut: (s) =>
          `BigQuery at ${where} did not answer about dataset ${dataset} within ${String(s)} s: check the network to it`,
      },
    ];
  };
  const mappingChecks = (settings: MappingSettings): Check[] => [
    changeStreamCheck(mongo, settings),
    {
      name: `table ${settings.id}`,
      run: async () => {
        const conflicts = await historyTableConflicts(
          await readyClients(),
          config.BIGQUERY_DATASET,
          settings,
        ).catch((error: unknown) => {
          throw new CheckFailure(
            describeBigQueryFailure(error, connection, `read table ${settings.bigqueryTable}`),
            { cause: error },
          );
        });
        if (conflicts.length > 0) {
          // BigQuery cannot retype a column: the daemon would write with the table's types instead.
          throw new CheckFailure(
            `columns differ from table ${settings.bigqueryTable}: ${conflicts.join('; ')}`,
          );
        }
        return { detail: `columns agree with table ${settings.bigqueryTable} (or it is not made yet)` };
      },
      timedOut: (s) =>
        `BigQuery at ${where} did not answer about table ${settings.bigqueryTable} within ${String(s)} s`,
    },
    ...(settings.bigqueryDataset === undefined || settings.dryrun
      ? []
      : datasetCheck(settings.bigqueryDataset)),
  ];
  const checks: Check[] = [
    ...(config.SERVICE_ACCOUNT_FILE === undefined ? [] : [keyFileCheck(config.SERVICE_ACCOUNT_FILE)]),
    {
      name: 'mongodb',
      run: async () => {
        try {
          await connectFailingFast(mongo);
          await mongo.db('admin').command({ ping: 1 });
        } catch (error) {
          throw new CheckFailure(describeMongoConnectFailure(error, uri, timeoutMs), { cause: error });
        }
        return {
          detail: `reached ${mongoHosts(uri)}`,
          next: [settingsCheck(mongo, config, mappingChecks)],
        };
      },
      timedOut: () => describeMongoConnectFailure(new Error('timed out'), uri, timeoutMs),
    },
    {
      name: 'bigquery',
      run: async () => {
        try {
          await reach();
        } catch (error) {
          throw new CheckFailure(
            describeBigQueryFailure(error, connection, `reach project ${config.BIGQUERY_PROJECT}`),
            { cause: error },
          );
        }
        return {
          detail: `reached ${where} (project ${config.BIGQUERY_PROJECT})`,
          next: datasetCheck(config.BIGQUERY_DATASET),
        };
      },
      timedOut: (s) =>
        `BigQuery at ${where} did not answer within ${String(s)} s: ${
          connection.kind === 'emulator'
            ? 'check BIGQUERY_EMULATOR_ENDPOINT and that the emulator is running'
            : 'check that this host reaches bigquery.googleapis.com, and the credentials (a metadata server that does not answer holds them up)'
        }`,
    },
  ];
  return {
    checks,
    close: async () => {
      const opened = made?.catch(() => undefined);
      await Promise.all([mongo.close(), opened?.then((ready) => ready?.close())]);
    },
  };
}

/** The service-account key file: readable, JSON, a service account's. Never prints what it holds. */
function keyFileCheck(path: string): Check {
  return {
    name: `key file ${path}`,
    run: async (signal) => {
      let text: string;
      try {
        text = await readFile(path, { encoding: 'utf8', signal });
      } catch (error) {
        const code = (error as NodeJS.ErrnoException).code;
        const why =
          code === 'ENOENT'
            ? 'no such file'
            : code === 'EACCES'
              ? 'permission denied'
              : code === 'EISDIR'
                ? 'a directory'
                : (code ?? errorMessage(error));
        throw new CheckFailure(
          `cannot read ${path} (${why}): check SERVICE_ACCOUNT_FILE, that the key is mounted there and readable by this user`,
          { cause: error },
        );
      }
      let key: unknown;
      try {
        key = JSON.parse(text);
      } catch {
        // The parser's message quotes the text, which may be a private key: it is not repeated.
        throw new CheckFailure(
          `${path} is not JSON: SERVICE_ACCOUNT_FILE must name a service-account key file (JSON, as the Google Cloud console downloads it)`,
        );
      }
      const { type, client_email: email, private_key: privateKey } = (key ?? {}) as Record<string, unknown>;
      if (type !== 'service_account' || typeof email !== 'string' || typeof privateKey !== 'string') {
        throw new CheckFailure(
          `${path} is not a service-account key (${
            typeof type === 'string' ? `its type is ${type}` : 'no type'
          }; a key has type service_account, client_email and private_key): download a key of the service account, or unset SERVICE_ACCOUNT_FILE to use Application Default Credentials`,
        );
      }
      return { detail: `service account ${email}` };
    },
    timedOut: (s) => `reading ${path} took more than ${String(s)} s: check the volume it is on`,
  };
}

/** The settings collection: readable, and each document valid (one line each, then its mapping's checks). */
function settingsCheck(
  mongo: MongoClient,
  config: BootstrapConfig,
  mappingChecks: (settings: MappingSettings) => Check[],
): Check {
  const namespace = `${config.SETTINGS_DATABASE}.${config.SETTINGS_COLLECTION}`;
  return {
    name: `settings collection ${namespace}`,
    run: async () => {
      const documents = await mongo
        .db(config.SETTINGS_DATABASE)
        .collection(config.SETTINGS_COLLECTION)
        .find({})
        .toArray()
        .catch((error: unknown) => {
          throw new CheckFailure(
            describeMongoRefusal(
              error,
              `read the settings collection ${namespace}`,
              `read and write on ${namespace} (the readWrite role on ${config.SETTINGS_DATABASE})`,
            ),
            { cause: error },
          );
        });
      return {
        detail:
          documents.length === 0
            ? 'no settings documents: add one per collection to archive (docs/settings.md)'
            : `${String(documents.length)} settings document${documents.length === 1 ? '' : 's'}`,
        next: documents.map((document) => documentCheck(document, mappingChecks)),
      };
    },
    timedOut: (s) => `MongoDB did not return ${namespace} within ${String(s)} s: check the server's load`,
  };
}

/** One settings document: valid (with its warnings), then its mapping's checks. */
function documentCheck(
  document: Readonly<Record<string, unknown>>,
  mappingChecks: (settings: MappingSettings) => Check[],
): Check {
  return {
    name: `settings ${settingsIdString(document._id)}`,
    run: () => {
      let settings: MappingSettings;
      try {
        settings = parseMappingSettings(document);
      } catch (error) {
        if (!(error instanceof SettingsError)) throw error;
        return Promise.reject(new CheckFailure(`invalid settings: ${error.issues.join('; ')}`));
      }
      const warnings = settings.warnings.length > 0 ? ` (warnings: ${settings.warnings.join('; ')})` : '';
      const pass: CheckPass = {
        detail: `${settings.mongoDatabase}.${settings.mongoCollection} -> ${
          settings.bigqueryDataset ?? 'default dataset'
        }.${settings.bigqueryTable}${settings.dryrun ? ' (dry run)' : ''}${warnings}`,
        next: mappingChecks(settings),
      };
      return Promise.resolve(pass);
    },
    timedOut: () => 'parsing took too long',
  };
}

/**
 * A change stream on the mapping's collection, opened (its first `aggregate` and one empty `getMore`) and
 * closed: this is what needs the `changeStream` action, which a user allowed only to `find` lacks.
 */
function changeStreamCheck(mongo: MongoClient, settings: MappingSettings): Check {
  const namespace = `${settings.mongoDatabase}.${settings.mongoCollection}`;
  return {
    name: `change stream ${settings.id}`,
    run: async () => {
      const collection: Collection = mongo.db(settings.mongoDatabase).collection(settings.mongoCollection);
      const stream = collection.watch([], { maxAwaitTimeMS: 1 });
      try {
        await stream.tryNext();
      } catch (error) {
        throw new CheckFailure(
          describeMongoRefusal(
            error,
            `open a change stream on ${namespace}`,
            `the changeStream and find actions on ${namespace} (the read role on ${settings.mongoDatabase})`,
          ),
          { cause: error },
        );
      } finally {
        await stream.close();
      }
      return { detail: `opened on ${namespace}` };
    },
    timedOut: (s) =>
      `MongoDB did not open a change stream on ${namespace} within ${String(s)} s: check the server's load and that it is a replica set`,
  };
}

/**
 * Whether `dataset` takes writes: when it exists, a scratch table is created in it (expiring within the
 * hour) and dropped at once; a dataset that does not exist yet is created by `run`, which then needs the
 * right to create datasets in the project.
 */
async function datasetWritable(
  clients: BigQueryClients,
  dataset: string,
  connection: Parameters<typeof describeBigQueryFailure>[1],
): Promise<string> {
  const handle = clients.bigquery.dataset(dataset);
  let exists: boolean;
  try {
    [exists] = await handle.exists();
  } catch (error) {
    throw new CheckFailure(describeBigQueryFailure(error, connection, `read dataset ${dataset}`), {
      cause: error,
    });
  }
  if (!exists) {
    return 'does not exist yet: `run` creates it (the service account needs bigquery.datasets.create on the project)';
  }
  const scratch = `${SCRATCH_TABLE_PREFIX}${randomBytes(6).toString('hex')}`;
  try {
    await handle.createTable(scratch, {
      schema: { fields: [{ name: 'x', type: 'INTEGER' }] },
      expirationTime: String(Date.now() + SCRATCH_TABLE_TTL_MS),
    });
  } catch (error) {
    throw new CheckFailure(
      describeBigQueryFailure(error, connection, `create a table in dataset ${dataset}`),
      { cause: error },
    );
  }
  try {
    await handle.table(scratch).delete();
  } catch (error) {
    throw new CheckFailure(
      describeBigQueryFailure(
        error,
        connection,
        `drop the scratch table ${scratch} in dataset ${dataset} (it expires within the hour)`,
      ),
      { cause: error },
    );
  }
  return `writable (created and dropped the scratch table ${scratch})`;
}
