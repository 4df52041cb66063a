import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { createServer, Socket } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { type Prerequisite, type StartedPeer } from './types.js';

/** A setup problem a newcomer can fix; printed as a message, never as a stack trace. */
export class PeerSetupError extends Error {
  override readonly name = 'PeerSetupError';
}

export function missingPrerequisites(prerequisites: readonly Prerequisite[]): string[] {
  const missing: string[] = [];
  for (const p of prerequisites) {
    const result = spawnSync(p.command, [...p.versionArgs], { stdio: 'ignore', timeout: 30_000 });
    if (result.error || result.status !== 0) missing.push(`${p.command}: ${p.hint}`);
  }
  return missing;
}

export function assertPrerequisites(peerName: string, prerequisites: readonly Prerequisite[]): void {
  const missing = missingPrerequisites(prerequisites);
  if (missing.length > 0) {
    throw new PeerSetupError(
      `test peer ${peerName} needs programs that are missing or do not run:\n  - ${missing.join('\n  - ')}`,
    );
  }
}

export interface RunOptions {
  readonly cwd?: string;
  readonly env?: NodeJS.ProcessEnv;
  /** Appends the command's output to this file instead of keeping it in memory. */
  readonly logFile?: string;
  readonly timeoutMs?: number;
  /** Keeps standard output apart (returned by `run`) even when a log file takes the rest. */
  readonly captureStdout?: boolean;
}

/**
 * Runs a command to completion; fails with the tail of its output. Resolves to its standard output when
 * `captureStdout` is set, otherwise to an empty string.
 */
export async function run(
  command: string,
  args: readonly string[],
  options: RunOptions = {},
): Promise<string> {
  const logFd = options.logFile ? openSync(options.logFile, 'a') : undefined;
  const chunks: Buffer[] = [];
  const stdoutChunks: Buffer[] = [];
  try {
    const child = spawn(command, [...args], {
      cwd: options.cwd,
      env: options.env ?? process.env,
      stdio: ['ignore', options.captureStdout ? 'pipe' : (logFd ?? 'pipe'), logFd ?? 'pipe'],
    });
    child.stdout?.on('data', (c: Buffer) => (options.captureStdout ? stdoutChunks : chunks).push(c));
    child.stderr?.on('data', (c: Buffer) => chunks.push(c));
    const timer = options.timeoutMs ? setTimeout(() => child.kill('SIGKILL'), options.timeoutMs) : undefined;
    const code = await new Promise<number | null>((resolveExit, reject) => {
      child.once('error', reject);
      child.once('close', (c) => {
        resolveExit(c);
      });
    }).finally(() => {
      clearTimeout(timer);
    });
    if (code !== 0) {
      const output = options.logFile ? tailFile(options.logFile, 40) : Buffer.concat(chunks).toString('utf8');
      throw new PeerSetupError(
        `command failed (exit ${String(code)}): ${command} ${args.join(' ')}\n${lastLines(output, 40)}`,
      );
    }
    return Buffer.concat(stdoutChunks).toString('utf8');
  } finally {
    if (logFd !== undefined) closeSync(logFd);
  }
}

/** A free TCP port on the loopback interface. */
export async function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.unref();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      if (address === null || typeof address === 'string') {
        reject(new Error('no port assigned'));
        return;
      }
      server.close(() => {
        resolvePort(address.port);
      });
    });
  });
}

/**
 * A free loopback port below the kernel's ephemeral range, for a server stopped and started again on the
 * same port: while it is down, the port cannot be handed to an outgoing connection (which would keep the
 * server from binding it again), as one from the ephemeral range, like `freePort`'s, could be.
 */
export async function freePortOutsideEphemeralRange(): Promise<number> {
  const [low] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8')
    .trim()
    .split(/\s+/)
    .map(Number);
  const first = 10_000;
  const last = (low ?? 32_768) - 1;
  if (!(last > first)) return freePort();
  for (let attempt = 0; attempt < 100; attempt++) {
    const port = first + Math.floor(Math.random() * (last - first + 1));
    if (await canListen(port)) return port;
  }
  throw new PeerSetupError(`no free loopback port between ${first} and ${last}`);
}

async function canListen(port: number): Promise<boolean> {
  return new Promise((resolveFree) => {
    const server = createServer();
    server.unref();
    server.once('error', () => {
      resolveFree(false);
    });
    server.listen(port, '127.0.0.1', () => {
      server.close(() => {
        resolveFree(true);
      });
    });
  });
}

export async function tcpOpen(port: number, host = '127.0.0.1'): Promise<boolean> {
  return new Promise((resolveOpen) => {
    const socket = new Socket();
    const done = (open: boolean) => {
      socket.destroy();
      resolveOpen(open);
    };
    socket.setTimeout(1_000);
    socket.once('connect', () => {
      done(true);
    });
    socket.once('timeout', () => {
      done(false);
    });
    socket.once('error', () => {
      done(false);
    });
    socket.connect(port, host);
  });
}

export async function httpOk(url: string): Promise<boolean> {
  try {
    const response = await fetch(url, { signal: AbortSignal.timeout(2_000) });
    await response.body?.cancel();
    return response.ok;
  } catch {
    return false;
  }
}

export interface SpawnedPeerProcess {
  readonly name: string;
  readonly runDir: string;
  readonly child: ChildProcess;
  readonly pid: number;
  readonly logFile: string;
  /** Set once the process has exited (with its code or signal). */
  exited(): string | undefined;
}

/**
 * Starts a long-running peer in its own process group, output to `logFile`, and records its pid under
 * `<runDir>/pids` so a later run can reap it if this runner was killed with SIGKILL.
 */
export function spawnPeerProcess(
  name: string,
  command: string,
  args: readonly string[],
  options: { readonly runDir: string; readonly env?: NodeJS.ProcessEnv; readonly cwd?: string },
): SpawnedPeerProcess {
  const logDir = join(options.runDir, 'logs');
  const pidDir = join(options.runDir, 'pids');
  mkdirSync(logDir, { recursive: true });
  mkdirSync(pidDir, { recursive: true });
  const logFile = join(logDir, `${name}.log`);
  const fd = openSync(logFile, 'w');
  const child = spawn(command, [...args], {
    cwd: options.cwd,
    env: options.env ?? process.env,
    stdio: ['ignore', fd, fd],
    detached: true,
  });
  closeSync(fd);
  if (child.pid === undefined) throw new PeerSetupError(`could not start ${name}: ${command}`);
  const pid = child.pid;
  writeFileSync(pidFile(options.runDir, name), pidRecord(pid));
  let exitStatus: string | undefined;
  child.once('exit', (code, signal) => {
    exitStatus = signal ? `signal ${signal}` : `exit code ${String(code)}`;
  });
  child.once('error', (error) => {
    exitStatus = `spawn error: ${error.message}`;
  });
  return { name, runDir: options.runDir, child, pid, logFile, exited: () => exitStatus };
}

/** The started peer handed to the runner: its environment, and a stop that also forgets its pid file. */
export function startedPeer(peer: SpawnedPeerProcess, env: Readonly<Record<string, string>>): StartedPeer {
  return {
    env,
    pid: peer.pid,
    logFile: peer.logFile,
    async stop() {
      await stopProcessGroup(peer.pid);
      forgetPid(peer.runDir, peer.name);
    },
    keep() {
      // Neither this process (which would wait for its child) nor its watchdog (which kills what is recorded
      // under this runner's pid) holds it any more; `peers stop` on the run folder still finds it.
      peer.child.unref();
      renameSync(pidFile(peer.runDir, peer.name), keptPidFile(peer.runDir, peer.name));
    },
  };
}

/** Polls `ready` until it answers true; fails early if the process died, with its log tail. */
export async function awaitReady(
  peer: SpawnedPeerProcess,
  what: string,
  ready: () => Promise<boolean>,
  timeoutMs: number,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const status = peer.exited();
    if (status !== undefined) {
      throw new PeerSetupError(
        `${what} exited during start-up (${status}); log:\n${tailFile(peer.logFile, 40)}`,
      );
    }
    if (await ready()) return;
    if (Date.now() > deadline) {
      throw new PeerSetupError(
        `${what} not ready after ${timeoutMs} ms; log:\n${tailFile(peer.logFile, 40)}`,
      );
    }
    await sleep(100);
  }
}

/**
 * The kernel's start time of `pid` (field 22 of /proc/<pid>/stat, in clock ticks since boot), or undefined
 * where there is no /proc: with the pid, it names one process, not whichever reuses its number later.
 */
export function processStartTime(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${String(pid)}/stat`, 'utf8');
    // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

/** What a pid file holds: the pid and, where known, its start time. */
export function pidRecord(pid: number): string {
  const started = processStartTime(pid);
  return started === undefined ? String(pid) : `${String(pid)} ${started}`;
}

/**
 * The pid of a pid file when that process still runs, undefined otherwise: a file kept across a reboot (a
 * demo's `--keep`) names a number that another process group may have now, and that one is not ours to stop.
 */
export function recordedPid(text: string): number | undefined {
  const [pidText, started] = text.trim().split(/\s+/);
  const pid = Number.parseInt(pidText ?? '', 10);
  if (!Number.isSafeInteger(pid) || pid <= 1) return undefined;
  if (started !== undefined && processStartTime(pid) !== started) return undefined;
  return pid;
}

function groupAlive(pid: number): boolean {
  try {
    process.kill(-pid, 0);
    return true;
  } catch {
    return false;
  }
}

function signalGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    // The group is already gone: nothing left to stop.
  }
}

/** SIGTERM to the whole process group, SIGKILL after `graceMs`; resolves once no member is left. */
export async function stopProcessGroup(pid: number, graceMs = 5_000): Promise<void> {
  signalGroup(pid, 'SIGTERM');
  const deadline = Date.now() + graceMs;
  while (groupAlive(pid) && Date.now() < deadline) await sleep(50);
  if (groupAlive(pid)) signalGroup(pid, 'SIGKILL');
  while (groupAlive(pid)) await sleep(20);
}

/** Synchronous last resort for `process.on('exit')`, where nothing can be awaited. */
export function killProcessGroupNow(pid: number): void {
  signalGroup(pid, 'SIGKILL');
}

/**
 * Records a process group started by a test (a daemon), so the watchdog of this process (startWatchdog) kills
 * it should this process die first. Forget it (forgetPid) once it exited: a recorded pid may be reused.
 */
export function rememberPid(runDir: string, name: string, pid: number): void {
  mkdirSync(join(runDir, 'pids'), { recursive: true });
  writeFileSync(pidFile(runDir, name), pidRecord(pid));
}

export function forgetPid(runDir: string, name: string): void {
  rmSync(pidFile(runDir, name), { force: true });
}

/** Kills peers left behind by a runner that could not clean up (for example after `kill -9`). */
export async function reapStalePeers(runDir: string, log: (m: string) => void): Promise<void> {
  const pidDir = join(runDir, 'pids');
  if (!existsSync(pidDir)) return;
  for (const file of readdirSync(pidDir)) {
    const match = /^(.+)\.(?:runner-(\d+)|kept)\.pid$/.exec(file);
    const runner = match?.[2] === undefined ? undefined : Number(match[2]);
    // A peer whose runner still lives belongs to a concurrent run in this checkout: leave it alone.
    if (runner !== undefined && runner !== process.pid && processAlive(runner)) continue;
    const pid = recordedPid(readFileSync(join(pidDir, file), 'utf8'));
    if (pid !== undefined && groupAlive(pid)) {
      const why =
        match && runner === undefined ? 'kept running by an earlier run' : 'left over from an earlier run';
      log(`stopping ${match?.[1] ?? file} (pid ${pid}) ${why}`);
      await stopProcessGroup(pid, 2_000);
    }
    rmSync(join(pidDir, file), { force: true });
  }
}

/**
 * Starts a detached watchdog that kills this runner's peers once the runner is gone, even after `kill -9`
 * (which no exit handler sees). It ends by itself when the runner exits.
 */
export function startWatchdog(runDir: string): void {
  const pidDir = join(runDir, 'pids');
  const watchdog = spawn('sh', ['-c', watchdogScript(process.pid), pidDir], {
    detached: true,
    stdio: 'ignore',
  });
  watchdog.unref();
}

/**
 * The watchdog's shell script (its `$0` is the pid folder): once `runnerPid` is gone, SIGKILL to every group
 * its pid files name. A file holds the pid, then its start time, with no newline at the end (so `read`
 * reports the end of the file, having read the words all the same).
 */
export function watchdogScript(runnerPid: number): string {
  return [
    `while kill -0 ${String(runnerPid)} 2>/dev/null; do sleep 1; done`,
    `for f in "$0"/*.runner-${String(runnerPid)}.pid; do`,
    '  [ -f "$f" ] || continue',
    '  read -r pid _ < "$f"',
    '  kill -KILL -"$pid" 2>/dev/null',
    '  rm -f "$f"',
    'done',
  ].join('\n');
}

/** The pid file of a peer left running on purpose (`demo --keep`): no runner's watchdog matches it. */
function keptPidFile(runDir: string, name: string): string {
  return join(runDir, 'pids', `${name}.kept.pid`);
}

/** The pid file of a peer, named after the runner that started it. */
function pidFile(runDir: string, name: string): string {
  return join(runDir, 'pids', `${name}.runner-${process.pid}.pid`);
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

export function tailFile(path: string, lines: number): string {
  if (!existsSync(path)) return `(no log at ${path})`;
  return lastLines(readFileSync(path, 'utf8'), lines);
}

function lastLines(text: string, lines: number): string {
  return text.trimEnd().split('\n').slice(-lines).join('\n');
}

/** Resident set size of a process tree in bytes, from /proc (Linux). */
export function treeRssBytes(rootPid: number): number {
  const children = new Map<number, number[]>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      const ppid = Number(fields[1]);
      const list = children.get(ppid) ?? [];
      list.push(Number(entry));
      children.set(ppid, list);
    } catch {
      // The process ended while we listed /proc.
    }
  }
  let total = 0;
  const stack = [rootPid];
  while (stack.length > 0) {
    const pid = stack.pop();
    if (pid === undefined) break;
    try {
      const status = readFileSync(`/proc/${pid}/status`, 'utf8');
      const match = /VmRSS:\s+(\d+) kB/.exec(status);
      if (match?.[1]) total += Number(match[1]) * 1024;
    } catch {
      // Gone already.
    }
    stack.push(...(children.get(pid) ?? []));
  }
  return total;
}
