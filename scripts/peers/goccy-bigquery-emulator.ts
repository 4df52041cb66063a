import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { bigQueryTestEnv, BIGQUERY_TEST_PROJECT } from './bigquery-env.js';
import { buildOnce } from './cache.js';
import {
  awaitReady,
  freePort,
  httpOk,
  PeerSetupError,
  run,
  spawnPeerProcess,
  startedPeer,
  tcpOpen,
} from './process.js';
import { type PeerDefinition } from './types.js';

const NAME = 'goccy-bigquery-emulator';
const VERSION = '0.8.1';
const MODULE = 'github.com/goccy/bigquery-emulator';
// A cold build compiles the GoogleSQL analyzer (pure Go since 2026): about 6 minutes and 6 GB on 2 cores.
const BUILD_TIMEOUT_MS = 30 * 60_000;
const START_TIMEOUT_MS = 60_000;

function installDir(cacheDir: string): string {
  return join(cacheDir, `${NAME}-v${VERSION}`);
}

function binary(cacheDir: string): string {
  return join(installDir(cacheDir), 'bin', 'bigquery-emulator');
}

/**
 * Where `go mod download` put the module source. `go install module@version` cannot be used: it asks the
 * proxy for the module's version list (deprecation check), which some proxies refuse, while the exact
 * version is served. The download needs a module to run in, hence the throwaway `go.mod`.
 */
async function downloadModule(workDir: string, logFile: string): Promise<string> {
  mkdirSync(workDir, { recursive: true });
  await run('go', ['mod', 'init', 'mba-peers/goccy-download'], { cwd: workDir, logFile });
  const json = await run('go', ['mod', 'download', '-json', `${MODULE}@v${VERSION}`], {
    cwd: workDir,
    logFile,
    captureStdout: true,
    timeoutMs: BUILD_TIMEOUT_MS,
  });
  const parsed = JSON.parse(json) as { Dir?: unknown };
  if (typeof parsed.Dir !== 'string') {
    throw new PeerSetupError(`go mod download ${MODULE}@v${VERSION} gave no source folder: ${json}`);
  }
  return parsed.Dir;
}

export const goccyBigQueryEmulator: PeerDefinition = {
  name: NAME,
  kind: 'bigquery',
  version: VERSION,
  prerequisites: [
    {
      command: 'go',
      versionArgs: ['version'],
      hint: 'Go 1.25 or newer (https://go.dev/doc/install; the first build needs about 6 GB of memory)',
    },
  ],

  async install(ctx) {
    const built = await buildOnce(installDir(ctx.cacheDir), async (target) => {
      ctx.log(
        `building ${NAME} ${VERSION} with go (a cold build takes several minutes; later builds reuse the Go caches)`,
      );
      const logFile = join(target, 'install.log');
      const sourceDir = await downloadModule(join(target, 'download'), logFile);
      // Built inside the module's own folder so its go.mod and go.sum pin every dependency.
      await run('go', ['build', '-trimpath', '-o', binary(ctx.cacheDir), './cmd/bigquery-emulator'], {
        cwd: sourceDir,
        logFile,
        timeoutMs: BUILD_TIMEOUT_MS,
      });
    });
    if (!built) ctx.log(`${NAME} ${VERSION} already installed`);
  },

  async start(ctx) {
    const [restPort, grpcPort] = [await freePort(), await freePort()];
    const peer = spawnPeerProcess(
      NAME,
      binary(ctx.cacheDir),
      [
        `--project=${BIGQUERY_TEST_PROJECT}`,
        '--host=127.0.0.1',
        `--port=${restPort}`,
        `--grpc-port=${grpcPort}`,
        '--log-level=info',
      ],
      { runDir: ctx.runDir },
    );
    // No --database: the emulator keeps its SQLite data in memory, gone when it stops.
    const datasetsUrl = `http://127.0.0.1:${restPort}/bigquery/v2/projects/${BIGQUERY_TEST_PROJECT}/datasets`;
    await awaitReady(
      peer,
      NAME,
      async () => (await httpOk(datasetsUrl)) && (await tcpOpen(grpcPort)),
      START_TIMEOUT_MS,
    );
    return startedPeer(peer, bigQueryTestEnv(NAME, { restPort, grpcPort }));
  },
};
