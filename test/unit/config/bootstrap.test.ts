import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { connectionStringProblem } from '../../../src/mongodb/connectivity.js';
import { loadBootstrapConfig, windowLimits, workerThreads } from '../../../src/config/bootstrap.js';
import { DEFAULT_WINDOW_LIMITS } from '../../../src/core/window.js';
import { ConfigError } from '../../../src/errors.js';
import { scrubText } from '../../../src/observability/logger.js';

function configFile(content: unknown): string {
  const dir = mkdtempSync(join(tmpdir(), 'mba-config-'));
  const path = join(dir, 'config.json');
  writeFileSync(path, typeof content === 'string' ? content : JSON.stringify(content));
  return path;
}

const original = {
  MONGO_CLIENT: 'mongodb://localhost:27017/?replicaset=rs0',
  SERVICE_ACCOUNT_FILE: '/secrets/key.json',
  BIGQUERY_PROJECT: 'my-project',
  BIGQUERY_DATASET: 'acquisitions',
};

function errorOf(fn: () => unknown): string {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return (error as Error).message;
  }
  throw new Error('expected a ConfigError');
}

describe('bootstrap configuration', () => {
  it("reads the original service's config.json, with defaults for the new keys", () => {
    const config = loadBootstrapConfig({ path: configFile(original), env: {} });
    expect(config).toEqual({
      ...original,
      SETTINGS_DATABASE: 'config',
      SETTINGS_COLLECTION: 'bigquery_archiver_settings',
      SETTINGS_POLL_INTERVAL_MS: 10_000,
      BIGQUERY_EMULATOR_KIND: 'bqemulator',
      BIGQUERY_WRITER: 'storage-write',
      METRICS_HOST: '127.0.0.1',
      METRICS_PORT: 9_464,
      LOG_LEVEL: 'info',
      LOG_FORMAT: 'auto',
      LEASE_TTL_MS: 15_000,
      BIGQUERY_MAX_IN_FLIGHT_REQUESTS: DEFAULT_WINDOW_LIMITS.maxRequests,
      BIGQUERY_MAX_IN_FLIGHT_MB: DEFAULT_WINDOW_LIMITS.maxBytes / 1_000_000,
      BIGQUERY_STORAGE_WRITE_CONNECTIONS: 1,
      WORKER_THREADS: 'auto',
      CHANGE_STREAM_SCOPE: 'database',
      IDLE_CHECKPOINT_INTERVAL_MS: 30_000,
      MAX_MAPPINGS_PREPARING: 8,
      WRITE_STREAM_IDLE_MS: 120_000,
      OPLOG_HEADROOM_WARN_RATIO: 0.25,
      OPLOG_WINDOW_POLL_INTERVAL_MS: 60_000,
    });
    expect(windowLimits(config)).toEqual(DEFAULT_WINDOW_LIMITS);
  });

  it('issue 11: configures the in-flight window of every mapping, and says the range of a value it refuses', () => {
    const config = loadBootstrapConfig({
      path: configFile({ ...original, BIGQUERY_MAX_IN_FLIGHT_REQUESTS: 32 }),
      env: { BIGQUERY_MAX_IN_FLIGHT_MB: '128' },
    });
    expect(windowLimits(config)).toEqual({ maxRequests: 32, maxBytes: 128_000_000 });
    for (const value of ['0', '2.5', 'eight', '1001']) {
      expect(
        errorOf(() =>
          loadBootstrapConfig({
            path: configFile(original),
            env: { BIGQUERY_MAX_IN_FLIGHT_REQUESTS: value },
          }),
        ),
      ).toBe(
        `BIGQUERY_MAX_IN_FLIGHT_REQUESTS: "${value}" is not a whole number of requests from 1 to 1000 (from the environment)`,
      );
    }
    expect(
      errorOf(() =>
        loadBootstrapConfig({ path: configFile({ ...original, BIGQUERY_MAX_IN_FLIGHT_MB: -1 }), env: {} }),
      ),
    ).toBe('BIGQUERY_MAX_IN_FLIGHT_MB: -1 is not a whole number of megabytes from 1 to 4096');
  });

  it('issue 11: sets the Storage Write connections per table, and refuses a count out of range', () => {
    expect(
      loadBootstrapConfig({ path: configFile(original), env: { BIGQUERY_STORAGE_WRITE_CONNECTIONS: '4' } })
        .BIGQUERY_STORAGE_WRITE_CONNECTIONS,
    ).toBe(4);
    expect(
      errorOf(() =>
        loadBootstrapConfig({
          path: configFile(original),
          env: { BIGQUERY_STORAGE_WRITE_CONNECTIONS: '17' },
        }),
      ),
    ).toBe(
      'BIGQUERY_STORAGE_WRITE_CONNECTIONS: "17" is not a whole number of connections from 1 to 16 (from the environment)',
    );
  });

  it('issue 14: OPLOG_HEADROOM_WARN_RATIO is a share between 0 and 1, also as text, and says so when it is not', () => {
    expect(
      loadBootstrapConfig({ path: configFile(original), env: { OPLOG_HEADROOM_WARN_RATIO: '0.4' } })
        .OPLOG_HEADROOM_WARN_RATIO,
    ).toBe(0.4);
    for (const value of ['1', '0', '25%']) {
      expect(
        errorOf(() =>
          loadBootstrapConfig({ path: configFile(original), env: { OPLOG_HEADROOM_WARN_RATIO: value } }),
        ),
      ).toBe(
        `OPLOG_HEADROOM_WARN_RATIO: "${value}" is not a number greater than 0 and less than 1 (from the environment)`,
      );
    }
    expect(
      loadBootstrapConfig({ path: configFile(original), env: { OPLOG_WINDOW_POLL_INTERVAL_MS: '5000' } })
        .OPLOG_WINDOW_POLL_INTERVAL_MS,
    ).toBe(5_000);
  });

  it('issue 11 build 6: worker threads are one per core up to 4 by default, none on one core, or as configured', () => {
    const auto = loadBootstrapConfig({ path: configFile(original), env: {} });
    expect([1, 2, 3, 8].map((cores) => workerThreads(auto, cores))).toEqual([0, 2, 3, 4]);
    const none = loadBootstrapConfig({ path: configFile(original), env: { WORKER_THREADS: '0' } });
    expect(workerThreads(none, 8)).toBe(0);
    const six = loadBootstrapConfig({ path: configFile({ ...original, WORKER_THREADS: 6 }), env: {} });
    expect(workerThreads(six, 2)).toBe(6);
    for (const value of ['-1', 'all', '17', '1.5']) {
      expect(
        errorOf(() => loadBootstrapConfig({ path: configFile(original), env: { WORKER_THREADS: value } })),
      ).toBe(
        `WORKER_THREADS: "${value}" is neither auto nor a whole number of threads from 0 to 16 (from the environment)`,
      );
    }
  });

  it('issue 13: LOG_FORMAT is auto (human lines on a terminal), json or pretty, and nothing else', () => {
    const format = (value: string) =>
      loadBootstrapConfig({ path: configFile(original), env: { LOG_FORMAT: value } }).LOG_FORMAT;
    expect(format('json')).toBe('json');
    expect(format('pretty')).toBe('pretty');
    expect(format('auto')).toBe('auto');
    expect(errorOf(() => format('text'))).toBe(
      'LOG_FORMAT: "text" is not one of auto, json, pretty (from the environment)',
    );
  });

  it('lets the environment win over the file, and numbers come as text', () => {
    const config = loadBootstrapConfig({
      path: configFile(original),
      env: { BIGQUERY_DATASET: 'from_env', METRICS_PORT: '9100', SETTINGS_DATABASE: 'archiver' },
    });
    expect([config.BIGQUERY_DATASET, config.METRICS_PORT, config.SETTINGS_DATABASE]).toEqual([
      'from_env',
      9100,
      'archiver',
    ]);
  });

  it('warns of a key of config.json it does not know, with the key it probably meant, and ignores it', () => {
    const warnings: string[] = [];
    const path = configFile({ ...original, LEASE_TTL_SM: 5_000, metrics_port: 9000, NOTES: 'x' });
    const config = loadBootstrapConfig({ path, env: {}, onUnknownKey: (m) => warnings.push(m) });
    expect(config.LEASE_TTL_MS).toBe(15_000);
    expect(config.METRICS_PORT).toBe(9_464);
    expect(warnings).toEqual([
      `${path}: unknown key LEASE_TTL_SM (did you mean LEASE_TTL_MS?); it is ignored`,
      `${path}: unknown key metrics_port (did you mean METRICS_PORT?); it is ignored`,
      `${path}: unknown key NOTES; it is ignored`,
    ]);
    // The original's four keys alone raise nothing.
    const quiet: string[] = [];
    loadBootstrapConfig({ path: configFile(original), env: {}, onUnknownKey: (m) => quiet.push(m) });
    expect(quiet).toEqual([]);
  });

  it('works from the environment alone when the default file is absent', () => {
    const config = loadBootstrapConfig({ path: '/nonexistent/config.json', env: { ...original } });
    expect(config.BIGQUERY_PROJECT).toBe('my-project');
  });

  it('names the missing or invalid key in one line', () => {
    const { BIGQUERY_PROJECT: _dropped, ...rest } = original;
    expect(errorOf(() => loadBootstrapConfig({ path: configFile(rest), env: {} }))).toMatch(
      /^BIGQUERY_PROJECT: missing; set it in .*config\.json or in the environment$/,
    );
    expect(
      errorOf(() =>
        loadBootstrapConfig({ path: configFile({ ...original, MONGO_CLIENT: 'postgres://x' }), env: {} }),
      ),
    ).toBe('MONGO_CLIENT: must be a mongodb:// or mongodb+srv:// connection string');
    // Connection strings the driver would refuse at start are refused here, naming the key, never the password.
    for (const [uri, reason] of [
      ['mongodb://archiver:pa:ss@db:27017/', /unescaped/i],
      ['mongodb://archiver:s3cret@db:99999/', /99999/],
      ['mongodb://archiver:s3cret@db:27017/?tls=maybe', /tls/i],
    ] as const) {
      const message = errorOf(() =>
        loadBootstrapConfig({
          path: configFile({ ...original, MONGO_CLIENT: uri }),
          env: {},
          mongoClientProblem: connectionStringProblem,
        }),
      );
      expect(message).toMatch(/^MONGO_CLIENT: is not a valid connection string \(/);
      expect(message).toMatch(reason);
      expect(message).not.toMatch(/s3cret|pa:ss/);
    }
    expect(
      errorOf(() => loadBootstrapConfig({ path: configFile(original), env: { METRICS_PORT: 'abc' } })),
    ).toBe(
      'METRICS_PORT: "abc" is not a port number (1-65535, or 0 for any free port) (from the environment)',
    );
  });

  // Issue 13: errors came one at a time (fix one, run again, meet the next), and `METRICS_PORT "abc"` said
  // `expected number, received NaN`.
  it('issue 13: reports every problem of the configuration at once, each naming the key, the value and what is expected', () => {
    const { BIGQUERY_PROJECT: _dropped, ...rest } = original;
    const path = configFile({ ...rest, BIGQUERY_DATASET: 'my-dataset', LOG_LEVEL: 'verbose' });
    expect(
      errorOf(() =>
        loadBootstrapConfig({ path, env: { METRICS_PORT: 'abc', MONGO_CLIENT: 'mysql://u:s3cr3t@h' } }),
      ),
    ).toBe(
      [
        '5 problems in the configuration:',
        '  MONGO_CLIENT: must be a mongodb:// or mongodb+srv:// connection string (from the environment)',
        `  BIGQUERY_PROJECT: missing; set it in ${path} or in the environment`,
        '  BIGQUERY_DATASET: "my-dataset" is not a valid BigQuery dataset id (letters, digits and underscores, at most 1024)',
        '  METRICS_PORT: "abc" is not a port number (1-65535, or 0 for any free port) (from the environment)',
        '  LOG_LEVEL: "verbose" is not one of fatal, error, warn, info, debug, trace, silent',
      ].join('\n'),
    );
  });

  it('issue 13: a required key missing next to a near miss in the file says which key was probably meant', () => {
    const { BIGQUERY_DATASET: _dropped, ...rest } = original;
    const path = configFile({ ...rest, BIGQUERY_DATSET: 'acquisitions' });
    expect(errorOf(() => loadBootstrapConfig({ path, env: {} }))).toBe(
      `BIGQUERY_DATASET: missing; set it in ${path} or in the environment (${path} has BIGQUERY_DATSET: did you mean BIGQUERY_DATASET?)`,
    );
  });

  // Issue 13: a missing file said only `ENOENT`, a JSON array `is not a JSON object: not a JSON object`, and a
  // syntax error quoted the whole text without saying where.
  it('issue 13: a file that cannot be read, is not JSON or is not an object is named with the reason in words', () => {
    expect(
      errorOf(() => loadBootstrapConfig({ path: '/nonexistent/config.json', env: {}, explicitPath: true })),
    ).toBe('cannot read the config file /nonexistent/config.json: no such file (ENOENT)');
    const directory = mkdtempSync(join(tmpdir(), 'mba-config-'));
    expect(errorOf(() => loadBootstrapConfig({ path: directory, env: {}, explicitPath: true }))).toBe(
      `cannot read the config file ${directory}: it is a directory, not a file (EISDIR)`,
    );
    const broken = configFile('{\n  "MONGO_CLIENT": "mongodb://h",\n  "BIGQUERY_PROJECT": ,\n}\n');
    expect(errorOf(() => loadBootstrapConfig({ path: broken, env: {} }))).toBe(
      `the config file ${broken} is not valid JSON: line 3, column 23: expected a value (a string in double quotes, a number, true, false, null, an object or an array)`,
    );
    const trailing = configFile('{"BIGQUERY_PROJECT": "my-project",}');
    expect(errorOf(() => loadBootstrapConfig({ path: trailing, env: {} }))).toBe(
      `the config file ${trailing} is not valid JSON: line 1, column 35: expected another key after the comma (JSON allows no trailing comma)`,
    );
    for (const [content, kind] of [
      [[original], 'an array'],
      ['"mongodb://h"', 'a string'],
      ['42', 'a number'],
      ['null', 'null'],
    ] as const) {
      const path = configFile(typeof content === 'string' ? content : JSON.stringify(content));
      expect(errorOf(() => loadBootstrapConfig({ path, env: {} }))).toBe(
        `the config file ${path} must be a JSON object with the configuration keys, such as {"BIGQUERY_PROJECT": "my-project", ...}; it holds ${kind}`,
      );
    }
  });

  it('reads a file an editor saved with a byte order mark', () => {
    const path = configFile(`\uFEFF${JSON.stringify(original)}`);
    expect(loadBootstrapConfig({ path, env: {} }).BIGQUERY_DATASET).toBe('acquisitions');
  });

  // Before: an invalid BIGQUERY_DATASET passed, and every mapping then failed on its own while the daemon
  // ran on; an invalid BIGQUERY_PROJECT failed only later, when the BigQuery client was made.
  it('issue 10 item 15: every identifier of the configuration is validated up front, naming the key', () => {
    const load = (values: Record<string, string>) => () =>
      loadBootstrapConfig({ path: configFile({ ...original, ...values }), env: {} });
    expect(errorOf(load({ BIGQUERY_DATASET: 'acq`; DROP TABLE t; --' }))).toBe(
      'BIGQUERY_DATASET: "acq`; DROP TABLE t; --" is not a valid BigQuery dataset id (letters, digits and underscores, at most 1024)',
    );
    expect(errorOf(load({ BIGQUERY_DATASET: 'my-dataset' }))).toMatch(
      /^BIGQUERY_DATASET: "my-dataset" is not a valid BigQuery dataset id/,
    );
    expect(errorOf(load({ BIGQUERY_PROJECT: 'My_Project' }))).toMatch(
      /^BIGQUERY_PROJECT: "My_Project" is not a valid BigQuery project id/,
    );
    expect(errorOf(load({ SETTINGS_DATABASE: 'config.archiver' }))).toBe(
      'SETTINGS_DATABASE: "config.archiver" is not a valid MongoDB database name',
    );
    expect(errorOf(load({ SETTINGS_COLLECTION: 'settings$' }))).toBe(
      'SETTINGS_COLLECTION: "settings$" is not a valid MongoDB collection name',
    );
    // The environment is checked as strictly as the file.
    expect(
      errorOf(() => loadBootstrapConfig({ path: configFile(original), env: { BIGQUERY_DATASET: 'a b' } })),
    ).toMatch(/^BIGQUERY_DATASET: "a b" is not a valid BigQuery dataset id/);
    expect(
      loadBootstrapConfig({
        path: configFile({
          ...original,
          BIGQUERY_PROJECT: 'example.com:my-project',
          BIGQUERY_DATASET: 'A_1',
        }),
        env: {},
      }),
    ).toMatchObject({ BIGQUERY_PROJECT: 'example.com:my-project', BIGQUERY_DATASET: 'A_1' });
  });

  it('never shows a password from the connection string in its messages', () => {
    expect(scrubText('mongodb://archiver:s3cr3t@db1:27017,db2/?replicaSet=rs0')).toBe(
      'mongodb://archiver:***@db1:27017,db2/?replicaSet=rs0',
    );
    expect(scrubText('mongodb://u:p@ss@h/db')).toBe('mongodb://u:***@h/db');
    expect(scrubText('mongodb+srv://u:p%40ss@cluster0.example.net/')).toBe(
      'mongodb+srv://u:***@cluster0.example.net/',
    );
    const message = errorOf(() =>
      loadBootstrapConfig({ path: configFile({ ...original, MONGO_CLIENT: 'mysql://u:s3cr3t@h' }), env: {} }),
    );
    expect(message).not.toContain('s3cr3t');
  });

  it('never shows the secret options of a connection string: TLS key and proxy passwords, an AWS session token', () => {
    expect(
      scrubText(
        'mongodb://db1/?tls=true&tlsCertificateKeyFilePassword=k3y-pw&proxyHost=p&proxyPassword=pr0xy#x',
      ),
    ).toBe('mongodb://db1/?tls=true&tlsCertificateKeyFilePassword=***&proxyHost=p&proxyPassword=***#x');
    expect(
      scrubText(
        'mongodb+srv://c.example.net/?authMechanism=MONGODB-AWS&authMechanismProperties=AWS_SESSION_TOKEN:IQoJb3Jp,SERVICE_NAME:m',
      ),
    ).toBe(
      'mongodb+srv://c.example.net/?authMechanism=MONGODB-AWS&authMechanismProperties=AWS_SESSION_TOKEN:***,SERVICE_NAME:m',
    );
    expect(scrubText('mongodb://u:s3cr3t@h/?sslPEMKeyPassword=k3y-pw')).toBe(
      'mongodb://u:***@h/?sslPEMKeyPassword=***',
    );
  });
});
