/**
 * The V8 setting the archiver is meant to run with. Change events are decoded into many small objects that
 * live for one batch (up to a second): with Node's default young generation (16 MB semi-spaces) most of
 * them survive a scavenge and get copied into the old generation, so garbage collection took a quarter of
 * the stream loop's time. 64 MB semi-spaces let them die young: about 25% more events per second on one
 * core and a lower backfill peak (`npm run bench:pipeline`, docs/bigquery.md). V8 reads the flag only at
 * start-up, so every launcher passes it: the `mongo-bigquery-archiver` command (its `#!` line), the
 * container image, `npm start`, `npm run demo` and the benchmark.
 */
export const SEMI_SPACE_MB = 64;
export const SEMI_SPACE_FLAG = `--max-semi-space-size=${SEMI_SPACE_MB}`;

const SEMI_SPACE_ARG = /^--max[-_]semi[-_]space[-_]size(?:=(\d+))?$/;

/**
 * The semi-space size (MB) this process was started with, from its node arguments or NODE_OPTIONS (the
 * later wins, as in node), or undefined when it runs with V8's default.
 */
export function configuredSemiSpaceMb(
  execArgv: readonly string[] = process.execArgv,
  nodeOptions: string | undefined = process.env.NODE_OPTIONS,
): number | undefined {
  const args = [...(nodeOptions ?? '').split(/\s+/), ...execArgv];
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
