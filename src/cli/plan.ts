import { unknownMappingError } from '../app/settings-lookup.js';
import { bigQueryConnection, connectMongo, connectNamingMongo } from '../app/archiver.js';
import { planMapping, type MappingPlan, type PlanSources } from '../app/plan.js';
import { planText } from '../app/plan-text.js';
import { createBigQueryClients, type BigQueryClients } from '../bigquery/client.js';
import { describeBigQueryFailure } from '../bigquery/connectivity.js';
import { TableIntrospector } from '../bigquery/table-introspector.js';
import { parseMappingSettings } from '../config/settings.js';
import { BigQueryError, errorMessage } from '../errors.js';
import { collectionSize } from '../mongodb/collection-size.js';
import { sampleDocuments } from '../mongodb/sampler.js';
import { MongoSettingsStore } from '../mongodb/settings-store.js';
import { scrubText } from '../observability/logger.js';
import { EXIT, loadConfig, type GlobalOptions } from './common.js';

export interface PlanOptions extends GlobalOptions {
  /** Print one JSON document instead of the text. */
  readonly json?: boolean;
}

/** How long the settings read, each sample and each mapping's BigQuery reads may take. */
const PLAN_STEP_TIMEOUT_MS = 120_000;

/**
 * `plan [mapping]`: what `run` would do for each mapping (or the one named), written nowhere: the DDL, the
 * table diff, the sample's `_unmapped` fields and rows over limits, the backfill estimate and the view scans.
 * Exit 0 when every plan was computed (conflicts included: they are printed); 1 when MongoDB or BigQuery
 * could not be reached or refused; 2 for a configuration error (an unknown mapping, an invalid settings
 * document).
 */
export async function planCommand(mapping: string | undefined, options: PlanOptions): Promise<number> {
  const config = loadConfig(options);
  const connection = bigQueryConnection(config);
  const mongo = connectMongo(config);
  let clients: BigQueryClients | undefined;
  try {
    clients = await createBigQueryClients(connection).catch((error: unknown) => {
      throw new BigQueryError('fatal', describeBigQueryFailure(error, connection, 'load the credentials'), {
        cause: error,
      });
    });
    const bigquery = clients;
    await connectNamingMongo(mongo, config.MONGO_CLIENT);
    const store = new MongoSettingsStore(mongo, {
      database: config.SETTINGS_DATABASE,
      collection: config.SETTINGS_COLLECTION,
    });
    const entries = await store.list(AbortSignal.timeout(PLAN_STEP_TIMEOUT_MS));
    const chosen = mapping === undefined ? entries : entries.filter((e) => e.id === mapping);
    if (mapping !== undefined && chosen.length === 0) throw unknownMappingError(config, mapping, entries);
    const plans: MappingPlan[] = [];
    const invalid: string[] = [];
    for (const entry of chosen) {
      let settings;
      try {
        settings = parseMappingSettings(entry.document);
      } catch (error) {
        invalid.push(`mapping ${entry.id}: invalid settings document: ${errorMessage(error)}`);
        continue;
      }
      const datasetId = settings.bigqueryDataset ?? config.BIGQUERY_DATASET;
      const collection = mongo.db(settings.mongoDatabase).collection(settings.mongoCollection);
      const signal = AbortSignal.timeout(PLAN_STEP_TIMEOUT_MS);
      const plan = await planMapping(
        settings,
        {
          tables: readingBigQuery(
            new TableIntrospector({ bigquery: bigquery.bigquery, projectId: bigquery.projectId, datasetId }),
            (error, what) => describeBigQueryFailure(error, connection, what),
          ),
          sample: (maxSamples, s) => sampleDocuments(collection, { maxSamples, signal: s }),
          size: () => collectionSize(collection),
        },
        signal,
      );
      plans.push(plan);
    }
    if (options.json === true) {
      console.log(
        JSON.stringify(
          {
            settings: `${config.SETTINGS_DATABASE}.${config.SETTINGS_COLLECTION}`,
            generatedAt: new Date().toISOString(),
            mappings: plans,
            invalid,
          },
          null,
          2,
        ),
      );
    } else {
      if (chosen.length === 0) {
        console.log(`no mappings in ${config.SETTINGS_DATABASE}.${config.SETTINGS_COLLECTION}`);
      }
      console.log(plans.map(planText).join('\n\n'));
    }
    for (const line of invalid) console.error(scrubText(`error: ${line}`));
    return invalid.length > 0 ? EXIT.config : EXIT.ok;
  } finally {
    await mongo.close();
    await clients?.close();
  }
}

/**
 * The introspector as the plan reads it, with its failures told as `validate` tells them (which endpoint,
 * why, what to check); a refused dry run is left as it is, since the plan falls back from it and says why.
 */
function readingBigQuery(
  introspector: TableIntrospector,
  describe: (error: unknown, what: string) => string,
): PlanSources['tables'] {
  return {
    projectId: introspector.projectId,
    datasetId: introspector.datasetId,
    ref: (table) => introspector.ref(table),
    dryRunBytes: (sql) => introspector.dryRunBytes(sql),
    mapping: async (table) => {
      try {
        return await introspector.mapping(table);
      } catch (error) {
        const what = `read dataset ${introspector.datasetId} and table ${table}`;
        throw new BigQueryError('fatal', describe(error, what), { cause: error });
      }
    },
  };
}
