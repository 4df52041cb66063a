import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { buildOnce, contentKey } from './cache.js';
import { REPO_ROOT } from './paths.js';
import { awaitReady, freePort, run, spawnPeerProcess, startedPeer } from './process.js';
import { type PeerDefinition } from './types.js';

const VERSION = '1.47.0';
const SOURCE_DIR = join(REPO_ROOT, 'scripts', 'peers', 'mongo-java-server');
const POM = join(SOURCE_DIR, 'pom.xml');
const LAUNCHER = join(SOURCE_DIR, 'Launcher.java');
const START_TIMEOUT_MS = 60_000;

function installDir(cacheDir: string): string {
  return join(cacheDir, `mongo-java-server-${VERSION}-${contentKey([VERSION], [POM, LAUNCHER])}`);
}

export const mongoJavaServer: PeerDefinition = {
  name: 'mongo-java-server',
  kind: 'mongodb',
  version: VERSION,
  prerequisites: [
    {
      command: 'java',
      versionArgs: ['-version'],
      hint: 'Java 17 or newer (Debian: apt-get install openjdk-17-jdk-headless)',
    },
    {
      command: 'javac',
      versionArgs: ['-version'],
      hint: 'a JDK, not only a JRE (Debian: apt-get install openjdk-17-jdk-headless)',
    },
    {
      command: 'mvn',
      versionArgs: ['-v'],
      hint: 'Apache Maven 3.8 or newer (Debian: apt-get install maven)',
    },
  ],

  async install(ctx) {
    const dir = installDir(ctx.cacheDir);
    const built = await buildOnce(dir, async (target) => {
      ctx.log(`installing mongo-java-server ${VERSION} (Maven resolve + launcher compile)`);
      const logFile = join(target, 'install.log');
      await run(
        'mvn',
        [
          '-B',
          '-q',
          '-f',
          POM,
          `-Dmaven.repo.local=${join(ctx.cacheDir, 'maven-repository')}`,
          'dependency:build-classpath',
          `-Dmdep.outputFile=${join(target, 'classpath.txt')}`,
        ],
        { logFile, timeoutMs: 15 * 60_000 },
      );
      const classpath = readFileSync(join(target, 'classpath.txt'), 'utf8').trim();
      await run('javac', ['-d', join(target, 'classes'), '-cp', classpath, LAUNCHER], { logFile });
    });
    if (!built) ctx.log(`mongo-java-server ${VERSION} already installed`);
  },

  async start(ctx) {
    const dir = installDir(ctx.cacheDir);
    const classpath = `${join(dir, 'classes')}:${readFileSync(join(dir, 'classpath.txt'), 'utf8').trim()}`;
    const port = await freePort();
    const peer = spawnPeerProcess(
      'mongo-java-server',
      'java',
      ['-Xmx2g', '-XX:+UseSerialGC', '-cp', classpath, 'Launcher', String(port)],
      { runDir: ctx.runDir },
    );
    await awaitReady(
      peer,
      'mongo-java-server',
      () => Promise.resolve(readFileSync(peer.logFile, 'utf8').includes('mongo-java-server ready on')),
      START_TIMEOUT_MS,
    );
    return startedPeer(peer, {
      MBA_TEST_MONGODB_PEER: 'mongo-java-server',
      MBA_TEST_MONGODB_URI: `mongodb://127.0.0.1:${port}/?directConnection=true`,
    });
  },
};
