import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { bigQueryTestEnv, BIGQUERY_TEST_PROJECT } from './bigquery-env.js';
import { buildOnce, contentKey } from './cache.js';
import { REPO_ROOT } from './paths.js';
import { PYTHON, PYTHON_VENV_PREREQUISITE, pythonIdentity } from './python.js';
import { awaitReady, freePort, httpOk, run, spawnPeerProcess, startedPeer, tcpOpen } from './process.js';
import { type PeerDefinition, type StartedPeer } from './types.js';

const NAME = 'bqemulator';
const VERSION = '1.4.0';
const SOURCE_DIR = join(REPO_ROOT, 'scripts', 'peers', 'bqemulator');
/** Exact versions of every package in the venv (bqemulator is young; a floating dependency could break it). */
const CONSTRAINTS = join(SOURCE_DIR, 'constraints.txt');
const INSTALL_SPATIAL = join(SOURCE_DIR, 'install_spatial.py');
/** Runs the emulator's own command with its DuckDB work on one thread and more gRPC threads (see the file). */
const SERIAL_START = join(SOURCE_DIR, 'serial_start.py');
/** Top-level packages; their versions, and those of everything they pull in, come from CONSTRAINTS. */
const PACKAGES = ['bqemulator', 'duckdb', 'duckdb-extension-spatial', 'numpy'] as const;
const INSTALL_TIMEOUT_MS = 15 * 60_000;
const START_TIMEOUT_MS = 60_000;

function installDir(cacheDir: string): string {
  const key = contentKey([VERSION, pythonIdentity()], [CONSTRAINTS, INSTALL_SPATIAL]);
  return join(cacheDir, `${NAME}-${VERSION}-${key}`);
}

/** HOME of the emulator: DuckDB keeps its extensions under `$HOME/.duckdb`, so it must be ours, not the user's. */
function duckdbHome(dir: string): string {
  return join(dir, 'home');
}

export const bqemulator: PeerDefinition = {
  name: NAME,
  kind: 'bigquery',
  version: VERSION,
  prerequisites: [PYTHON_VENV_PREREQUISITE],

  async install(ctx) {
    const built = await buildOnce(installDir(ctx.cacheDir), async (target) => {
      ctx.log(`installing ${NAME} ${VERSION} into a venv (pip, pinned versions)`);
      const logFile = join(target, 'install.log');
      const venv = join(target, 'venv');
      await run(PYTHON, ['-m', 'venv', venv], { logFile });
      await run(
        join(venv, 'bin', 'python'),
        ['-m', 'pip', 'install', '--disable-pip-version-check', '--no-input', '-c', CONSTRAINTS, ...PACKAGES],
        { logFile, timeoutMs: INSTALL_TIMEOUT_MS },
      );
      mkdirSync(duckdbHome(target), { recursive: true });
      await run(join(venv, 'bin', 'python'), [INSTALL_SPATIAL], {
        logFile,
        env: { ...process.env, HOME: duckdbHome(target) },
      });
    });
    if (!built) ctx.log(`${NAME} ${VERSION} already installed`);
  },

  start: (ctx) => startBqemulator({ cacheDir: ctx.cacheDir, runDir: ctx.runDir }),
};

export interface BqemulatorOptions {
  /** The peers' cache (`PeerContext.cacheDir`, that is `peersCacheRoot()`), where `install` put the venv. */
  readonly cacheDir: string;
  /** Its log goes to `<runDir>/logs/<name>.log`, its pid file under `<runDir>/pids` (see spawnPeerProcess). */
  readonly runDir: string;
  /** Names the log and pid files: instances running side by side, or one after another, need their own. */
  readonly name?: string;
  /** Ports to listen on, free ones when omitted; a restart passes the previous instance's ports. */
  readonly restPort?: number;
  readonly grpcPort?: number;
  /** File-backed storage (`--persistent`) in this folder, kept across restarts; in memory when omitted. */
  readonly dataDir?: string;
}

export interface RunningBqemulator extends StartedPeer {
  readonly restPort: number;
  readonly grpcPort: number;
}

/**
 * Starts an installed bqemulator on loopback and resolves once it answers REST and gRPC. The test peer is
 * one in-memory instance; a test that needs to stop the emulator and start it again with its data starts
 * its own instance with a `dataDir` and fixed ports.
 */
export async function startBqemulator(options: BqemulatorOptions): Promise<RunningBqemulator> {
  const dir = installDir(options.cacheDir);
  const name = options.name ?? NAME;
  const restPort = options.restPort ?? (await freePort());
  const grpcPort = options.grpcPort ?? (await freePort());
  const storage =
    options.dataDir === undefined ? ['--ephemeral'] : ['--persistent', '--data-dir', options.dataDir];
  const peer = spawnPeerProcess(
    name,
    join(dir, 'venv', 'bin', 'python'),
    [
      SERIAL_START,
      'start',
      ...storage,
      '--project',
      BIGQUERY_TEST_PROJECT,
      '--rest-host',
      '127.0.0.1',
      '--rest-port',
      String(restPort),
      '--grpc-host',
      '127.0.0.1',
      '--grpc-port',
      String(grpcPort),
      '--log-level',
      'info',
    ],
    {
      runDir: options.runDir,
      env: {
        ...process.env,
        HOME: duckdbHome(dir),
        // The Avro/ORC extensions would be downloaded at start; the tests do not load such files.
        BQEMU_ENABLE_FORMAT_EXTENSIONS: 'false',
      },
    },
  );
  try {
    await awaitReady(
      peer,
      name,
      async () => (await httpOk(`http://127.0.0.1:${restPort}/readyz`)) && (await tcpOpen(grpcPort)),
      START_TIMEOUT_MS,
    );
  } catch (error) {
    await startedPeer(peer, {}).stop();
    throw error;
  }
  return { ...startedPeer(peer, bigQueryTestEnv(NAME, { restPort, grpcPort })), restPort, grpcPort };
}
