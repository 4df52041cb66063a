import { type Document } from 'mongodb';
import { planTables, type TablesPlan } from '../bigquery/table-plan.js';
import { type BigQueryClients } from '../bigquery/client.js';
import { TableIntrospector, type MappingObjects } from '../bigquery/table-introspector.js';
import { viewNames } from '../bigquery/views.js';
import { type MappingSettings } from '../core/settings.js';
import { errorMessage } from '../errors.js';
import { type CollectionSize } from '../mongodb/collection-size.js';
import { type Logger } from '../observability/logger.js';
import { DEFAULT_INFER_SAMPLES, inferColumns } from '../schema/infer.js';
import { type ColumnSpec } from '../schema/types.js';
import { analyseSample, type SampleFindings } from './plan-sample.js';
import { planText } from './plan-text.js';

/**
 * BigQuery Storage Write API ingestion at list price, as published on 2026-12-06: $0.025 per GiB, the first
 * 2 TiB per month (per billing account) free. A plan prints it with its date; update both together.
 */
export const STORAGE_WRITE_LIST_PRICE = Object.freeze({
  usdPerGiB: 0.025,
  freeTiBPerMonth: 2,
  asOf: '2026-12-06',
});

const GIB = 1024 ** 3;

/** What the plan of one mapping reads: ports, so that unit tests give fakes and `plan` the live adapters. */
export interface PlanSources {
  /** The read-only introspector of the mapping's dataset. */
  readonly tables: Pick<TableIntrospector, 'projectId' | 'datasetId' | 'mapping' | 'dryRunBytes' | 'ref'>;
  /** A bounded sample of the collection (the sampler the daemon infers from; never a full scan). */
  sample(maxSamples: number, signal: AbortSignal): Promise<readonly Document[]>;
  /** The collection's size from metadata (count, bytes). */
  size(signal: AbortSignal): Promise<CollectionSize>;
}

/** What the views would scan: a dry run where the view exists, else the history table's size as a bound. */
export interface ViewScan {
  readonly view: string;
  readonly bytes: number | undefined;
  /** `dry-run`: BigQuery's estimate; `history-table-size`: the table's numBytes, an upper bound; `none`. */
  readonly source: 'dry-run' | 'history-table-size' | 'none';
  readonly note?: string;
}

export interface BackfillEstimate {
  readonly documents: number;
  readonly bytes: number | undefined;
  /** Where `bytes` came from: the server's statistics, or the sample's mean row size × count. */
  readonly bytesSource: string | undefined;
  /** At list price, before the monthly free tier. */
  readonly costUsd: number | undefined;
  /** At list price, should nothing else have used this month's free tier. */
  readonly costAfterFreeTierUsd: number | undefined;
  readonly price: typeof STORAGE_WRITE_LIST_PRICE;
}

/** Everything `plan` says about one mapping; `plan --json` prints an array of these. */
export interface MappingPlan {
  readonly mapping: string;
  readonly source: string;
  /** `project.dataset.table` */
  readonly target: string;
  readonly dryrun: boolean;
  /** `declared` columns from the settings, or `inferred` from the sample (not written back by a plan). */
  readonly columnsFrom: 'declared' | 'inferred';
  readonly columns: readonly ColumnSpec[];
  readonly tables: TablesPlan;
  readonly sample: SampleFindings;
  /** Only when `backfill_full_collection` is on. */
  readonly backfill: BackfillEstimate | undefined;
  readonly scans: readonly ViewScan[];
}

/**
 * The plan of one mapping, computed as `run` would prepare it but writing nothing anywhere: introspect
 * BigQuery, take a bounded sample, infer the columns when the settings have none (kept in the plan, never
 * saved), diff, and estimate the backfill and the view scans.
 */
export async function planMapping(
  settings: MappingSettings,
  sources: PlanSources,
  signal: AbortSignal,
): Promise<MappingPlan> {
  const [found, sample] = await Promise.all([
    sources.tables.mapping(settings.bigqueryTable),
    sources.sample(DEFAULT_INFER_SAMPLES, signal),
  ]);
  const columns = settings.columns ?? (await inferColumns(sample));
  const tables = planTables(
    { projectId: sources.tables.projectId, datasetId: sources.tables.datasetId },
    found,
    settings.bigqueryTable,
    columns,
  );
  // Mapped with the columns `run` would map with: the table's types where they differ.
  const findings = analyseSample(tables.diff.columns, sample, settings.captureUnmapped);
  const backfill = settings.backfillFullCollection
    ? estimateBackfill(await sources.size(signal), findings)
    : undefined;
  return {
    mapping: settings.id,
    source: `${settings.mongoDatabase}.${settings.mongoCollection}`,
    target: `${sources.tables.projectId}.${sources.tables.datasetId}.${settings.bigqueryTable}`,
    dryrun: settings.dryrun,
    columnsFrom: settings.columns === undefined ? 'inferred' : 'declared',
    columns,
    tables,
    sample: findings,
    backfill,
    scans: await viewScans(sources.tables, found, settings.bigqueryTable),
  };
}

/** The backfill's size, and its ingestion cost at the Storage Write list price. */
export function estimateBackfill(size: CollectionSize, sample: SampleFindings): BackfillEstimate {
  let bytes = size.bytes;
  let bytesSource: string | undefined = size.bytesSource;
  if (bytes === undefined && sample.averageRowBytes !== undefined) {
    bytes = sample.averageRowBytes * size.documents;
    bytesSource = 'sample mean row size × count';
  }
  const price = STORAGE_WRITE_LIST_PRICE;
  const gib = bytes === undefined ? undefined : bytes / GIB;
  return {
    documents: size.documents,
    bytes,
    bytesSource,
    costUsd: gib === undefined ? undefined : gib * price.usdPerGiB,
    costAfterFreeTierUsd:
      gib === undefined ? undefined : Math.max(0, gib - price.freeTiBPerMonth * 1024) * price.usdPerGiB,
    price,
  };
}

async function viewScans(
  tables: PlanSources['tables'],
  found: MappingObjects,
  table: string,
): Promise<ViewScan[]> {
  const names = viewNames(table);
  const bound = found.history?.numBytes;
  const fallback = (view: string, note: string): ViewScan =>
    bound === undefined
      ? { view, bytes: undefined, source: 'none', note }
      : { view, bytes: bound, source: 'history-table-size', note };
  const scan = async (view: string, exists: boolean): Promise<ViewScan> => {
    if (!exists) {
      return fallback(
        view,
        found.history === undefined
          ? 'neither the view nor the history table exists yet'
          : 'the view does not exist yet: at most the history table',
      );
    }
    try {
      const bytes = await tables.dryRunBytes(`SELECT * FROM ${tables.ref(view).sql}`);
      return { view, bytes, source: 'dry-run' };
    } catch (error) {
      return fallback(view, `dry run refused (${errorMessage(error)}): at most the history table`);
    }
  };
  return Promise.all([
    scan(names.view, found.view !== undefined),
    ...(found.latestView === undefined ? [] : [scan(names.latestView, true)]),
  ]);
}

/** What `logPlan` needs of the daemon: its clients, its sampler, the collection's size and the default dataset. */
export interface DryRunPlanDeps {
  readonly bigquery: Pick<BigQueryClients, 'bigquery' | 'projectId'> | undefined;
  readonly defaultDataset: string;
  readonly sample: PlanSources['sample'];
  readonly size: PlanSources['size'];
  readonly log: Logger;
}

/**
 * A dry-run mapping logs the plan `plan` would print for it, once as it starts: one info line with the
 * text, and the plan as data (`plan`). Advice only: a plan that cannot be computed is a warning, never a
 * failure of the mapping. Reads only, as `plan` does.
 */
export async function logPlan(
  settings: MappingSettings,
  deps: DryRunPlanDeps,
  signal: AbortSignal,
): Promise<void> {
  if (deps.bigquery === undefined) {
    deps.log.info('dry run: no plan (BigQuery is not configured for this process)');
    return;
  }
  try {
    const plan = await planMapping(
      settings,
      {
        tables: new TableIntrospector({
          bigquery: deps.bigquery.bigquery,
          projectId: deps.bigquery.projectId,
          datasetId: settings.bigqueryDataset ?? deps.defaultDataset,
        }),
        sample: deps.sample,
        size: deps.size,
      },
      signal,
    );
    deps.log.info({ plan, text: planText(plan) }, 'dry run: the plan of this mapping (what run would do)');
  } catch (error) {
    if (signal.aborted) return;
    deps.log.warn({ err: error }, 'dry run: could not compute the plan of this mapping');
  }
}
