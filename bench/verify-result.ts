/** What one run of `npm run bench:verify` measured (see bench/verify.ts). */
export interface VerifyBenchResult {
  /** Where the documents came from. */
  readonly source: string;
  readonly shape: string;
  readonly documents: number;
  /** Documents per second of the transform floor (BSON decode + JSON.stringify), measured in the same run. */
  readonly floorPerSecond: number;
  /** Documents per second verify digests on the MongoDB side (read in chunks, decode, map, hash). */
  readonly valuePerSecond: number;
  /**
   * The ratio of the two, when measured pass by pass (each pass against the floor rounds either side of it,
   * the median of those); the ratio of the two rates above when absent.
   */
  readonly ratio?: number;
}

/** The benchmark's JSON line: the rates, their ratio, and whether it meets the bound (ratio >= 0.5). */
export function verifyBenchLine(result: VerifyBenchResult): string {
  const ratio = result.ratio ?? result.valuePerSecond / result.floorPerSecond;
  return JSON.stringify({
    bench: 'verify',
    side: 'mongodb',
    source: result.source,
    shape: result.shape,
    documents: result.documents,
    floor_per_s: Math.round(result.floorPerSecond),
    value_per_s: Math.round(result.valuePerSecond),
    ratio: Number(ratio.toFixed(3)),
    ok: ratio >= MIN_VERIFY_RATIO,
  });
}

/** Issue 14, must-show 4: verify's MongoDB side runs at least at half the transform floor. */
export const MIN_VERIFY_RATIO = 0.5;
