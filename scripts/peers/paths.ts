import { homedir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** Download/build caches; `MBA_PEERS_CACHE` overrides, so a cold install can be measured in an empty folder. */
export function peersCacheRoot(): string {
  const override = process.env.MBA_PEERS_CACHE;
  if (override) return resolve(override);
  const xdg = process.env.XDG_CACHE_HOME;
  return join(xdg ? resolve(xdg) : join(homedir(), '.cache'), 'mongo-bigquery-archiver', 'peers');
}

/**
 * Logs, pid files and data of running peers (git-ignored). `MBA_PEERS_RUN_DIR` overrides it so that two
 * runners in one checkout do not reap each other's peers as left-overs.
 */
export function peersRunRoot(): string {
  const override = process.env.MBA_PEERS_RUN_DIR;
  return override ? resolve(override) : join(REPO_ROOT, '.peers');
}
