import { createHash } from 'node:crypto';
import { z } from 'zod';
import { IDENTIFIER_PATTERNS, datasetIdProblem, tableIdProblem } from '../schema/identifiers.js';
import {
  DEFAULT_BACKFILL_PARALLELISM,
  DEFAULT_VERIFY_INTERVAL_MINUTES,
  DEFAULT_VERIFY_SHARE,
  HISTORY_LOST_POLICIES,
  MIN_VERIFY_INTERVAL_MINUTES,
  INFERRED_COLUMNS_FIELD,
  MAX_BACKFILL_PARALLELISM,
  SCHEMA_EVOLUTION_MODES,
  SERVICE_WRITTEN_FIELDS,
  WRITER_KINDS,
  settingsIdString,
  type MappingSettings,
} from '../core/settings.js';
import { SettingsError } from '../errors.js';
import { columnsHash, formatIssuePath, parseColumnSpecs } from '../schema/column-spec.js';
import { type ColumnsOrigin, type ColumnSpec } from '../schema/types.js';
import { closestName } from './suggest.js';

// MongoDB database and collection names: https://www.mongodb.com/docs/manual/reference/limits/#naming-restrictions
const NUL = String.fromCharCode(0);
const DATABASE_NAME = new RegExp(`^[^/\\\\. "$*<>:|?${NUL}]{1,63}$`);
const COLLECTION_NAME = new RegExp(`^(?!system\\.)[^$${NUL}]{1,255}$`);

/** A MongoDB database name (the settings database of the bootstrap configuration too). */
export const mongoDatabaseName = z
  .string({ error: 'expected a string' })
  .regex(DATABASE_NAME, 'not a valid MongoDB database name');
/** A MongoDB collection name. */
export const mongoCollectionName = z
  .string({ error: 'expected a string' })
  .regex(COLLECTION_NAME, 'not a valid MongoDB collection name');

/** A string that `problem` finds nothing wrong with; its message is the problem. */
export function checkedIdentifier(problem: (value: string) => string | undefined): z.ZodType<string> {
  return z.string({ error: 'expected a string' }).superRefine((value, context) => {
    const message = problem(value);
    if (message !== undefined) context.addIssue({ code: 'custom', message });
  });
}

const PARALLELISM_EXPECTED = `expected a whole number from 1 to ${MAX_BACKFILL_PARALLELISM}`;

const INTERVAL_EXPECTED = `expected minutes, at least ${String(MIN_VERIFY_INTERVAL_MINUTES)}`;
const SHARE_EXPECTED = 'expected a share above 0 and at most 1';

/** A date as a settings document holds it: a BSON date, or an ISO 8601 text. */
const DATE_ERROR = 'expected a date';

/**
 * The fields of a settings document the user sets (the service's own are in SERVICE_WRITTEN_FIELDS). The
 * descriptions are the published JSON Schema's (`npm run schemas`); docs/settings.md has the full reference.
 */
export const settingsSchema = z.object({
  mongo_database: mongoDatabaseName.meta({ description: 'Database of the collection to archive.' }),
  mongo_collection: mongoCollectionName.meta({ description: 'The collection to archive.' }),
  bigquery_table: checkedIdentifier(tableIdProblem).meta({
    description: 'History table to create and append to; its views are named after it.',
    pattern: IDENTIFIER_PATTERNS.table,
  }),
  backfill_full_collection: z.boolean({ error: 'expected true or false' }).default(false).meta({
    description: 'Copy the documents already in the collection (once), besides following its changes.',
  }),
  // No default here: a mapping that does not set it keeps its configuration key (and is not restarted).
  backfill_parallelism: z
    .number({ error: PARALLELISM_EXPECTED })
    .int(PARALLELISM_EXPECTED)
    .min(1, PARALLELISM_EXPECTED)
    .max(MAX_BACKFILL_PARALLELISM, PARALLELISM_EXPECTED)
    .optional()
    .meta({
      description: `_id ranges a backfill copies at once (default ${String(DEFAULT_BACKFILL_PARALLELISM)}).`,
    }),
  dryrun: z.boolean({ error: 'expected true or false' }).default(false).meta({
    description: 'Infer the columns and read the changes, logging what would be written; touch no BigQuery.',
  }),
  bigquery_dataset: checkedIdentifier(datasetIdProblem).optional().meta({
    description: 'Dataset of this mapping; default: BIGQUERY_DATASET.',
    pattern: IDENTIFIER_PATTERNS.dataset,
  }),
  schema_evolution: z
    .enum(SCHEMA_EVOLUTION_MODES, { error: `expected one of ${SCHEMA_EVOLUTION_MODES.join(', ')}` })
    .optional()
    .meta({
      description:
        'add_columns: new fields become columns; off: they stay in _unmapped. Default: add_columns for inferred columns, off for declared ones.',
    }),
  capture_unmapped: z
    .boolean({ error: 'expected true or false' })
    .default(true)
    .meta({ description: 'Keep the fields no column maps in the _unmapped JSON column.' }),
  on_history_lost: z
    .enum(HISTORY_LOST_POLICIES, { error: `expected one of ${HISTORY_LOST_POLICIES.join(', ')}` })
    .default('fail')
    .meta({
      description:
        'When the change stream cannot resume (oplog rolled over): fail, copy the collection again (resnapshot), or restart the stream now and copy again only the ranges verification finds differing (repair).',
    }),
  writer: z
    .enum(WRITER_KINDS, { error: `expected one of ${WRITER_KINDS.join(', ')}` })
    .optional()
    .meta({ description: 'How rows are sent to BigQuery; default: BIGQUERY_WRITER.' }),
  /** Set by `mongo-bigquery-archiver resync`: a new value restarts the mapping with a fresh backfill. */
  resync_requested_at: z
    .union([z.date({ error: DATE_ERROR }), z.iso.datetime({ error: DATE_ERROR })], { error: DATE_ERROR })
    .transform((v) => (v instanceof Date ? v.toISOString() : v))
    .optional()
    .meta({ description: 'Set by the resync command: a new value copies the collection again.' }),
  /** Set by `requestRepair`: a new value restarts the mapping, which serves the pending repair requests. */
  repair_requested_at: z
    .union([z.date({ error: DATE_ERROR }), z.iso.datetime({ error: DATE_ERROR })], { error: DATE_ERROR })
    .transform((v) => (v instanceof Date ? v.toISOString() : v))
    .optional()
    .meta({
      description:
        'Set by verify --repair and the background verifier: a new value serves the repair requests recorded with the checkpoint.',
    }),
  verify: z
    .strictObject(
      {
        interval_minutes: z
          .number({ error: INTERVAL_EXPECTED })
          .min(MIN_VERIFY_INTERVAL_MINUTES, INTERVAL_EXPECTED)
          .default(DEFAULT_VERIFY_INTERVAL_MINUTES)
          .meta({
            description: `Minutes between two runs of the background verifier (default ${String(DEFAULT_VERIFY_INTERVAL_MINUTES)}).`,
          }),
        share: z
          .number({ error: SHARE_EXPECTED })
          .gt(0, SHARE_EXPECTED)
          .max(1, SHARE_EXPECTED)
          .default(DEFAULT_VERIFY_SHARE)
          .meta({
            description: `Share of the _id ranges compared per run, in turn across runs (default ${String(DEFAULT_VERIFY_SHARE)}).`,
          }),
        repair: z
          .boolean({ error: 'expected true or false' })
          .default(false)
          .meta({ description: 'Copy again the ranges a run finds differing.' }),
      },
      { error: 'expected an object with interval_minutes, share and repair' },
    )
    .optional()
    .meta({
      description:
        'The background verifier (off when absent): compares a share of the collection with <table>_view at an interval. Changing it restarts nothing.',
    }),
});

const KNOWN_FIELDS = new Set(['_id', ...Object.keys(settingsSchema.shape), ...SERVICE_WRITTEN_FIELDS]);
/** The fields a user sets: an unknown field close to one of them is taken for its misspelling. */
const USER_FIELDS: readonly string[] = [...Object.keys(settingsSchema.shape), 'columns'];

/**
 * The fields of a settings document that are not settings. One that is a near miss of a setting (within two
 * edits, or the same in another case) is a problem: the setting it was meant to be would silently keep its
 * default, and a misspelt `backfill_full_collection` leaves the existing documents out of the archive. Any
 * other unknown field is only a warning: a document may carry notes of its own.
 */
function unknownFields(document: Readonly<Record<string, unknown>>): {
  issues: string[];
  warnings: string[];
} {
  const issues: string[] = [];
  const warnings: string[] = [];
  for (const key of Object.keys(document)) {
    if (KNOWN_FIELDS.has(key)) continue;
    const meant = closestName(key, USER_FIELDS);
    if (meant === undefined) warnings.push(`${key}: unknown field ignored`);
    else issues.push(`${key}: unknown field; did you mean ${meant}?`);
  }
  return { issues, warnings };
}

/** One schema problem as a line naming the field; a required field that is absent is said to be missing. */
function issueLine(document: Readonly<Record<string, unknown>>, issue: z.core.$ZodIssue): string {
  const path = formatIssuePath('', issue.path).replace(/^\./, '');
  const [top] = issue.path;
  if (issue.path.length === 1 && typeof top === 'string' && document[top] === undefined) {
    return `${path}: missing (${issue.message})`;
  }
  return `${path}: ${issue.message}`;
}

/**
 * Validates one settings document on its own. A problem is a SettingsError whose issues name the field
 * (`columns[3].fields[0].type: expected one of ...`); the caller stores it in that document's `lastFailure`
 * and the other mappings go on. An unknown field is a warning, or a problem when it is a near miss of a
 * setting (`backfil_full_collection: unknown field; did you mean backfill_full_collection?`).
 */
export function parseMappingSettings(document: Readonly<Record<string, unknown>>): MappingSettings {
  const id = settingsIdString(document._id);
  const parsed = settingsSchema.safeParse(document);
  const unknown = unknownFields(document);
  const issues: string[] = parsed.success ? [] : parsed.error.issues.map((i) => issueLine(document, i));
  issues.push(...unknown.issues);
  const warnings = unknown.warnings;
  let columns: readonly ColumnSpec[] | undefined;
  if (document.columns !== undefined && document.columns !== null) {
    try {
      const result = parseColumnSpecs(document.columns);
      columns = result.columns;
      warnings.push(...result.warnings);
    } catch (error) {
      if (!(error instanceof SettingsError)) throw error;
      issues.push(...error.issues);
    }
  }
  if (!parsed.success || issues.length > 0) throw new SettingsError(issues);
  const data = parsed.data;
  const columnsOrigin: ColumnsOrigin =
    columns === undefined || document[INFERRED_COLUMNS_FIELD] === columnsHash(columns)
      ? 'inferred'
      : 'declared';
  // The background verifier reads `verify` from the document each time it looks: a change restarts nothing.
  const configuration = Object.fromEntries(
    Object.entries(data)
      .filter(([field]) => field !== 'verify')
      .sort(([a], [b]) => (a < b ? -1 : 1)),
  );
  return Object.freeze({
    id,
    documentId: document._id,
    mongoDatabase: data.mongo_database,
    mongoCollection: data.mongo_collection,
    bigqueryTable: data.bigquery_table,
    bigqueryDataset: data.bigquery_dataset,
    columns,
    backfillFullCollection: data.backfill_full_collection,
    backfillParallelism: data.backfill_parallelism,
    dryrun: data.dryrun,
    columnsOrigin,
    schemaEvolution: data.schema_evolution ?? (columnsOrigin === 'inferred' ? 'add_columns' : 'off'),
    captureUnmapped: data.capture_unmapped,
    onHistoryLost: data.on_history_lost,
    writer: data.writer,
    resyncRequestedAt: data.resync_requested_at,
    verify: data.verify && {
      intervalMinutes: data.verify.interval_minutes,
      share: data.verify.share,
      repair: data.verify.repair,
    },
    configurationKey: createHash('sha256').update(JSON.stringify(configuration)).digest('hex').slice(0, 16),
    warnings,
  });
}
