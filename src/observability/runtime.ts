import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';

/**
 * The V8 settings the archiver is meant to run with (`npm run bench:pipeline`, docs/bigquery.md):
 *
 * - `--max-semi-space-size=64`: change events are decoded into many small objects that live for one batch
 *   (up to a second). With Node's default young generation (16 MB semi-spaces) most of them survive a
 *   scavenge and get copied into the old generation: garbage collection took a quarter of the stream loop's
 *   time. With 64 MB semi-spaces they die young: about 20% more events per second on one core.
 * - `--no-allocation-site-pretenuring`: during a backfill, whole chunks of decoded documents outlive the
 *   young generation, and V8 learns to allocate objects from those sites (the BSON decoder's) directly in
 *   the old generation. It keeps doing so once the mapping streams, where they die young: in half the runs
 *   of the benchmark, streaming after a backfill ran 20% slower, its scavenges five times longer. Without
 *   pretenuring, every run kept its speed.
 *
 * V8 reads its flags only at start-up, so every launcher passes them: the `mongo-bigquery-archiver` command
 * (its `#!` line), the container image, `npm start`, `npm run demo`, the benchmark and the daemon tests.
 */
export const SEMI_SPACE_MB = 64;
export const SEMI_SPACE_FLAG = `--max-semi-space-size=${SEMI_SPACE_MB}`;
export const NO_PRETENURING_FLAG = '--no-allocation-site-pretenuring';
export const V8_FLAGS: readonly string[] = [SEMI_SPACE_FLAG, NO_PRETENURING_FLAG];

const SEMI_SPACE_ARG = /^--max[-_]semi[-_]space[-_]size(?:=(\d+))?$/;
const PRETENURING_ARG = /^--(no[-_]?)?allocation[-_]site[-_]pretenuring$/;

/** Node's arguments in the order node applies them: NODE_OPTIONS first, then the command line's. */
function nodeArgs(execArgv: readonly string[], nodeOptions: string | undefined): string[] {
  return [...(nodeOptions ?? '').split(/\s+/).filter(Boolean), ...execArgv];
}

/**
 * The semi-space size (MB) this process was started with, from its node arguments or NODE_OPTIONS (the
 * command line wins, as in node), or undefined when it runs with V8's default.
 */
export function configuredSemiSpaceMb(
  execArgv: readonly string[] = process.execArgv,
  nodeOptions: string | undefined = process.env.NODE_OPTIONS,
): number | undefined {
  const args = nodeArgs(execArgv, nodeOptions);
  let mb: number | undefined;
  for (const [index, arg] of args.entries()) {
    const match = SEMI_SPACE_ARG.exec(arg);
    if (!match) continue;
    const value = match[1] ?? args[index + 1];
    const parsed = Number(value);
    if (value !== undefined && Number.isInteger(parsed) && parsed > 0) mb = parsed;
  }
  return mb;
}

/** Whether allocation-site pretenuring was turned off (`--no-allocation-site-pretenuring`, the last word wins). */
export function pretenuringDisabled(
  execArgv: readonly string[] = process.execArgv,
  nodeOptions: string | undefined = process.env.NODE_OPTIONS,
): boolean {
  let disabled = false;
  for (const arg of nodeArgs(execArgv, nodeOptions)) {
    const match = PRETENURING_ARG.exec(arg);
    if (match) disabled = match[1] !== undefined;
  }
  return disabled;
}

/** The recommended flags this process was not started with (a smaller semi-space counts as missing). */
export function missingV8Flags(
  execArgv: readonly string[] = process.execArgv,
  nodeOptions: string | undefined = process.env.NODE_OPTIONS,
): string[] {
  const missing: string[] = [];
  if ((configuredSemiSpaceMb(execArgv, nodeOptions) ?? 0) < SEMI_SPACE_MB) missing.push(SEMI_SPACE_FLAG);
  if (!pretenuringDisabled(execArgv, nodeOptions)) missing.push(NO_PRETENURING_FLAG);
  return missing;
}

/** Reads a small system file's text; undefined when it is not there (another OS, another cgroup version). */
export type ReadSystemFile = (path: string) => string | undefined;

const readSystemFile: ReadSystemFile = (path) => {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
};

/**
 * The CPUs a cgroup quota lets this process use (a container's CPU limit: Kubernetes `resources.limits.cpu`,
 * `docker run --cpus`), from cgroup v2's `cpu.max` or v1's `cpu.cfs_quota_us` and `cpu.cfs_period_us`;
 * undefined without a quota.
 */
export function cgroupCpuLimit(read: ReadSystemFile = readSystemFile): number | undefined {
  const v2 = read('/sys/fs/cgroup/cpu.max')?.trim().split(/\s+/);
  if (v2 !== undefined) {
    const [quota, period] = v2;
    if (quota === undefined || quota === 'max') return undefined;
    const limit = Number(quota) / Number(period ?? 100_000);
    return Number.isFinite(limit) && limit > 0 ? limit : undefined;
  }
  const quota = Number(read('/sys/fs/cgroup/cpu/cpu.cfs_quota_us')?.trim());
  const period = Number(read('/sys/fs/cgroup/cpu/cpu.cfs_period_us')?.trim());
  if (!Number.isFinite(quota) || quota <= 0 || !Number.isFinite(period) || period <= 0) return undefined;
  return quota / period;
}

/**
 * The cores this process may keep busy: those it may run on (`availableParallelism`), no more than a
 * cgroup CPU quota allows, rounded down (at least 1). Node 20's `availableParallelism` does not read the
 * quota, so a container limited to one CPU on a large node would otherwise count the node's cores.
 */
export function availableCores(
  read: ReadSystemFile = readSystemFile,
  parallelism: number = availableParallelism(),
): number {
  const limit = cgroupCpuLimit(read);
  return limit === undefined ? parallelism : Math.max(1, Math.min(parallelism, Math.floor(limit)));
}
