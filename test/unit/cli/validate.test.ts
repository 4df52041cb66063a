import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MongoNetworkError } from 'mongodb';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { validateCommand, type ValidateProbes } from '../../../src/cli/validate.js';
import { EXIT } from '../../../src/cli/common.js';

// The driver takes a password with an unencoded space (and `"`), as it takes `@`.
const URI =
  'mongodb://archiver:s3 cr3t "x"@mongo-0.example:27017/?replicaSet=rs0&proxyHost=p&proxyUsername=a&proxyPassword=pr0 zq7';
const SECRETS = ['s3', 'cr3t', 'pr0', 'zq7'];

function configPath(): string {
  const dir = mkdtempSync(join(tmpdir(), 'mba-validate-'));
  const path = join(dir, 'config.json');
  writeFileSync(
    path,
    JSON.stringify({ MONGO_CLIENT: URI, BIGQUERY_PROJECT: 'my-project', BIGQUERY_DATASET: 'acquisitions' }),
  );
  return path;
}

async function printed(probes: ValidateProbes): Promise<{ code: number; lines: string[] }> {
  const lines: string[] = [];
  vi.spyOn(console, 'log').mockImplementation((line: string) => lines.push(line));
  vi.spyOn(console, 'error').mockImplementation((line: string) => lines.push(line));
  const code = await validateCommand({ config: configPath() }, probes);
  return { code, lines };
}

function expectNoSecret(lines: readonly string[]): void {
  for (const line of lines) for (const secret of SECRETS) expect(line).not.toContain(secret);
}

afterEach(() => {
  vi.restoreAllMocks();
});

describe('validate', () => {
  it('issue 10 item 19: redacts a connection string anywhere in an error, whatever its password holds', async () => {
    const { code, lines } = await printed({
      mongo: () => Promise.reject(new MongoNetworkError(`Server selection timed out for ${URI}`)),
      bigquery: () => Promise.reject(new Error(`cannot reach BigQuery (MongoDB was ${URI}; retry later)`)),
    });
    expect(code).toBe(EXIT.failure);
    expect(lines).toEqual([
      'config: ok',
      'mongodb: failed: Server selection timed out for mongodb://archiver:***@mongo-0.example:27017/?replicaSet=rs0&proxyHost=p&proxyUsername=a&proxyPassword=***',
      expect.stringMatching(
        /^bigquery: failed: cannot reach BigQuery \(MongoDB was mongodb:\/\/archiver:\*\*\*@mongo-0/,
      ),
    ]);
    expectNoSecret(lines);
  });

  it('issue 10 item 19: shows the connection string it reached without its secrets', async () => {
    const { code, lines } = await printed({
      mongo: () => Promise.resolve([]),
      bigquery: () => Promise.resolve({ exists: true, conflicts: new Map() }),
    });
    expect(code).toBe(EXIT.ok);
    expect(lines).toEqual([
      'config: ok',
      'mongodb: ok, reached mongodb://archiver:***@mongo-0.example:27017/?replicaSet=rs0&proxyHost=p&proxyUsername=a&proxyPassword=***',
      'bigquery: ok (dataset acquisitions exists)',
    ]);
  });

  it('issue 10 item 10: reports columns whose type differs from the existing history table, and fails', async () => {
    const settings = {
      _id: 'ads',
      mongo_database: 'bidding',
      mongo_collection: 'ads',
      bigquery_table: 'ads',
      columns: [{ name: 's', type: 'INTEGER', mongo_field: 's' }],
    };
    let asked: readonly string[] = [];
    const { code, lines } = await printed({
      mongo: () => Promise.resolve([settings]),
      bigquery: (_config, mappings) => {
        asked = mappings.map((m) => m.id);
        return Promise.resolve({
          exists: true,
          conflicts: new Map([['ads', ['s: INTEGER in the settings, STRING in the table']]]),
        });
      },
    });
    expect(asked).toEqual(['ads']);
    expect(code).toBe(EXIT.failure);
    expect(lines.at(-1)).toBe(
      'settings ads: columns differ from table ads: s: INTEGER in the settings, STRING in the table',
    );
  });
});
