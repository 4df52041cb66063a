import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MongoClient } from 'mongodb';
import { afterAll, describe, expect, it } from 'vitest';
import { reapStalePeers } from '../../scripts/peers/process.js';

/**
 * The demo as a user runs it (`npm run demo [-- --keep]`): its own process, its own stand-ins, in a run
 * folder of this test's, so that nothing it starts outlives the test.
 */
const runRoot = mkdtempSync(join(tmpdir(), 'mba-demo-test-'));
const demoRunDir = join(runRoot, 'demo');

afterAll(async () => {
  // Whatever a failed assertion left running.
  await reapStalePeers(demoRunDir, () => undefined);
  rmSync(runRoot, { recursive: true, force: true });
});

function runDemo(...args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts', 'demo', ...args], {
    env: { ...process.env, MBA_PEERS_RUN_DIR: runRoot, LOG_LEVEL: 'warn', NO_COLOR: '1' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  return new Promise((resolve) => {
    child.once('close', (code) => {
      resolve({ code, stdout, stderr });
    });
  });
}

/** The lines of one `== title` section of the demo's output, up to the next one. */
function section(stdout: string, title: string): string[] {
  const lines = stdout.split('\n');
  const start = lines.findIndex((line) => line.startsWith(`== ${title}`));
  if (start < 0) return [];
  const end = lines.findIndex((line, i) => i > start && line.startsWith('== '));
  return lines.slice(start + 1, end < 0 ? undefined : end).filter((line) => line.trim() !== '');
}

function after(stdout: string, label: string): string {
  const line = stdout.split('\n').find((l) => l.trimStart().startsWith(label));
  return line?.trimStart().slice(label.length).trim() ?? '';
}

function pidFiles(): string[] {
  const dir = join(demoRunDir, 'pids');
  return existsSync(dir) ? readdirSync(dir) : [];
}

async function mongoAnswers(uri: string): Promise<boolean> {
  const client = new MongoClient(uri, { serverSelectionTimeoutMS: 1_500 });
  try {
    await client.db('admin').command({ ping: 1 });
    return true;
  } catch {
    return false;
  } finally {
    await client.close();
  }
}

describe('issue 13: npm run demo', () => {
  it('prints clean tables, says why no replace row shows, shows status and metrics, and stops what it started', async () => {
    const { code, stdout, stderr } = await runDemo();
    expect(code, stderr).toBe(0);

    const history = section(stdout, 'history table facebook_ad_cpta');
    expect(history[0]).toMatch(/^ {3}operationType +tracking_code +spend +_seq$/);
    expect(history[1]).toMatch(/^ {3}-+ +-+ +-+ +-+$/);
    // console.table's index column and box drawing are gone.
    expect(stdout).not.toContain('(index)');
    expect(stdout).not.toMatch(/[┌│└]/u);
    const operations = history.slice(2).map((line) => line.trim().split(/\s+/)[0]);
    expect(operations.filter((op) => op === 'backfill')).toHaveLength(8);
    expect(operations.filter((op) => op === 'insert')).toHaveLength(2);
    expect(operations.filter((op) => op === 'delete')).toHaveLength(2);
    // 3 updates and 1 replace: the stand-in reports the replace as an update, and the demo says so.
    if (operations.includes('replace')) {
      expect(operations.filter((op) => op === 'update')).toHaveLength(3);
    } else {
      expect(operations.filter((op) => op === 'update')).toHaveLength(4);
      expect(history.join('\n')).toContain(
        'No `replace` row: the MongoDB stand-in reports the replace of tracking_code 48209 as an `update`',
      );
    }

    const view = section(stdout, 'facebook_ad_cpta_view');
    expect(view[0]).toMatch(/^ {3}_doc_id +tracking_code +spend +lifetime_cpta +operationType$/);
    expect(view.slice(2)).toHaveLength(8);

    const status = section(stdout, 'what `status` says');
    // The header, then the mapping streaming with its lag in seconds.
    expect(status.join('\n')).toMatch(/^MAPPING +STATE +LAG +BACKFILL/m);
    expect(status.join('\n')).toMatch(/^facebook_ad_cpta +streaming +\d+s /m);

    const metrics = section(stdout, 'a few lines of http://127.0.0.1:');
    expect(metrics).toContainEqual(
      expect.stringMatching(/^ {3}mba_replication_lag_seconds\{mapping="facebook_ad_cpta"\} \d/),
    );
    expect(metrics).toContainEqual(
      expect.stringMatching(
        /^ {3}mba_change_events_total\{mapping="facebook_ad_cpta",operation="insert"\} 2$/,
      ),
    );

    expect(section(stdout, 'next steps').join('\n')).toContain('docs/operations.md');
    expect(stdout).not.toContain('the stand-ins are still running');
    // Stopped: no peer of the demo is recorded as running any more.
    expect(pidFiles()).toEqual([]);
  }, 240_000);

  it('--keep leaves the stand-ins running with what was archived, prints how to reach them, and its stop command stops them', async () => {
    const { code, stdout, stderr } = await runDemo('--keep');
    expect(code, stderr).toBe(0);
    expect(section(stdout, 'next steps').length).toBeGreaterThan(0);
    const uri = after(stdout, 'MongoDB (MONGO_CLIENT):');
    const endpoint = after(stdout, 'BigQuery emulator (REST API):').split(/\s+/)[0] ?? '';
    expect(uri).toMatch(/^mongodb:\/\/127\.0\.0\.1:\d+\//);
    expect(endpoint).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(pidFiles().sort()).toEqual(expect.arrayContaining([expect.stringMatching(/\.kept\.pid$/)]));

    // The collection, through the printed connection string.
    const mongo = new MongoClient(uri);
    try {
      expect(await mongo.db('bidding').collection('ad_cpta').countDocuments()).toBe(8);
    } finally {
      await mongo.close();
    }

    // The printed query, as curl would send it.
    const curlLine = stdout.split('\n').find((line) => line.trimStart().startsWith('curl -s -X POST '));
    const bodyLine = stdout.split('\n').find((line) => line.trimStart().startsWith("-d '"));
    const url = curlLine?.trim().split(/\s+/)[4] ?? '';
    const body = bodyLine?.trim().slice("-d '".length, -1) ?? '';
    const answer = await fetch(url, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body,
    });
    expect(answer.status).toBe(200);
    expect(((await answer.json()) as { totalRows?: string }).totalRows).toBe('8');

    // The printed status command, run as printed, reads the kept stand-ins, even with a MONGO_CLIENT exported
    // for another deployment.
    const statusLine = after(stdout, 'status:');
    expect(statusLine).toMatch(/^env -i /);
    const status = spawnSync('bash', ['-c', statusLine], {
      encoding: 'utf8',
      env: { ...process.env, MONGO_CLIENT: 'mongodb://127.0.0.1:1/' },
    });
    expect(status.status, status.stderr).toBe(0);
    expect(status.stdout).toContain('facebook_ad_cpta');

    // The printed stop command.
    const stop = /Stop them: MBA_PEERS_RUN_DIR=(\S+) npm run peers -- stop/.exec(stdout);
    expect(stop?.[1]).toBe(demoRunDir);
    const stopped = spawnSync('npm', ['run', 'peers', '--', 'stop'], {
      env: { ...process.env, MBA_PEERS_RUN_DIR: stop?.[1] ?? '' },
      encoding: 'utf8',
    });
    expect(stopped.status, stopped.stderr).toBe(0);
    expect(stopped.stderr).toContain('kept running by an earlier run');
    expect(pidFiles()).toEqual([]);
    expect(await mongoAnswers(uri)).toBe(false);
    await expect(fetch(url, { method: 'POST', body })).rejects.toThrow();
  }, 240_000);
});
