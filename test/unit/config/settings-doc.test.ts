import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { bootstrapSchema } from '../../../src/config/bootstrap.js';
import { settingsSchema } from '../../../src/config/settings.js';
import { SERVICE_WRITTEN_FIELDS } from '../../../src/core/settings.js';

const doc = readFileSync(new URL('../../../docs/settings.md', import.meta.url), 'utf8');

/** The names in the first column of the tables of one section of docs/settings.md. */
function tableNames(heading: string): string[] {
  const start = doc.indexOf(`\n## ${heading}`);
  const end = doc.indexOf('\n## ', start + 1);
  const section = doc.slice(start, end === -1 ? undefined : end);
  return [...section.matchAll(/^\| `([^`]+)`/gm)].map((m) => m[1] ?? '');
}

// docs/settings.md is the one reference: a key or field added to the schemas must be added there too.
describe('docs/settings.md', () => {
  it('has a row for every field of a settings document, the ones the archiver writes included', () => {
    const fields = tableNames('Fields');
    for (const field of [...Object.keys(settingsSchema.shape), 'columns', ...SERVICE_WRITTEN_FIELDS])
      expect(fields, field).toContain(field);
  });

  it('has a row for every key of config.json', () => {
    expect(tableNames('The bootstrap configuration').sort()).toEqual(
      Object.keys(bootstrapSchema.shape).sort(),
    );
  });
});
