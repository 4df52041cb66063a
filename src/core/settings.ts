import { EJSON, type ObjectId } from 'bson';
import { bsonKind } from '../base/bson-kind.js';
import { type ColumnsOrigin, type ColumnSpec } from '../schema/types.js';

/*
 * The settings contract the core and both adapters share: the shape of one validated mapping, the fields the
 * service writes into a settings document, and where settings and leases live by default. It lives here,
 * below config/ and the adapters, so the supervisor and the MongoDB stores use it without importing the
 * config parser (which owns validation and is injected where it is needed).
 */

/** Where the settings documents live unless the bootstrap configuration says otherwise. */
export const DEFAULT_SETTINGS_DATABASE = 'config';
export const DEFAULT_SETTINGS_COLLECTION = 'bigquery_archiver_settings';
export const DEFAULT_SETTINGS_POLL_MS = 10_000;
/** See LEASE_TTL_MS in the bootstrap configuration and docs/operations.md (failover time). */
export const DEFAULT_LEASE_TTL_MS = 15_000;

/**
 * How the daemon reads change streams (CHANGE_STREAM_SCOPE): one stream per source database, filtered on
 * the server to the mapped collections and fanned out to each mapping, or one per mapping (the previous
 * release's way, and the fallback where a server cannot open a database-level stream).
 */
export const CHANGE_STREAM_SCOPES = ['database', 'collection'] as const;
export type ChangeStreamScope = (typeof CHANGE_STREAM_SCOPES)[number];
/**
 * The longest an idle mapping's checkpoint waits before the position its stream reached with nothing to
 * write is saved (IDLE_CHECKPOINT_INTERVAL_MS); a position reached by writing rows is saved at once.
 */
export const DEFAULT_IDLE_CHECKPOINT_INTERVAL_MS = 30_000;
/** Mappings preparing their tables at once, and as many copying (backfilling), per daemon (MAX_MAPPINGS_PREPARING). */
export const DEFAULT_MAX_MAPPINGS_PREPARING = 8;
/** A Storage Write connection unused this long is closed, and opened again when rows come (WRITE_STREAM_IDLE_MS). */
export const DEFAULT_WRITE_STREAM_IDLE_MS = 120_000;

export const WRITER_KINDS = ['storage-write', 'insert-all'] as const;
export type WriterKind = (typeof WRITER_KINDS)[number];

export const SCHEMA_EVOLUTION_MODES = ['add_columns', 'off'] as const;
/**
 * What a mapping does when its change stream cannot resume (the oplog rolled past its position): stop
 * (`fail`), copy the whole collection again (`resnapshot`), or restart the stream at the current time and
 * copy again only the `_id` ranges that verification finds differing (`repair`).
 */
export const HISTORY_LOST_POLICIES = ['fail', 'resnapshot', 'repair'] as const;

/** The background verifier's defaults (the settings document's `verify`; off unless `verify` is set). */
export const DEFAULT_VERIFY_INTERVAL_MINUTES = 60;
export const DEFAULT_VERIFY_SHARE = 0.1;
export const MIN_VERIFY_INTERVAL_MINUTES = 1;

/** The background verifier of one mapping (`verify` in its settings document). */
export interface BackgroundVerifySettings {
  /** Minutes between the end of one run and the start of the next. */
  readonly intervalMinutes: number;
  /** The share of the `_id` ranges compared per run (0 < share <= 1), in turn, so that runs cover all. */
  readonly share: number;
  /** Copy again the ranges a run finds differing (a repair request of reason `background`). */
  readonly repair: boolean;
}

/**
 * Written with `columns` when the service inferred (and later evolved) them: the fingerprint of those
 * columns (`columnsHash`). While `columns` still match it, the mapping counts as inferred; a hand edit of
 * `columns` makes them the user's.
 */
export const INFERRED_COLUMNS_FIELD = 'inferredColumnsHash';

/** Fields the service itself writes into a settings document; they never configure anything. */
export const SERVICE_WRITTEN_FIELDS: ReadonlySet<string> = new Set([
  'columns',
  INFERRED_COLUMNS_FIELD,
  'lastChangeId',
  'lastFailure',
  'lastFailureAt',
  'status',
]);

/** `_id` ranges a backfill is copied in at once, unless the settings document says `backfill_parallelism`. */
export const DEFAULT_BACKFILL_PARALLELISM = 4;
/** More ranges than this would mostly queue behind the window of requests in flight to BigQuery. */
export const MAX_BACKFILL_PARALLELISM = 64;

/** One validated mapping: a MongoDB collection archived into a BigQuery table. */
export interface MappingSettings {
  /** The settings document's `_id`, as a string. */
  readonly id: string;
  /** The settings document's `_id` as stored (where the checkpoint is written). */
  readonly documentId: unknown;
  readonly mongoDatabase: string;
  readonly mongoCollection: string;
  readonly bigqueryTable: string;
  /** Per-mapping dataset, else the bootstrap BIGQUERY_DATASET. */
  readonly bigqueryDataset: string | undefined;
  /** Undefined: infer them from a sample and write them back. */
  readonly columns: readonly ColumnSpec[] | undefined;
  readonly backfillFullCollection: boolean;
  /**
   * How many `_id` ranges a backfill is split into and copied concurrently; undefined: the default
   * (DEFAULT_BACKFILL_PARALLELISM).
   */
  readonly backfillParallelism: number | undefined;
  readonly dryrun: boolean;
  /**
   * `inferred` when `columns` are absent (to be inferred) or still the ones the service wrote (their
   * fingerprint matches INFERRED_COLUMNS_FIELD); `declared` when the user wrote or edited them.
   */
  readonly columnsOrigin: ColumnsOrigin;
  /** Default `add_columns` when the columns are inferred, `off` when the user wrote them. */
  readonly schemaEvolution: (typeof SCHEMA_EVOLUTION_MODES)[number];
  readonly captureUnmapped: boolean;
  readonly onHistoryLost: (typeof HISTORY_LOST_POLICIES)[number];
  readonly writer: WriterKind | undefined;
  /** When a resync was last requested (ISO 8601); its backfill belongs to this request. */
  readonly resyncRequestedAt: string | undefined;
  /**
   * The background verifier; undefined: off. Not part of `configurationKey`: changing it restarts nothing
   * (the verifier reads it from the settings document each time it looks).
   */
  readonly verify: BackgroundVerifySettings | undefined;
  /**
   * Changes when, and only when, a field that configures the mapping changes: the service's own writes
   * (`columns`, `lastChangeId`, `lastFailure`, `status`) leave it alone, so they never restart anything.
   */
  readonly configurationKey: string;
  readonly warnings: readonly string[];
}

/**
 * The string form of a settings document's `_id` (the mapping's id in logs, metrics and commands): an
 * ObjectId as hex, a string as is, anything else as canonical Extended JSON.
 */
export function settingsIdString(id: unknown): string {
  if (typeof id === 'string') return id;
  if (bsonKind(id) === 'ObjectId') return (id as ObjectId).toHexString();
  return id === undefined ? 'undefined' : EJSON.stringify(id, { relaxed: false });
}
