import { type z } from 'zod';
import { bootstrapSchema, DEFAULT_CONFIG_PATH } from '../config/bootstrap.js';
import { EXIT_MEANINGS } from './common.js';
import { PACKAGE_NAME } from './package-info.js';

/** One key of config.json as `--help` shows it: required, or optional with its default (if any). */
export interface ConfigKeyHelp {
  readonly key: string;
  readonly required: boolean;
  /** The value taken when the key is not set; undefined when there is none (the key is then left unset). */
  readonly defaultValue: unknown;
  /** The schema's own description, when it carries one. */
  readonly description: string | undefined;
}

/**
 * The keys of the bootstrap schema, in its order. Whether a key is required and what it defaults to are
 * asked of the schema itself (parsing an absent value), so the help cannot drift from what is enforced.
 */
export function configKeys(
  shape: Readonly<Record<string, z.ZodType>> = bootstrapSchema.shape,
): ConfigKeyHelp[] {
  return Object.entries(shape).map(([key, schema]) => {
    const absent = schema.safeParse(undefined);
    return {
      key,
      required: !absent.success,
      defaultValue: absent.success ? absent.data : undefined,
      description: schema.description,
    };
  });
}

/** Where every key is explained at length; docs/ is in the package too, next to dist/. */
const SETTINGS_DOC = 'docs/settings.md';
const OPERATIONS_DOC = 'docs/operations.md';

/** A file of the repository on its project page (a GitHub homepage, its `#readme` anchor dropped). */
export function documentUrl(homepage: string, path: string): string {
  const url = new URL(homepage);
  url.hash = '';
  return `${url.href.replace(/\/$/, '')}/blob/main/${path}`;
}

/** A default as it would be written in config.json or the environment. */
function shownValue(value: unknown): string {
  return typeof value === 'string' ? value : JSON.stringify(value);
}

function keyLine(entry: ConfigKeyHelp, width: number): string {
  const status = entry.required
    ? 'required'
    : entry.defaultValue === undefined
      ? 'optional'
      : `default ${shownValue(entry.defaultValue)}`;
  const description = entry.description === undefined ? '' : `  ${entry.description}`;
  return `  ${entry.key.padEnd(width)}  ${status}${description}`;
}

/** The configuration section of `--help`: where it is read from, then every key (required ones first). */
export function configurationHelp(keys: readonly ConfigKeyHelp[] = configKeys(), homepage?: string): string {
  const width = Math.max(...keys.map((k) => k.key.length));
  const ordered = [...keys.filter((k) => k.required), ...keys.filter((k) => !k.required)];
  const docs =
    homepage === undefined ? SETTINGS_DOC : `${SETTINGS_DOC} (${documentUrl(homepage, SETTINGS_DOC)})`;
  return [
    'Configuration:',
    `  Read from --config (default ${DEFAULT_CONFIG_PATH}, skipped when absent); every key can also be set`,
    '  in the environment under the same name, which wins over the file. Without SERVICE_ACCOUNT_FILE,',
    `  Application Default Credentials are used. What each key does: ${docs}.`,
    ...ordered.map((k) => keyLine(k, width)),
  ].join('\n');
}

/** The environment variables the command reads besides the configuration keys. */
export function environmentHelp(): string {
  return [
    'Environment:',
    '  every configuration key above, by its name (it wins over config.json)',
    '  GOOGLE_APPLICATION_CREDENTIALS  a key file for Application Default Credentials (without SERVICE_ACCOUNT_FILE)',
    `  NODE_OPTIONS                    Node.js flags; the recommended heap flags are in ${OPERATIONS_DOC}`,
    '  METADATA_SERVER_DETECTION       whether the Google auth library may ask a cloud metadata server for credentials',
    `                                  (none with a key file; bios-only otherwise, unless set: ${OPERATIONS_DOC})`,
  ].join('\n');
}

/** The exit codes, from the one table the commands use. */
export function exitCodesHelp(): string {
  return [
    'Exit codes:',
    ...Object.entries(EXIT_MEANINGS).map(([code, meaning]) => `  ${code}  ${meaning}`),
  ].join('\n');
}

/** A first session: check, then run; a settings document per collection tells what to archive. */
export function exampleHelp(): string {
  return [
    'Example:',
    `  export MONGO_CLIENT='mongodb://user:password@mongo-0:27017/?replicaSet=rs0'`,
    '  export BIGQUERY_PROJECT=my-project BIGQUERY_DATASET=archive SERVICE_ACCOUNT_FILE=/secrets/key.json',
    `  ${PACKAGE_NAME} validate`,
    `  ${PACKAGE_NAME} run`,
    `  ${PACKAGE_NAME} --config ./config.json status`,
  ].join('\n');
}
