import { spawnSync } from 'node:child_process';
import { PeerSetupError } from './process.js';
import { type Prerequisite } from './types.js';

/** The Python that venvs of pinned packages (bqemulator, the deploy linters) are made from. */
export const PYTHON = 'python3';

export const PYTHON_VENV_PREREQUISITE: Prerequisite = {
  command: PYTHON,
  // Checks the version and that venv and ensurepip exist (Debian ships them apart, in python3-venv).
  versionArgs: ['-c', 'import sys, venv, ensurepip; assert sys.version_info >= (3, 11), sys.version'],
  hint: 'Python 3.11 or newer with venv (Debian: apt-get install python3 python3-venv)',
};

/**
 * Version and prefix of the Python a venv would be made from, for a venv's cache key: a venv breaks when
 * its base Python changes.
 */
export function pythonIdentity(): string {
  const result = spawnSync(PYTHON, ['-c', 'import sys; print(sys.version, sys.base_prefix)'], {
    encoding: 'utf8',
    timeout: 30_000,
  });
  if (result.status !== 0) throw new PeerSetupError(`${PYTHON} does not run: ${result.stderr}`);
  return result.stdout.trim();
}
