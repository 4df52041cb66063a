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
 * The ratio of a candidate to the floor when their rounds alternate floor, value, floor, …, floor (one more
 * floor than values): each value against the mean of the floor rounds either side of it, and the median of
 * those. A virtual machine's speed drifts from one second to the next (the floor has moved by half between
 * adjacent rounds here); set against its neighbours, each value shares its floor's conditions, where a
 * ratio of two medians can pair a fast floor round with a slow value round.
 */
export function bracketedRatio(floors: readonly number[], values: readonly number[]): number {
  if (values.length === 0 || floors.length !== values.length + 1) {
    throw new Error(
      `${String(values.length)} values need ${String(values.length + 1)} floor rounds around them`,
    );
  }
  return median(values.map((value, i) => value / (((floors[i] ?? 0) + (floors[i + 1] ?? 0)) / 2)));
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

/** One round of a measured path. */
export interface RoundResult {
  /** Items per second of wall time. */
  readonly perSecond: number;
  /** CPU time of the whole process (every thread) per second of wall time. */
  readonly cores: number;
  /** Items the rate counts. */
  readonly items: number;
  /** Items whose requests the round sent in all, when more than it counts (the wire bytes are theirs). */
  readonly wireItems?: number;
}

/**
 * Runs the asynchronous `pass` (which handles `items` items) repeatedly for about `ms` milliseconds; returns
 * items per second and the CPU time of the whole process (every thread) per second of wall time.
 */
export async function throughputAsync(
  items: number,
  pass: () => Promise<unknown>,
  ms: number,
): Promise<RoundResult> {
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

/** The peak resident set size seen by sampling every `everyMs` while it runs (in bytes). */
export class RssSampler {
  #peak: number;
  readonly #timer: ReturnType<typeof setInterval>;

  constructor(
    everyMs = 5,
    private readonly read: () => number = () => process.memoryUsage.rss(),
  ) {
    this.#peak = read();
    this.#timer = setInterval(() => {
      this.sample();
    }, everyMs);
  }

  sample(): void {
    this.#peak = Math.max(this.#peak, this.read());
  }

  /** Stops sampling; the peak, the last sample included. */
  stop(): number {
    clearInterval(this.#timer);
    this.sample();
    return this.#peak;
  }
}

/**
 * Resident bytes per byte of rows on the wire, for what is held while rows are read ahead or in flight: the
 * decoded change event (its document is kept for a dead letter until the batch is acknowledged), the row
 * object and its encoding. Measured with the recorded events of bench/change-events.ts (10,000 records
 * held, after a full garbage collection): 7.0 with Storage Write (protobuf sizes), 3.9 with insertAll (JSON
 * sizes); the bound takes a bit over twice the larger.
 */
export const RSS_PER_WIRE_BYTE = 15;

export interface RssBoundInputs {
  /** Resident set when the measurement starts (after warm-up: code, heap and buffers grown). */
  readonly baselineBytes: number;
  /** What the young generation may hold beyond the baseline between two scavenges (its two semi-spaces). */
  readonly youngGenerationBytes: number;
  /** Requests and bytes in flight at most. */
  readonly window: { readonly maxRequests: number; readonly maxBytes: number };
  /** Bytes of one request at most (the batch limit, or a full batch of the largest rows). */
  readonly batchBytes: number;
  /** Wire bytes of the rows read ahead and not sent yet: one batch in hand and one pull being mapped. */
  readonly readAheadBytes: number;
  /** Resident bytes per wire byte held (RSS_PER_WIRE_BYTE). */
  readonly perWireByte: number;
}

/**
 * The most a stream loop may hold resident: the baseline and the young generation's room, plus what the
 * window lets be in flight (its bytes, or its requests times the largest request when that is less) and what
 * is read ahead of it, each wire byte costing `perWireByte` resident bytes. Without backpressure the reading
 * would run ahead of BigQuery without bound.
 */
export function rssBound(inputs: RssBoundInputs): number {
  const inFlight = Math.min(inputs.window.maxBytes, inputs.window.maxRequests * inputs.batchBytes);
  return (
    inputs.baselineBytes +
    inputs.youngGenerationBytes +
    (inFlight + inputs.readAheadBytes) * inputs.perWireByte
  );
}
