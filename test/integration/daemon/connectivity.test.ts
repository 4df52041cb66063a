// Issue 13: `run` names the service it cannot reach and what to check, in its logs and its exit message,
// instead of a bare `connect ECONNREFUSED 127.0.0.1:1`.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { MongoClient } from 'mongodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { V8_FLAGS } from '../../../src/observability/runtime.js';
import { freePort } from '../../../scripts/peers/process.js';
import { daemonEnv, spawnDaemon } from '../support/daemon.js';

const DATASET = `connectivity_${randomBytes(4).toString('hex')}`;
const SETTINGS_DB = `connectivity_${randomBytes(4).toString('hex')}`;

let mongo: MongoClient;

beforeAll(async () => {
  mongo = new MongoClient(process.env.MBA_TEST_MONGODB_URI ?? '');
  await mongo.connect();
});

afterAll(async () => {
  await mongo.db(SETTINGS_DB).dropDatabase();
  await mongo.close();
});

describe('run: connectivity failures at start (issue 13)', () => {
  it('MongoDB on a closed port: exits 1 naming MongoDB, its host and MONGO_CLIENT, in the log and on stderr', async () => {
    const port = await freePort();
    const child = spawn(process.execPath, [...V8_FLAGS, '--import', 'tsx', 'src/main.ts', 'run'], {
      env: {
        ...process.env,
        ...daemonEnv(DATASET, SETTINGS_DB),
        MONGO_CLIENT: `mongodb://archiver:s3cret@127.0.0.1:${String(port)}/?serverSelectionTimeoutMS=1000`,
        LOG_LEVEL: 'info',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    const [code] = (await once(child, 'exit')) as [number | null];
    const line = `MongoDB at 127.0.0.1:${String(port)} unreachable (connection refused): check MONGO_CLIENT and that the server is running and reachable from here`;
    expect(code).toBe(1);
    expect(stderr.trim().split('\n').at(-1)).toBe(`error: ${line}`);
    const fatal = stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { level: string; msg: string })
      .find((l) => l.level === 'fatal');
    expect(fatal?.msg).toBe(`could not start: ${line}`);
    expect(stdout + stderr).not.toContain('s3cret');
  }, 60_000);

  it('BigQuery on a closed port: logs an error naming BigQuery and what to check, and keeps running', async () => {
    const port = await freePort();
    const daemon = spawnDaemon(
      {
        ...daemonEnv(DATASET, SETTINGS_DB),
        BIGQUERY_EMULATOR_ENDPOINT: `http://127.0.0.1:${String(port)}`,
        LOG_LEVEL: 'info',
      },
      { capture: true },
    );
    try {
      const expected = `BigQuery at http://127.0.0.1:${String(port)} unreachable (connection refused): check BIGQUERY_EMULATOR_ENDPOINT and BIGQUERY_EMULATOR_GRPC and that the emulator is running; the mappings retry`;
      const deadline = Date.now() + 45_000;
      while (!daemon.output().includes(expected) && Date.now() < deadline) await sleep(100);
      expect(daemon.output()).toContain(expected);
      expect(daemon.child.exitCode).toBeNull();
    } finally {
      daemon.child.kill('SIGTERM');
      await daemon.exited;
    }
  }, 60_000);
});
