import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, readdirSync } from 'node:fs';
import { basename, join } from 'node:path';
import { buildOnce } from './cache.js';
import {
  awaitReady,
  freePort,
  PeerSetupError,
  run,
  spawnPeerProcess,
  startedPeer,
  tcpOpen,
} from './process.js';
import { type PeerDefinition } from './types.js';

const VERSION = '6.3.6';
const ARTIFACT = `de.caluga:poppydb:${VERSION}:jar:cli`;
const JAR_NAME = `poppydb-${VERSION}-cli.jar`;
const MIN_JAVA_MAJOR = 21;
const JVM_ROOT = '/usr/lib/jvm';
const START_TIMEOUT_MS = 60_000;
/** Replica-set name the server announces; change streams, sessions and the driver's topology rely on it. */
const REPLICA_SET = 'rs0';
/**
 * Escape hatch for machines whose Maven registry does not serve the artifact: a path to a
 * `poppydb-<version>-cli.jar` obtained elsewhere, copied into the cache instead of downloading.
 */
const JAR_OVERRIDE_ENV = 'MBA_POPPYDB_JAR';
const JAVA_HINT =
  `Java ${MIN_JAVA_MAJOR} or newer: set JAVA_HOME to such a JDK, or install one under ${JVM_ROOT} ` +
  '(for example Temurin 25)';

function installDir(cacheDir: string): string {
  return join(cacheDir, `poppydb-${VERSION}`);
}

/** Major version of a `java` binary (8 for "1.8.0_x"), or undefined when it does not run. */
function javaMajorVersion(javaBin: string): number | undefined {
  const result = spawnSync(javaBin, ['-version'], { encoding: 'utf8', timeout: 30_000 });
  if (result.error || result.status !== 0) return undefined;
  const match = /version "(\d+)(?:\.(\d+))?/.exec(`${result.stderr}${result.stdout}`);
  if (!match?.[1]) return undefined;
  const first = Number(match[1]);
  return first === 1 && match[2] ? Number(match[2]) : first;
}

/** JAVA_HOME, then `java` on PATH, then the JDKs under /usr/lib/jvm (newest name first). */
function javaCandidates(): string[] {
  const candidates: string[] = [];
  const javaHome = process.env.JAVA_HOME;
  if (javaHome) candidates.push(join(javaHome, 'bin', 'java'));
  candidates.push('java');
  if (existsSync(JVM_ROOT)) {
    const jdks = readdirSync(JVM_ROOT)
      .map((name) => join(JVM_ROOT, name, 'bin', 'java'))
      .filter((bin) => existsSync(bin))
      .sort()
      .reverse();
    // Temurin 25 is the JDK our machines are known to carry; try it before the others.
    candidates.push(...jdks.filter((bin) => bin.includes('temurin-25')), ...jdks);
  }
  return [...new Set(candidates)];
}

function findJava(): string {
  const tried: string[] = [];
  for (const bin of javaCandidates()) {
    const major = javaMajorVersion(bin);
    if (major !== undefined && major >= MIN_JAVA_MAJOR) return bin;
    tried.push(`${bin} (${major === undefined ? 'does not run' : `Java ${major}`})`);
  }
  throw new PeerSetupError(`test peer poppydb needs ${JAVA_HINT}; tried: ${tried.join(', ')}`);
}

async function downloadJar(target: string, cacheDir: string, logFile: string): Promise<void> {
  try {
    await run(
      'mvn',
      [
        '-B',
        '-q',
        `-Dmaven.repo.local=${join(cacheDir, 'maven-repository')}`,
        'org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy',
        `-Dartifact=${ARTIFACT}`,
        `-DoutputDirectory=${target}`,
      ],
      // No pom.xml in `target`: Maven runs its stub project and needs nothing from the repository.
      { cwd: target, logFile, timeoutMs: 15 * 60_000 },
    );
  } catch (error) {
    const mavenError =
      error instanceof Error ? /Could not find artifact [^ ]+/.exec(error.message)?.[0] : undefined;
    throw new PeerSetupError(
      `could not fetch ${ARTIFACT} from the Maven registry (${mavenError ?? String(error)}); ` +
        `if this machine's registry does not serve it, point ${JAR_OVERRIDE_ENV} at a ${JAR_NAME}`,
      { cause: error },
    );
  }
}

export const poppyDb: PeerDefinition = {
  name: 'poppydb',
  kind: 'mongodb',
  version: VERSION,
  // Java 21+ is checked by findJava(): a PATH lookup cannot express a minimum version.
  prerequisites: [
    {
      command: 'mvn',
      versionArgs: ['-v'],
      hint: 'Apache Maven 3.8 or newer (Debian: apt-get install maven)',
    },
  ],

  async install(ctx) {
    findJava();
    const override = process.env[JAR_OVERRIDE_ENV];
    const built = await buildOnce(installDir(ctx.cacheDir), async (target) => {
      if (override) {
        if (basename(override) !== JAR_NAME) {
          throw new PeerSetupError(`${JAR_OVERRIDE_ENV} must name a ${JAR_NAME}, got ${override}`);
        }
        ctx.log(`installing poppydb ${VERSION} from ${override}`);
        copyFileSync(override, join(target, JAR_NAME));
        return;
      }
      ctx.log(`installing poppydb ${VERSION} (Maven download)`);
      await downloadJar(target, ctx.cacheDir, join(target, 'install.log'));
    });
    if (!built) ctx.log(`poppydb ${VERSION} already installed`);
  },

  async start(ctx) {
    const java = findJava();
    const jar = join(installDir(ctx.cacheDir), JAR_NAME);
    const port = await freePort();
    const peer = spawnPeerProcess(
      'poppydb',
      java,
      [
        '-Xmx2g',
        '-XX:+UseSerialGC',
        '-jar',
        jar,
        '--port',
        String(port),
        '--bind',
        '127.0.0.1',
        // A stray ~/.config/poppydb/config or /etc/poppydb.conf must not change what the tests talk to.
        '--no-config',
        '--rs-name',
        REPLICA_SET,
      ],
      { runDir: ctx.runDir },
    );
    await awaitReady(peer, 'poppydb', () => tcpOpen(port), START_TIMEOUT_MS);
    return startedPeer(peer, {
      MBA_TEST_MONGODB_PEER: 'poppydb',
      // PoppyDB's docs advise retryWrites=false (it announces no retryable writes); directConnection
      // keeps the driver on this one address instead of running replica-set discovery.
      MBA_TEST_MONGODB_URI: `mongodb://127.0.0.1:${port}/?directConnection=true&retryWrites=false`,
    });
  },
};
