/*
 * `npm run schemas`: writes the published JSON Schemas of config.json and of a settings document, generated
 * from the zod schemas the archiver validates with (src/config/json-schemas.ts). Run it after changing a
 * key or a field; a unit test fails while the committed files differ from what this writes.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { format, resolveConfig } from 'prettier';
import { configJsonSchema, settingsJsonSchema } from '../../src/config/json-schemas.js';
import { REPO_ROOT } from '../peers/paths.js';

/** Where the schemas are written, and which generator writes each. */
const SCHEMA_FILES = {
  'config.schema.json': configJsonSchema,
  'settings.schema.json': settingsJsonSchema,
} as const;

const directory = join(REPO_ROOT, 'schema');
mkdirSync(directory, { recursive: true });
for (const [name, generate] of Object.entries(SCHEMA_FILES)) {
  const path = join(directory, name);
  // Formatted as the repository's Prettier would: `npm run lint` checks these files too.
  const options = { ...(await resolveConfig(path)), filepath: path };
  writeFileSync(path, await format(JSON.stringify(generate()), options));
  console.log(`wrote ${path}`);
}
