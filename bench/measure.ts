/** Runs `fn` over all inputs repeatedly for about `ms` milliseconds; returns items per second. */
export function throughput<T>(inputs: readonly T[], fn: (input: T) => unknown, ms: number): number {
  let items = 0;
  let sink = 0;
  const start = performance.now();
  let elapsed = 0;
  while (elapsed < ms) {
    for (const input of inputs) {
      const out = fn(input);
      if (typeof out === 'string') sink += out.length;
    }
    items += inputs.length;
    elapsed = performance.now() - start;
  }
  if (sink < 0) throw new Error('unreachable: keeps the results alive');
  return (items / elapsed) * 1000;
}

export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? (sorted[mid] ?? 0) : ((sorted[mid - 1] ?? 0) + (sorted[mid] ?? 0)) / 2;
}

/**
 * Measures floor and candidate alternately (so drift in machine load hits both alike) and reports the
 * median rate of each.
 */
export function compare<T>(
  inputs: readonly T[],
  floor: (input: T) => unknown,
  value: (input: T) => unknown,
  options: { rounds: number; ms: number },
): { floor: number; value: number } {
  throughput(inputs, floor, options.ms);
  throughput(inputs, value, options.ms);
  const f: number[] = [];
  const v: number[] = [];
  for (let i = 0; i < options.rounds; i++) {
    f.push(throughput(inputs, floor, options.ms));
    v.push(throughput(inputs, value, options.ms));
  }
  return { floor: median(f), value: median(v) };
}

/**
 * Runs the asynchronous `pass` (which handles `items` items) repeatedly for about `ms` milliseconds; returns
 * items per second and the CPU time of the whole process (every thread) per second of wall time.
 */
export async function throughputAsync(
  items: number,
  pass: () => Promise<unknown>,
  ms: number,
): Promise<{ perSecond: number; cores: number; items: number }> {
  let done = 0;
  const cpu = process.cpuUsage();
  const start = performance.now();
  let elapsed = 0;
  while (elapsed < ms) {
    await pass();
    done += items;
    elapsed = performance.now() - start;
  }
  const used = process.cpuUsage(cpu);
  return {
    perSecond: (done / elapsed) * 1000,
    cores: (used.user + used.system) / 1000 / elapsed,
    items: done,
  };
}
