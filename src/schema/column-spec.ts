import { createHash } from 'node:crypto';
import { z } from 'zod';
import { SettingsError } from '../errors.js';
import { columnNameProblem, isMetadataColumnName, METADATA_COLUMN_NAMES } from './names.js';
import {
  COLUMN_MODES,
  COLUMN_TYPES,
  MAX_COLUMNS,
  MAX_NESTING_DEPTH,
  type ColumnMode,
  type ColumnSpec,
  type ColumnType,
} from './types.js';

/** Standard-SQL spellings BigQuery also accepts, normalised to the legacy names the original format uses. */
const TYPE_ALIASES: Readonly<Record<string, ColumnType>> = {
  INT64: 'INTEGER',
  FLOAT64: 'FLOAT',
  BOOL: 'BOOLEAN',
  STRUCT: 'RECORD',
  DECIMAL: 'NUMERIC',
  BIGDECIMAL: 'BIGNUMERIC',
};

/**
 * A JSON Schema pattern matching `words` in any case, with surrounding blanks: what the preprocessing below
 * accepts, for the published schema (JSON Schema patterns have no case-insensitive flag).
 */
function anyCasePattern(words: readonly string[]): string {
  // The words are ASCII type names: a letter is matched by either case, anything else as it is.
  const anyCase = (word: string) =>
    word.replace(/[A-Za-z]/g, (c) => `[${c.toUpperCase()}${c.toLowerCase()}]`);
  return `^\\s*(?:${words.map(anyCase).join('|')})\\s*$`;
}

/** The published JSON Schema of a value from `words`: offered as listed, accepted in any case. */
function anyCaseJsonSchema(words: readonly string[]) {
  return { anyOf: [{ enum: [...words] }, { type: 'string', pattern: anyCasePattern(words) }] };
}

const typeSchema = z
  .preprocess(
    (value) => {
      if (typeof value !== 'string') return value;
      const upper = value.trim().toUpperCase();
      return TYPE_ALIASES[upper] ?? upper;
    },
    z.enum(COLUMN_TYPES, { error: () => `expected one of ${COLUMN_TYPES.join(', ')}` }),
  )
  .meta({
    description: `BigQuery type, in any case; also ${Object.keys(TYPE_ALIASES).join(', ')}`,
    ...anyCaseJsonSchema([...COLUMN_TYPES, ...Object.keys(TYPE_ALIASES)]),
  });

const modeSchema = z
  .preprocess(
    (value) => (typeof value === 'string' ? value.trim().toUpperCase() : value),
    z.enum(COLUMN_MODES, { error: () => `expected one of ${COLUMN_MODES.join(', ')}` }),
  )
  .meta({
    description: 'NULLABLE (the default), REQUIRED or REPEATED (an array)',
    ...anyCaseJsonSchema(COLUMN_MODES),
  });

interface RawColumn {
  name: string;
  type: ColumnType;
  mongo_field?: string | undefined;
  fields?: RawColumn[] | undefined;
  primary_key?: boolean | undefined;
  mode?: ColumnMode | undefined;
}

// `id` names the column spec in the published JSON Schema's `$defs`.
const columnSchema: z.ZodType<RawColumn> = z
  .lazy(() =>
    z.object({
      name: z.string({ error: 'expected a string' }).meta({ description: 'Column name in BigQuery' }),
      type: typeSchema,
      mongo_field: z
        .string({ error: 'expected a string (dotted path)' })
        .optional()
        .meta({ description: 'Field of the document (dotted path); default: the column name' }),
      fields: z
        .array(columnSchema, { error: 'expected an array of column specs' })
        .optional()
        .meta({ description: 'The columns of a RECORD' }),
      primary_key: z
        .boolean({ error: 'expected true or false' })
        .optional()
        .meta({ description: 'The key of the latest view (one row per value)' }),
      mode: modeSchema.optional(),
    }),
  )
  .meta({ id: 'column' });

/** The `columns` of a settings document (the original format); exported for the published JSON Schema. */
export const columnsSchema = z.array(columnSchema, { error: 'expected an array of column specs' });

const KNOWN_KEYS = new Set(['name', 'type', 'mongo_field', 'fields', 'primary_key', 'mode']);

export interface ParsedColumns {
  readonly columns: readonly ColumnSpec[];
  /** Unknown keys that were ignored, each with its path. */
  readonly warnings: readonly string[];
}

/** `columns[3].fields[0].type` */
export function formatIssuePath(root: string, path: readonly PropertyKey[]): string {
  let out = root;
  for (const key of path) out += typeof key === 'number' ? `[${key}]` : `.${String(key)}`;
  return out;
}

/**
 * Validates column specs in the original settings format. Every problem names the path of the offending
 * entry, for example `columns[3].fields[0].type: expected one of STRING, ...`.
 */
export function parseColumnSpecs(input: unknown, root = 'columns'): ParsedColumns {
  const parsed = columnsSchema.safeParse(input);
  if (!parsed.success) {
    throw new SettingsError(parsed.error.issues.map((i) => `${formatIssuePath(root, i.path)}: ${i.message}`));
  }
  const problems: string[] = [];
  const warnings: string[] = [];
  collectUnknownKeys(input, root, warnings);
  const columns = parsed.data.map((c, i) => normalise(c, `${root}[${i}]`, 1, true, problems));
  checkSiblings(columns, root, true, problems);
  const total = countColumns(columns) + METADATA_COLUMN_NAMES.length;
  if (total > MAX_COLUMNS) {
    problems.push(`${root}: ${total} columns including metadata exceed BigQuery's limit of ${MAX_COLUMNS}`);
  }
  if (problems.length > 0) throw new SettingsError(problems);
  return { columns, warnings };
}

function normalise(
  raw: RawColumn,
  path: string,
  depth: number,
  topLevel: boolean,
  problems: string[],
): ColumnSpec {
  const nameProblem = columnNameProblem(raw.name);
  if (nameProblem) problems.push(`${path}.name: "${raw.name}" ${nameProblem}`);
  if (raw.type === 'RECORD') {
    if (!raw.fields || raw.fields.length === 0)
      problems.push(`${path}.fields: a RECORD needs at least one field`);
    if (depth >= MAX_NESTING_DEPTH) {
      problems.push(`${path}: RECORD nesting deeper than BigQuery's limit of ${MAX_NESTING_DEPTH} levels`);
    }
  } else if (raw.fields !== undefined) {
    problems.push(`${path}.fields: only a RECORD column has fields (type is ${raw.type})`);
  }
  if (raw.primary_key === true) {
    if (!topLevel) problems.push(`${path}.primary_key: only a top-level column can be a primary key`);
    if (raw.type === 'RECORD' || raw.mode === 'REPEATED' || raw.type === 'JSON') {
      problems.push(
        `${path}.primary_key: a primary key must be a single scalar value (not RECORD, JSON or REPEATED)`,
      );
    }
  }
  const fields =
    raw.fields === undefined
      ? undefined
      : raw.fields.map((f, i) => normalise(f, `${path}.fields[${i}]`, depth + 1, false, problems));
  if (fields) checkSiblings(fields, `${path}.fields`, false, problems);
  return Object.freeze({
    name: raw.name,
    type: raw.type,
    ...(raw.mongo_field !== undefined && { mongo_field: raw.mongo_field }),
    ...(fields !== undefined && { fields: Object.freeze(fields) }),
    ...(raw.primary_key !== undefined && { primary_key: raw.primary_key }),
    ...(raw.mode !== undefined && { mode: raw.mode }),
  });
}

function checkSiblings(
  columns: readonly ColumnSpec[],
  path: string,
  topLevel: boolean,
  problems: string[],
): void {
  const seen = new Map<string, number>();
  columns.forEach((c, i) => {
    const lower = c.name.toLowerCase();
    const first = seen.get(lower);
    if (first !== undefined) {
      problems.push(
        `${path}[${i}].name: "${c.name}" duplicates ${path}[${first}].name (names are case-insensitive)`,
      );
    } else {
      seen.set(lower, i);
    }
    if (topLevel && isMetadataColumnName(c.name)) {
      problems.push(`${path}[${i}].name: "${c.name}" is reserved for archiver metadata`);
    }
  });
}

export function countColumns(columns: readonly ColumnSpec[]): number {
  let n = 0;
  for (const c of columns) n += 1 + (c.fields ? countColumns(c.fields) : 0);
  return n;
}

function collectUnknownKeys(input: unknown, path: string, warnings: string[]): void {
  if (!Array.isArray(input)) return;
  input.forEach((entry: unknown, i) => {
    if (typeof entry !== 'object' || entry === null) return;
    for (const [key, value] of Object.entries(entry)) {
      if (!KNOWN_KEYS.has(key)) warnings.push(`${path}[${i}].${key}: unknown key ignored`);
      if (key === 'fields') collectUnknownKeys(value, `${path}[${i}].fields`, warnings);
    }
  });
}

/**
 * A fingerprint of column specs that ignores key order and spelling (specs are compared after
 * `parseColumnSpecs` normalised them): the service stores it next to the columns it wrote, so that a later
 * reader can tell whether `columns` are still the service's or were edited by hand.
 */
export function columnsHash(columns: readonly ColumnSpec[]): string {
  return createHash('sha256').update(canonicalJson(columns)).digest('hex').slice(0, 16);
}

function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (typeof value === 'object' && value !== null) {
    const entries = Object.entries(value)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
  }
  return JSON.stringify(value);
}
