import { z } from 'zod';
import { SERVICE_WRITTEN_FIELDS } from '../core/settings.js';
import { columnsSchema } from '../schema/column-spec.js';
import { bootstrapSchema } from './bootstrap.js';
import { settingsSchema } from './settings.js';

/*
 * The published JSON Schemas (schema/*.schema.json, written by `npm run schemas`), generated from the zod
 * schemas the archiver validates with, so that the two cannot drift apart; a unit test fails when the
 * committed files are not what this module generates. They describe what a user writes (zod's `input`
 * side): numbers that may come as text, dates as a settings document holds them.
 */

type JsonSchema = Record<string, unknown>;

/** A whole number as the configuration takes it: as a number, or as text of digits (the environment's form). */
const NUMBER_AS_TEXT = { type: 'string', pattern: '^\\s*-?[0-9]+\\s*$' } as const;
/** A number that need not be whole (a share such as 0.25), as text. */
const DECIMAL_AS_TEXT = { type: 'string', pattern: '^\\s*-?([0-9]+\\.?[0-9]*|\\.[0-9]+)\\s*$' } as const;

/** A BSON date as JSON shows it: Extended JSON's `{"$date": ...}`. */
const EXTENDED_JSON_DATE = {
  type: 'object',
  properties: { $date: { anyOf: [{ type: 'string', format: 'date-time' }, { type: 'object' }] } },
  required: ['$date'],
  additionalProperties: false,
} as const;

/** A date is the one type zod cannot represent that the schemas use; anything else new fails the generation. */
function unrepresentable(context: { zodSchema: z.core.$ZodTypes }): JsonSchema | 'throw' {
  return context.zodSchema._zod.def.type === 'date' ? { ...EXTENDED_JSON_DATE } : 'throw';
}

/**
 * What zod does not say in JSON Schema on its own: a coerced number also takes digits as text (config.json
 * may quote them, as the environment always does); a preprocessed value takes what its metadata says.
 */
function override(context: { zodSchema: z.core.$ZodTypes; jsonSchema: JsonSchema }): void {
  const { def } = context.zodSchema._zod;
  const schema = context.jsonSchema;
  if (def.type === 'number' && 'coerce' in def && def.coerce) {
    const { type, minimum, maximum, exclusiveMinimum, exclusiveMaximum } = schema;
    delete schema.type;
    delete schema.minimum;
    delete schema.maximum;
    delete schema.exclusiveMinimum;
    delete schema.exclusiveMaximum;
    schema.anyOf =
      type === 'integer'
        ? [{ type, minimum, maximum }, NUMBER_AS_TEXT]
        : [{ type, minimum, maximum, exclusiveMinimum, exclusiveMaximum }, DECIMAL_AS_TEXT];
  } else if (def.type === 'pipe' && def.in._zod.def.type === 'transform' && 'anyOf' in schema) {
    // A preprocessed value (a column's type or mode, any case): zod describes the value after the
    // preprocessing; what a user may write is in the schema's metadata, as `anyOf`.
    delete schema.type;
    delete schema.enum;
  } else if (def.type === 'object') {
    // Stricter than the archiver, which ignores an unknown key with a warning: in an editor, an unknown key
    // is most often a misspelt one.
    schema.additionalProperties = false;
  }
}

function generate(schema: z.ZodType, head: JsonSchema): JsonSchema {
  const generated = z.toJSONSchema(schema, { io: 'input', unrepresentable, override });
  const { $schema, ...rest } = generated;
  return { $schema, ...head, ...rest };
}

/**
 * The JSON Schema of config.json. No key is required: each may come from the environment instead
 * (MONGO_CLIENT, BIGQUERY_PROJECT and BIGQUERY_DATASET must come from one or the other).
 */
export function configJsonSchema(): JsonSchema {
  const { required: _required, ...schema } = generate(bootstrapSchema, {
    title: 'mongo-bigquery-archiver config.json',
    description:
      'The bootstrap configuration (/config-local/config.json). Every key may also be set, and overridden, by an ' +
      'environment variable of the same name; MONGO_CLIENT, BIGQUERY_PROJECT and BIGQUERY_DATASET must be set in ' +
      'one or the other.',
  });
  return schema;
}

/** Fields the archiver writes into a settings document; listed so that a document read back validates. */
const serviceWritten = Object.fromEntries(
  [...SERVICE_WRITTEN_FIELDS]
    .filter((field) => field !== 'columns')
    .map((field) => [
      field,
      z.unknown().optional().meta({ description: 'Written by the archiver; never read as a setting.' }),
    ]),
);

/** The JSON Schema of one settings document (one mapping: a collection archived into a table). */
export function settingsJsonSchema(): JsonSchema {
  const document = settingsSchema.extend({
    _id: z
      .unknown()
      .optional()
      .meta({ description: "The document's id (the mapping's id in logs, metrics and commands)." }),
    columns: columnsSchema.optional().meta({
      description:
        'The columns of the history table; absent: inferred from a sample and written back. Original format.',
    }),
    ...serviceWritten,
  });
  return generate(document, {
    title: 'mongo-bigquery-archiver settings document',
    description:
      'One document of the settings collection (default config.bigquery_archiver_settings): one MongoDB ' +
      'collection archived into one BigQuery table. Reference: docs/settings.md.',
  });
}
