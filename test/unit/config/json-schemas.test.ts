import { readFileSync } from 'node:fs';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { describe, expect, it } from 'vitest';
import { loadBootstrapConfig } from '../../../src/config/bootstrap.js';
import { configJsonSchema, settingsJsonSchema } from '../../../src/config/json-schemas.js';
import { parseMappingSettings } from '../../../src/config/settings.js';
import { SettingsError } from '../../../src/errors.js';

const REPO = new URL('../../../', import.meta.url);
const read = (path: string): string => readFileSync(new URL(path, REPO), 'utf8');
const readJson = (path: string): unknown => JSON.parse(read(path));

/** Formats are annotations here: what the archiver checks of a date or a URL is its own business. */
const ajv = new Ajv2020({ allErrors: true, validateFormats: false });
const validateConfig = ajv.compile(readJson('schema/config.schema.json') as object);
const validateSettings = ajv.compile(readJson('schema/settings.schema.json') as object);

function configErrors(document: unknown): string[] {
  validateConfig(document);
  return (validateConfig.errors ?? []).map((e) => `${e.instancePath} ${e.message ?? ''}`);
}
function settingsErrors(document: unknown): string[] {
  validateSettings(document);
  return (validateSettings.errors ?? []).map((e) => `${e.instancePath} ${e.message ?? ''}`);
}

/** The JSON of `config.json: |` in a ConfigMap manifest (a YAML block scalar, indented). */
function configMapJson(manifest: string): unknown {
  const lines = manifest.split('\n');
  const start = lines.findIndex((l) => /^\s*config\.json: \|\s*$/.test(l));
  const body: string[] = [];
  for (const line of lines.slice(start + 1)) {
    if (line.trim() !== '' && !/^\s{4}/.test(line)) break;
    body.push(line);
  }
  return JSON.parse(body.join('\n'));
}

/** The ```json blocks of a Markdown file. */
function jsonBlocks(markdown: string): unknown[] {
  return [...markdown.matchAll(/```json\n([\s\S]*?)```/g)].map((m): unknown => JSON.parse(m[1] ?? ''));
}

/** The original README's example settings document, in the test fixture. */
const originalExample = readJson('test/fixtures/original-readme-settings.json') as Record<string, unknown>;

describe('published JSON Schemas', () => {
  it('are what `npm run schemas` generates from the zod schemas (run it after changing a key or a field)', () => {
    expect(readJson('schema/config.schema.json')).toEqual(configJsonSchema());
    expect(readJson('schema/settings.schema.json')).toEqual(settingsJsonSchema());
  });

  it("accept the original README's example settings document, as the archiver does", () => {
    expect(settingsErrors(originalExample)).toEqual([]);
    expect(settingsErrors({ _id: { $oid: '65a1b2c3d4e5f60718293a4b' }, ...originalExample })).toEqual([]);
    expect(() => parseMappingSettings({ _id: 'm', ...originalExample })).not.toThrow();
  });

  it('accept every settings example of docs/settings.md, as the archiver does', () => {
    const examples = jsonBlocks(read('docs/settings.md')) as Record<string, unknown>[];
    expect(examples.length).toBeGreaterThan(0);
    for (const example of examples) {
      expect(settingsErrors(example)).toEqual([]);
      expect(() => parseMappingSettings({ _id: 'm', ...example })).not.toThrow();
    }
  });

  it("accept the repository's config.json examples: the original four keys and deploy/'s ConfigMap", () => {
    const original = {
      MONGO_CLIENT: 'mongodb://localhost:27017/?replicaset=rs0',
      SERVICE_ACCOUNT_FILE: '/secrets/key.json',
      BIGQUERY_PROJECT: 'my-project',
      BIGQUERY_DATASET: 'acquisitions',
    };
    const deployed = configMapJson(read('deploy/kubernetes/base/configmap.yaml'));
    expect(deployed).toMatchObject({ BIGQUERY_PROJECT: 'my-gcp-project' });
    for (const example of [original, deployed]) expect(configErrors(example)).toEqual([]);
    // Numbers may be written as numbers or as text, as the archiver takes them.
    expect(configErrors({ METRICS_PORT: 9100, LEASE_TTL_MS: '20000', WORKER_THREADS: 'auto' })).toEqual([]);
  });

  it('refuse what the archiver refuses, and a misspelt key or field', () => {
    expect(configErrors({ BIGQUERY_DATASET: 'my-dataset' })).toEqual([
      '/BIGQUERY_DATASET must match pattern "^[A-Za-z0-9_]{1,1024}$"',
    ]);
    expect(configErrors({ METRICS_PORT: 'abc' })).toContain('/METRICS_PORT must match a schema in anyOf');
    expect(configErrors({ METRICS_PORT: 70_000 })).toContain('/METRICS_PORT must match a schema in anyOf');
    expect(configErrors({ LEASE_TTL_SM: 5_000 })).toEqual([' must NOT have additional properties']);
    expect(configErrors([])).toEqual([' must be object']);
    expect(settingsErrors({ ...originalExample, backfil_full_collection: true })).toEqual([
      ' must NOT have additional properties',
    ]);
    expect(settingsErrors({ ...originalExample, columns: [{ name: 'x', type: 'FLOATY' }] })).toContain(
      '/columns/0/type must match a schema in anyOf',
    );
    const { mongo_collection: _c, ...missing } = originalExample;
    expect(settingsErrors(missing)).toEqual([" must have required property 'mongo_collection'"]);
  });

  // The schema and the archiver come from one source; these documents probe where they could disagree.
  it('agree with the archiver on documents it reads', () => {
    const documents: Record<string, unknown>[] = [
      { ...originalExample, columns: [{ name: 'n', type: ' int64 ', mode: 'repeated' }] },
      {
        ...originalExample,
        bigquery_dataset: 'other_dataset',
        backfill_parallelism: 8,
        writer: 'insert-all',
      },
      { ...originalExample, resync_requested_at: { $date: '2026-12-06T12:00:00.000Z' } },
      { ...originalExample, resync_requested_at: '2026-12-06T12:00:00Z' },
      { ...originalExample, backfill_parallelism: 65 },
      { ...originalExample, bigquery_table: 'x` ; DROP TABLE t; --' },
      { ...originalExample, on_history_lost: 'ignore' },
      { ...originalExample, dryrun: 'yes' },
      {
        ...originalExample,
        lastFailure: 'boom',
        status: { state: 'streaming' },
        lastChangeId: { _data: '82' },
      },
    ];
    for (const document of documents) {
      const archiver = accepts(() => {
        // Extended JSON dates reach the archiver as Date objects (the driver decodes them).
        const date = document.resync_requested_at as { $date?: string } | undefined;
        const decoded =
          date?.$date === undefined ? document : { ...document, resync_requested_at: new Date(date.$date) };
        parseMappingSettings({ _id: 'm', ...decoded });
      });
      expect({ document, schema: settingsErrors(document).length === 0 }).toEqual({
        document,
        schema: archiver,
      });
    }
    const configs: Record<string, unknown>[] = [
      { WORKER_THREADS: '4' },
      { WORKER_THREADS: 17 },
      { CHANGE_STREAM_SCOPE: 'collection' },
      { CHANGE_STREAM_SCOPE: 'cluster' },
      { SETTINGS_DATABASE: 'config.archiver' },
      { BIGQUERY_PROJECT: 'My_Project' },
    ];
    const required = { MONGO_CLIENT: 'mongodb://h', BIGQUERY_PROJECT: 'my-project', BIGQUERY_DATASET: 'd' };
    for (const config of configs) {
      const archiver = accepts(() =>
        loadBootstrapConfig({
          path: '/nonexistent/config.json',
          env: { ...required, ...Object.fromEntries(Object.entries(config).map(([k, v]) => [k, String(v)])) },
        }),
      );
      expect({ config, schema: configErrors(config).length === 0 }).toEqual({ config, schema: archiver });
    }
  });
});

function accepts(parse: () => void): boolean {
  try {
    parse();
    return true;
  } catch (error) {
    if (error instanceof SettingsError || (error instanceof Error && error.name === 'ConfigError'))
      return false;
    throw error;
  }
}
