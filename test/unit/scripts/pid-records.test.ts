import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { pidRecord, processStartTime, recordedPid, watchdogScript } from '../../../scripts/peers/process.js';

describe('pid files of the peers (issue 13 review: --keep survives reboots)', () => {
  it('name a process by its pid and start time, so a reused pid is not taken for it', () => {
    const record = pidRecord(process.pid);
    expect(record).toMatch(/^\d+ \d+$/);
    expect(recordedPid(record)).toBe(process.pid);
    // The same pid with another start time: a process that is not the one recorded.
    const started = Number(processStartTime(process.pid));
    expect(recordedPid(`${String(process.pid)} ${String(started + 1)}`)).toBeUndefined();
    // A file of an earlier release (the pid alone) is still read.
    expect(recordedPid(`${String(process.pid)}\n`)).toBe(process.pid);
    expect(recordedPid('1')).toBeUndefined();
    expect(recordedPid('nonsense')).toBeUndefined();
  });

  it("the watchdog kills the group its runner's pid file names, reading the pid alone", async () => {
    const dir = mkdtempSync(join(tmpdir(), 'pids-'));
    // A peer's stand-in: a group leader that would sleep for long.
    const peer = spawn('sleep', ['30'], { detached: true, stdio: 'ignore' });
    const killedBy = new Promise<NodeJS.Signals | null>((resolve) => {
      peer.once('exit', (_code, signal) => {
        resolve(signal);
      });
    });
    // A runner that is already gone: the watchdog goes straight to its pid files.
    const runner = spawn('true');
    await new Promise((resolve) => runner.once('exit', resolve));
    const runnerPid = runner.pid ?? 0;
    writeFileSync(join(dir, `mongo.runner-${String(runnerPid)}.pid`), pidRecord(peer.pid ?? 0));
    const watchdog = spawn('sh', ['-c', watchdogScript(runnerPid), dir], { stdio: 'ignore' });
    await new Promise((resolve) => watchdog.once('exit', resolve));
    expect(await killedBy).toBe('SIGKILL');
    expect(readdirSync(dir)).toEqual([]);
  });
});
