import { readFileSync } from 'node:fs';
import { relative } from 'node:path';
import { describe, expect, it } from 'vitest';
import { DEFAULT_CONFIG_PATH } from '../../src/config/bootstrap.js';
import { V8_FLAGS } from '../../src/observability/runtime.js';
import { DOCKERFILE, finalStage, HADOLINT_CONFIG, linters, REPO_ROOT, runTool } from './support.js';

interface Finding {
  readonly code: string;
  readonly level: string;
  readonly line: number;
  readonly message: string;
}

/** hadolint with the committed settings, on a file or (with `-`) on standard input. */
function hadolint(target: string, input?: string): { status: number | null; findings: Finding[] } {
  const result = runTool(
    linters().hadolint,
    ['--config', HADOLINT_CONFIG, '--format', 'json', target],
    input,
  );
  return { status: result.status, findings: JSON.parse(result.stdout || '[]') as Finding[] };
}

describe('Dockerfile', () => {
  it('passes hadolint with no finding at any level', () => {
    const { status, findings } = hadolint(DOCKERFILE);
    expect(findings).toEqual([]);
    expect(status).toBe(0);
  });

  // The check above proves something only if it can fail: the same settings flag a careless Dockerfile.
  it('hadolint fails on a Dockerfile with floating tags, ADD, cd and shell-form CMD', () => {
    const careless = [
      'FROM node:latest',
      'ADD . /app',
      'RUN cd /app && npm install',
      'CMD node dist/src/main.js run',
    ].join('\n');
    const { status, findings } = hadolint('-', careless);
    expect(status).not.toBe(0);
    expect(findings.map((f) => f.code).sort()).toEqual(['DL3003', 'DL3007', 'DL3020', 'DL3025']);
  });

  it('starts the compiled CLI with `run` and the V8 flags, reading the original config path by default', () => {
    const stage = finalStage();
    const exec = (keyword: string) =>
      JSON.parse(stage.find((i) => i.keyword === keyword)?.args ?? 'null') as unknown;
    const pkg = JSON.parse(readFileSync(`${REPO_ROOT}/package.json`, 'utf8')) as {
      bin: Record<string, string>;
    };
    expect(exec('ENTRYPOINT')).toEqual(['node', ...V8_FLAGS, pkg.bin['mongo-bigquery-archiver']]);
    expect(exec('CMD')).toEqual(['run']);
    expect(DEFAULT_CONFIG_PATH).toBe('/config-local/config.json');
  });
});

describe('issue 10 item 20: the image carries neither the demo nor the test peers', () => {
  it("the build compiles src without the demo, which brings the peers' launcher (scripts/peers)", () => {
    const tsc = `${REPO_ROOT}/node_modules/typescript/bin/tsc`;
    const result = runTool(process.execPath, [tsc, '-p', 'tsconfig.build.json', '--listFilesOnly']);
    expect(result.status, result.output).toBe(0);
    const compiled = result.stdout
      .split('\n')
      .filter((line) => line !== '' && !line.includes('/node_modules/'))
      .map((file) => relative(REPO_ROOT, file));
    expect(compiled).toContain('src/main.ts');
    expect(compiled.filter((file) => !file.startsWith('src/') || file === 'src/cli/demo.ts')).toEqual([]);
  });

  it('neither the build context nor any stage takes scripts/', () => {
    const ignore = readFileSync(`${REPO_ROOT}/.dockerignore`, 'utf8').split('\n');
    expect(ignore.filter((line) => line.startsWith('!'))).toEqual([
      '!package.json',
      '!package-lock.json',
      '!tsconfig.json',
      '!tsconfig.build.json',
      '!src/',
    ]);
    expect(readFileSync(DOCKERFILE, 'utf8')).not.toMatch(/^COPY .*scripts/m);
  });
});

describe('every launcher passes the V8 flags', () => {
  const pkg = JSON.parse(readFileSync(`${REPO_ROOT}/package.json`, 'utf8')) as {
    scripts: Record<string, string>;
  };

  it('the command installed as `mongo-bigquery-archiver` (its #! line)', () => {
    const firstLine = readFileSync(`${REPO_ROOT}/src/main.ts`, 'utf8').split('\n')[0];
    expect(firstLine).toBe(`#!/usr/bin/env -S node ${V8_FLAGS.join(' ')}`);
  });

  it.each(['start', 'demo', 'bench:pipeline'])('npm run %s', (script) => {
    expect(pkg.scripts[script]?.split(' ')).toEqual(expect.arrayContaining([...V8_FLAGS]));
  });
});
