import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CommanderError, type Command } from 'commander';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { EXIT, EXIT_MEANINGS } from '../../../src/cli/common.js';
import { configKeys, configurationHelp } from '../../../src/cli/help.js';
import { PACKAGE_NAME, packageInfo } from '../../../src/cli/package-info.js';
import { buildProgram, DEMO_FROM_CLONE_MESSAGE, exitCodeOf, loadDemo } from '../../../src/cli/program.js';
import { bootstrapSchema } from '../../../src/config/bootstrap.js';

const manifest = JSON.parse(readFileSync('package.json', 'utf8')) as { version: string };

/**
 * The program as `main.ts` builds it, with commander's endings thrown instead of exiting and its output
 * kept: what a user would see, without a process per case.
 */
function parse(...args: string[]) {
  const program = buildProgram();
  const out: string[] = [];
  const err: string[] = [];
  for (const command of [program, ...program.commands]) {
    command
      .exitOverride()
      .configureOutput({ writeOut: (text) => out.push(text), writeErr: (text) => err.push(text) });
  }
  let exitCode: number | undefined;
  try {
    program.parse(args, { from: 'user' });
  } catch (error) {
    if (!(error instanceof CommanderError)) throw error;
    exitCode = exitCodeOf(error);
  }
  return { exitCode, stdout: out.join(''), stderr: err.join('') };
}

function subcommand(program: Command, name: string): Command {
  const command = program.commands.find((c) => c.name() === name);
  if (command === undefined) throw new Error(`no command ${name}`);
  return command;
}

describe('the command line (issue 13)', () => {
  it('issue 13: --version prints the version of package.json, and exits 0', () => {
    const { exitCode, stdout } = parse('--version');
    expect(exitCode).toBe(EXIT.ok);
    expect(stdout.trim()).toBe(manifest.version);
  });

  it('issue 13: a command line it cannot parse exits with 2 and one pointer to --help, not the whole help', () => {
    const { exitCode, stderr } = parse('infer-schema');
    expect(exitCode).toBe(EXIT.config);
    expect(stderr).toContain("missing required argument 'db.collection'");
    expect(stderr).toContain(`${PACKAGE_NAME} --help lists`);
    expect(stderr).not.toContain('Exit codes:');
  });

  it('issue 13: every subcommand help shows the global --config option', () => {
    const program = buildProgram();
    for (const name of ['run', 'validate', 'infer-schema', 'resync', 'status', 'demo']) {
      const help = subcommand(program, name).helpInformation();
      expect(help, name).toMatch(/Global Options:[\s\S]*--config <path>/);
    }
  });

  it('issue 13: the top-level help and run --help list every configuration key, the environment, the exit codes and an example', () => {
    const top = parse('--help');
    expect(top.exitCode).toBe(EXIT.ok);
    const run = parse('run', '--help');
    expect(run.exitCode).toBe(EXIT.ok);
    for (const help of [top.stdout, run.stdout]) {
      for (const key of Object.keys(bootstrapSchema.shape))
        expect(help).toMatch(new RegExp(`^ {2}${key} `, 'm'));
      expect(help).toMatch(/^ {2}MONGO_CLIENT +required\b/m);
      expect(help).toMatch(/^ {2}METRICS_PORT +default 9464\b/m);
      expect(help).toContain('docs/settings.md');
      expect(help).toContain('Environment:\n');
      expect(help).toContain('GOOGLE_APPLICATION_CREDENTIALS');
      for (const [code, meaning] of Object.entries(EXIT_MEANINGS))
        expect(help).toContain(`  ${code}  ${meaning}`);
      expect(help).toMatch(/Example:\n[\s\S]*mongo-bigquery-archiver validate/);
    }
  });
});

describe('the exit codes', () => {
  it('docs/operations.md lists the same exit codes as --help, word for word', () => {
    const docs = readFileSync('docs/operations.md', 'utf8');
    const section = docs.slice(
      docs.indexOf('## Exit codes'),
      docs.indexOf('\n## ', docs.indexOf('## Exit codes')),
    );
    const listed = [...section.matchAll(/^- `(\d)` (.*)$/gm)].map(([, code, meaning]) => [code, meaning]);
    expect(listed).toEqual(Object.entries(EXIT_MEANINGS));
  });
});

describe('the help of status and verify (review finding 16)', () => {
  const program = buildProgram();

  it('status --json names every top-level key the JSON document has, oplogWindow included', () => {
    const help = subcommand(program, 'status').helpInformation().replace(/\s+/g, ' ');
    expect(help).toMatch(/\{settings, generatedAt, mappings: \[\.\.\.\], oplogWindow\}/);
  });

  it('verify --settle-timeout says the wait ends for good after the first timeout, not once per read', () => {
    const help = subcommand(program, 'verify').helpInformation().replace(/\s+/g, ' ');
    expect(help).not.toContain('each read');
    expect(help).toContain('after the first timeout later reads do not wait');
  });

  it('exit 0 covers verify finding no difference', () => {
    expect(EXIT_MEANINGS[EXIT.ok]).toContain('verify found no difference');
  });
});

describe('configKeys', () => {
  it('asks the schema whether a key is required and what it defaults to, so the help follows the schema', () => {
    const shape = {
      NEEDED: z.string(),
      PORT: z.coerce.number().default(80),
      MAYBE: z.string().optional(),
      TOLD: z.string().optional().describe('what it is for'),
    };
    expect(configKeys(shape)).toEqual([
      { key: 'NEEDED', required: true, defaultValue: undefined, description: undefined },
      { key: 'PORT', required: false, defaultValue: 80, description: undefined },
      { key: 'MAYBE', required: false, defaultValue: undefined, description: undefined },
      { key: 'TOLD', required: false, defaultValue: undefined, description: 'what it is for' },
    ]);
    const help = configurationHelp(configKeys(shape), 'https://github.com/example/project#readme');
    expect(help.split('\n').slice(4)).toEqual([
      '  NEEDED  required',
      '  PORT    default 80',
      '  MAYBE   optional',
      '  TOLD    optional  what it is for',
    ]);
    expect(help).toContain(
      'docs/settings.md (https://github.com/example/project/blob/main/docs/settings.md)',
    );
  });
});

describe('packageInfo', () => {
  it('finds the package.json of this package above a clone (src/cli) and a build (dist/src/cli) alike', () => {
    const root = mkdtempSync(join(tmpdir(), 'mba-package-info-'));
    writeFileSync(
      join(root, 'package.json'),
      JSON.stringify({
        name: PACKAGE_NAME,
        version: '9.8.7',
        homepage: 'https://github.com/example/project',
      }),
    );
    // A package.json of something else in between (as in a nested folder) is passed over.
    mkdirSync(join(root, 'dist', 'src', 'cli'), { recursive: true });
    writeFileSync(join(root, 'dist', 'package.json'), JSON.stringify({ type: 'module' }));
    mkdirSync(join(root, 'src', 'cli'), { recursive: true });
    try {
      for (const dir of [join(root, 'src', 'cli'), join(root, 'dist', 'src', 'cli')]) {
        expect(packageInfo(dir)).toEqual({
          version: '9.8.7',
          homepage: 'https://github.com/example/project',
        });
      }
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});

describe('loadDemo', () => {
  function missing(specifier: string): Error {
    return Object.assign(
      new Error(`Cannot find module '${specifier}' imported from /x/dist/src/cli/demo.js`),
      {
        code: 'ERR_MODULE_NOT_FOUND',
      },
    );
  }

  it('issue 13: in an installed package (no peers launcher) says how to run the demo instead of a module path', async () => {
    await expect(
      loadDemo(() =>
        Promise.reject(missing('/usr/lib/node_modules/mongo-bigquery-archiver/dist/scripts/peers/lib.js')),
      ),
    ).rejects.toThrow(DEMO_FROM_CLONE_MESSAGE);
    await expect(
      loadDemo(() =>
        Promise.reject(missing('/usr/lib/node_modules/mongo-bigquery-archiver/dist/src/cli/demo.js')),
      ),
    ).rejects.toThrow('npm ci && npm run demo');
  });

  it('lets any other missing module through as it is: a missing dependency is not a missing demo', async () => {
    await expect(loadDemo(() => Promise.reject(missing('mongodb')))).rejects.toThrow(
      "Cannot find module 'mongodb'",
    );
  });
});
