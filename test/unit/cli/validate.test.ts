import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { CheckFailure, type Check } from '../../../src/app/checks.js';
import { checkTimeoutMs, validateCommand, type PreflightFactory } from '../../../src/cli/validate.js';
import { EXIT } from '../../../src/cli/common.js';
import { ConfigError } from '../../../src/errors.js';

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

function passing(name: string, detail = ''): Check {
  return { name, run: () => Promise.resolve({ detail }), timedOut: () => `${name} timed out` };
}

function failing(name: string, message: string): Check {
  return {
    name,
    run: () => Promise.reject(new CheckFailure(message)),
    timedOut: () => `${name} timed out`,
  };
}

async function printed(
  checks: readonly Check[],
  timeout?: string,
): Promise<{ code: number; lines: string[]; timeoutMs: number | undefined; closed: boolean }> {
  const lines: string[] = [];
  vi.spyOn(console, 'log').mockImplementation((line: string) => lines.push(line));
  vi.spyOn(console, 'error').mockImplementation((line: string) => lines.push(line));
  let timeoutMs: number | undefined;
  let closed = false;
  const factory: PreflightFactory = (_config, ms) => {
    timeoutMs = ms;
    return {
      checks,
      close: () => {
        closed = true;
        return Promise.resolve();
      },
    };
  };
  const code = await validateCommand(
    { config: configPath(), ...(timeout !== undefined && { timeout }) },
    factory,
  );
  return { code, lines, timeoutMs, closed };
}

afterEach(() => {
  vi.restoreAllMocks();
});

describe('validate', () => {
  it('issue 10 item 19: redacts a connection string anywhere in a line, whatever its password holds', async () => {
    const { code, lines } = await printed([
      failing('mongodb', `Server selection timed out for ${URI}`),
      failing('bigquery', `cannot reach BigQuery (MongoDB was ${URI}; retry later)`),
    ]);
    expect(code).toBe(EXIT.failure);
    expect(lines).toContain(
      'mongodb: failed: Server selection timed out for mongodb://archiver:***@mongo-0.example:27017/?replicaSet=rs0&proxyHost=p&proxyUsername=a&proxyPassword=***',
    );
    for (const line of lines) for (const secret of SECRETS) expect(line).not.toContain(secret);
  });

  it('issue 13: the configuration first, one line per check, a summary naming the failures last; exit 1', async () => {
    const { code, lines, closed } = await printed([
      passing('mongodb', 'reached mongo-0.example:27017'),
      failing(
        'key file /keys/sa.json',
        'cannot read /keys/sa.json (no such file): check SERVICE_ACCOUNT_FILE',
      ),
    ]);
    expect(code).toBe(EXIT.failure);
    expect(lines[0]).toBe(
      'config: ok, project my-project, dataset acquisitions, settings in config.bigquery_archiver_settings',
    );
    expect(lines.slice(1, -1).sort()).toEqual([
      'key file /keys/sa.json: failed: cannot read /keys/sa.json (no such file): check SERVICE_ACCOUNT_FILE',
      'mongodb: ok, reached mongo-0.example:27017',
    ]);
    expect(lines.at(-1)).toBe('validate: failed, 1 of 3 checks failed: key file /keys/sa.json');
    expect(closed).toBe(true);
  });

  it('issue 13: exits 0 when every check passed', async () => {
    const { code, lines } = await printed([passing('mongodb'), passing('bigquery')]);
    expect(code).toBe(EXIT.ok);
    expect(lines.at(-1)).toBe('validate: ok, 3 checks passed');
  });

  it('issue 13: --timeout is the bound of each check, 10 s by default', async () => {
    expect((await printed([], '2.5')).timeoutMs).toBe(2_500);
    expect((await printed([])).timeoutMs).toBe(10_000);
  });

  it('issue 13: --timeout that is no number of seconds is a usage error naming the option', () => {
    for (const bad of ['abc', '0', '-1', '601']) {
      expect(() => checkTimeoutMs(bad)).toThrow(ConfigError);
      expect(() => checkTimeoutMs(bad)).toThrow(/--timeout must be a number of seconds/);
    }
  });
});
