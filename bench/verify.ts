// Verify benchmark (issue 14, must-show 4; docs/operations.md, "Verify"): documents per second verify digests
// on the MongoDB side (each range read in chunks as the backfill reads it, decoded as the driver decodes,
// mapped with the pipeline's mapper, hashed in the canonical row form) against the transform floor (BSON
// decode + JSON.stringify of the decoded document, as bench/transform.ts), measured alternately in the same
// run, one core: each pass against the mean of the floor rounds either side of it, the median of those
// ratios (bracketedRatio). The source is in-process (bench/backfill-source.ts: generated nested-1KB
// documents, no network), so the figure is verify's own cost, not MongoDB's. One JSON line per run.
import { deserialize } from 'bson';
import { documentHasher, digestSourceRange } from '../src/app/verifier.js';
import { BSON_DECODE_OPTIONS } from '../src/base/bson-kind.js';
import { inferColumns } from '../src/schema/infer.js';
import { compileRowMapper } from '../src/transform/row-mapper.js';
import { generatedSource } from './backfill-source.js';
import { bracketedRatio, median, throughput } from './measure.js';
import { shapeDocuments } from './shapes.js';
import { MIN_VERIFY_RATIO, verifyBenchLine } from './verify-result.js';

const DOCUMENTS = Number(process.env.BENCH_VERIFY_DOCS ?? 50_000);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const ROUND_MS = Number(process.env.BENCH_ROUND_MS ?? 1_000);
const CHUNK = 1_000;
const RANGES = 16;
const SHAPE = 'nested-1KB';

const buffers = shapeDocuments(SHAPE, 2_000);
const columns = await inferColumns(buffers.slice(0, 200).map((b) => deserialize(b, BSON_DECODE_OPTIONS)));
const hasher = documentHasher(compileRowMapper(columns));
const signal = new AbortController().signal;

/** One verify pass over the whole generated collection; documents per second. */
async function verifyPass(): Promise<number> {
  const source = generatedSource(DOCUMENTS, CHUNK, BSON_DECODE_OPTIONS, 0);
  const start = performance.now();
  let count = 0;
  for (const range of await source.split(RANGES, signal)) {
    count += (await digestSourceRange(source, range, hasher, false, signal)).count;
  }
  if (count !== DOCUMENTS) throw new Error(`verified ${String(count)} documents of ${String(DOCUMENTS)}`);
  return (count / (performance.now() - start)) * 1_000;
}

const floorRate = () => throughput(buffers, (b) => JSON.stringify(deserialize(b)), ROUND_MS);
const floor: number[] = [];
const value: number[] = [];
floorRate();
await verifyPass();
// Each pass is set against the floor rounds either side of it (their mean), so that the machine's speed
// drifting between rounds (a virtual machine's can move by a third from one second to the next) moves both
// sides of a ratio alike; the ratio reported is the median of the passes'.
floor.push(floorRate());
for (let i = 0; i < ROUNDS; i++) {
  value.push(await verifyPass());
  floor.push(floorRate());
}
const ratio = bracketedRatio(floor, value);
const line = verifyBenchLine({
  source: 'in-process (generated documents, no network)',
  shape: SHAPE,
  documents: DOCUMENTS,
  floorPerSecond: median(floor),
  valuePerSecond: median(value),
  ratio,
});
console.log(line);
if (ratio < MIN_VERIFY_RATIO) process.exitCode = 1;
