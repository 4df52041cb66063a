import { createHash } from 'node:crypto';
import { z } from 'zod';
import { datasetIdProblem, tableIdProblem } from '../schema/identifiers.js';
import {
  HISTORY_LOST_POLICIES,
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

const settingsSchema = z.object({
  mongo_database: mongoDatabaseName,
  mongo_collection: mongoCollectionName,
  bigquery_table: checkedIdentifier(tableIdProblem),
  backfill_full_collection: z.boolean({ error: 'expected true or false' }).default(false),
  // No default here: a mapping that does not set it keeps its configuration key (and is not restarted).
  backfill_parallelism: z
    .number({ error: PARALLELISM_EXPECTED })
    .int(PARALLELISM_EXPECTED)
    .min(1, PARALLELISM_EXPECTED)
    .max(MAX_BACKFILL_PARALLELISM, PARALLELISM_EXPECTED)
    .optional(),
  dryrun: z.boolean({ error: 'expected true or false' }).default(false),
  bigquery_dataset: checkedIdentifier(datasetIdProblem).optional(),
  schema_evolution: z
    .enum(SCHEMA_EVOLUTION_MODES, { error: `expected one of ${SCHEMA_EVOLUTION_MODES.join(', ')}` })
    .optional(),
  capture_unmapped: z.boolean({ error: 'expected true or false' }).default(true),
  on_history_lost: z
    .enum(HISTORY_LOST_POLICIES, { error: `expected one of ${HISTORY_LOST_POLICIES.join(', ')}` })
    .default('fail'),
  writer: z.enum(WRITER_KINDS, { error: `expected one of ${WRITER_KINDS.join(', ')}` }).optional(),
  /** Set by `mongo-bigquery-archiver resync`: a new value restarts the mapping with a fresh backfill. */
  resync_requested_at: z
    .union([z.date(), z.iso.datetime()], { error: 'expected a date' })
    .transform((v) => (v instanceof Date ? v.toISOString() : v))
    .optional(),
});

const KNOWN_FIELDS = new Set(['_id', ...Object.keys(settingsSchema.shape), ...SERVICE_WRITTEN_FIELDS]);

/**
 * Validates one settings document on its own. A problem is a SettingsError whose issues name the field
 * (`columns[3].fields[0].type: expected one of ...`); the caller stores it in that document's `lastFailure`
 * and the other mappings go on. Unknown fields are warnings.
 */
export function parseMappingSettings(document: Readonly<Record<string, unknown>>): MappingSettings {
  const id = settingsIdString(document._id);
  const parsed = settingsSchema.safeParse(document);
  const issues: string[] = parsed.success
    ? []
    : parsed.error.issues.map((i) => `${formatIssuePath('', i.path).replace(/^\./, '')}: ${i.message}`);
  const warnings = Object.keys(document)
    .filter((key) => !KNOWN_FIELDS.has(key))
    .map((key) => `${key}: unknown field ignored`);
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
  const configuration = Object.fromEntries(Object.entries(data).sort(([a], [b]) => (a < b ? -1 : 1)));
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
    configurationKey: createHash('sha256').update(JSON.stringify(configuration)).digest('hex').slice(0, 16),
    warnings,
  });
}
