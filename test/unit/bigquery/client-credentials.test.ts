import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createBigQueryClients } from '../../../src/bigquery/client.js';

// Apart from client.test.ts: the Google auth library caches what it found out about the machine per process.
const SAVED = ['HOME', 'GOOGLE_APPLICATION_CREDENTIALS', 'METADATA_SERVER_DETECTION'] as const;
let saved: Partial<Record<(typeof SAVED)[number], string>>;
const warnings: string[] = [];
const onWarning = (warning: Error) => warnings.push(warning.name);

beforeEach(() => {
  saved = Object.fromEntries(SAVED.map((key) => [key, process.env[key]]));
  for (const key of SAVED) Reflect.deleteProperty(process.env, key);
  // No gcloud credentials either: an empty home.
  process.env.HOME = mkdtempSync(join(tmpdir(), 'mba-home-'));
  process.on('warning', onWarning);
});

afterEach(() => {
  process.off('warning', onWarning);
  for (const key of SAVED) {
    const value = saved[key];
    if (value === undefined) Reflect.deleteProperty(process.env, key);
    else process.env[key] = value;
  }
});

describe('BigQuery clients without any credentials', () => {
  it('issue 13: fail with the library\'s "no credentials" error and no stray MetadataLookupWarning', async () => {
    await expect(createBigQueryClients({ kind: 'google', projectId: 'my-project' })).rejects.toThrow(
      /Could not load the default credentials/,
    );
    // Warnings are emitted on the next tick.
    await new Promise((resolve) => setImmediate(resolve));
    expect(warnings).not.toContain('MetadataLookupWarning');
  }, 30_000);
});
