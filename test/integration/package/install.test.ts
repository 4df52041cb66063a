import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MongoClient } from 'mongodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../../../scripts/peers/paths.js';
import { uniqueDatasetId } from '../support/bigquery.js';
import { daemonEnv, SETTINGS_COLLECTION } from '../support/daemon.js';

// Issue 13: the command installed from the package, not run from the checkout. `npm pack` builds (prepack)
// and packs; the tarball goes into an empty prefix with its dependencies from the npm cache (the registry
// only for what the cache lacks; no install scripts: the two among the dependencies are not needed).
const PACK_TIMEOUT_MS = 240_000;
const manifest = JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as {
  name: string;
  version: string;
};

/** The tarball and the prefix it is installed into; also the directory the commands run in. */
const work = mkdtempSync(join(tmpdir(), 'mba-package-'));
let tarball: string;
let bin: string;

/**
 * The environment of a user's shell: the outer `npm run`'s own variables (npm_config_*, npm_lifecycle_*)
 * would steer the npm that packs and installs, and this test's peer variables are not the user's.
 */
function userEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const key of ['PATH', 'HOME', 'TMPDIR', 'XDG_CACHE_HOME']) {
    if (process.env[key] !== undefined) env[key] = process.env[key];
  }
  return { ...env, ...extra };
}

function run(command: string, args: readonly string[], cwd: string, env: NodeJS.ProcessEnv = userEnv()) {
  const result = spawnSync(command, args, { cwd, env, encoding: 'utf8', timeout: PACK_TIMEOUT_MS });
  const output = `${command} ${args.join(' ')}\n${result.stdout}${result.stderr}${result.error?.message ?? ''}`;
  return { status: result.status, stdout: result.stdout, stderr: result.stderr, output };
}

beforeAll(() => {
  const packed = run('npm', ['pack', '--pack-destination', work, '--silent'], REPO_ROOT);
  expect(packed.status, packed.output).toBe(0);
  const [file] = readdirSync(work).filter((name) => name.endsWith('.tgz'));
  expect(file, packed.output).toBe(`${manifest.name}-${manifest.version}.tgz`);
  tarball = join(work, file ?? '');
  const prefix = join(work, 'prefix');
  const installed = run(
    'npm',
    [
      'install',
      '--prefix',
      prefix,
      tarball,
      '--prefer-offline',
      '--ignore-scripts',
      '--no-audit',
      '--no-fund',
    ],
    work,
  );
  expect(installed.status, installed.output).toBe(0);
  bin = join(prefix, 'node_modules', '.bin', manifest.name);
}, PACK_TIMEOUT_MS * 2);

afterAll(() => {
  rmSync(work, { recursive: true, force: true });
});

describe('issue 13: the packed and installed command', () => {
  it('the tarball carries the build, the licence and the docs, and neither source maps, the demo nor the peers', () => {
    const listed = run('tar', ['-tzf', tarball], work);
    expect(listed.status, listed.output).toBe(0);
    const files = listed.stdout.split('\n').filter((line) => line !== '');
    expect(files).toEqual(
      expect.arrayContaining([
        'package/package.json',
        'package/LICENSE',
        'package/README.md',
        'package/dist/src/main.js',
        'package/dist/src/cli/program.js',
        'package/docs/operations.md',
      ]),
    );
    expect(files.filter((f) => f.endsWith('.map') || /cli\/demo\.js$|scripts\/|\/test\//.test(f))).toEqual(
      [],
    );
  });

  it('--version prints the version of package.json', () => {
    const result = run(bin, ['--version'], work);
    expect(result.status, result.output).toBe(0);
    expect(result.stdout.trim()).toBe(manifest.version);
  });

  it('--help lists the commands, the configuration keys and the exit codes', () => {
    const result = run(bin, ['--help'], work);
    expect(result.status, result.output).toBe(0);
    expect(result.stdout).toMatch(/^ {2}validate /m);
    expect(result.stdout).toMatch(/^ {2}MONGO_CLIENT +required\b/m);
    expect(result.stdout).toContain('Exit codes:');
  });

  it('validate reaches the peers: MongoDB, a settings document, BigQuery', async () => {
    const dataset = uniqueDatasetId('package');
    const settingsDb = `package_${dataset.slice(-6)}`;
    const mongo = new MongoClient(process.env.MBA_TEST_MONGODB_URI ?? '');
    try {
      await mongo.connect();
      await mongo
        .db(settingsDb)
        .collection(SETTINGS_COLLECTION)
        .insertOne({
          _id: 'package_orders',
          mongo_database: 'package_shop',
          mongo_collection: 'orders',
          bigquery_table: 'orders',
        } as never);
      const env = userEnv({ ...daemonEnv(dataset, settingsDb), SETTINGS_COLLECTION });
      const result = run(bin, ['validate'], work, env);
      expect(result.status, result.output).toBe(0);
      // Exit 0 is the verdict (every check passed); the lines name what was checked.
      expect(result.stdout).toMatch(/^mongodb\b.*\bok\b/m);
      expect(result.stdout).toMatch(/^settings package_orders\b.*\bok\b/m);
      expect(result.stdout).toMatch(/^bigquery\b.*\bok\b/m);
    } finally {
      await mongo.db(settingsDb).dropDatabase();
      await mongo.close();
    }
  });

  it('demo says how to run it from a clone, instead of a missing module', () => {
    const result = run(bin, ['demo'], work);
    expect(result.status, result.output).toBe(1);
    expect(result.stderr).toContain('demo runs from a clone of the repository only');
    expect(result.stderr).not.toContain('Cannot find module');
  });
});
