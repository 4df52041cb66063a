// Transform benchmark (docs/bigquery.md, "Pipeline benchmark"): documents/s of the floor (BSON decode + JSON.stringify of the
// decoded document) versus decode + our conversion + row serialization, both in this process, one core.
import { deserialize } from 'bson';
import { inferColumns } from '../src/schema/infer.js';
import { BSON_DECODE_OPTIONS } from '../src/base/bson-kind.js';
import { compileRowMapper } from '../src/transform/row-mapper.js';
import { compare } from './measure.js';
import { SHAPES, shapeDocuments } from './shapes.js';

const DOCUMENTS = 2_000;
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const ROUND_MS = Number(process.env.BENCH_ROUND_MS ?? 1_000);

const lines: string[] = [];
for (const shape of SHAPES) {
  const buffers = shapeDocuments(shape, DOCUMENTS);
  const columns = await inferColumns(buffers.slice(0, 200).map((b) => deserialize(b, BSON_DECODE_OPTIONS)));
  const mapper = compileRowMapper(columns);
  const avgBytes = Math.round(buffers.reduce((n, b) => n + b.length, 0) / buffers.length);
  const result = compare(
    buffers,
    (b) => JSON.stringify(deserialize(b)),
    (b) => JSON.stringify(mapper.map(deserialize(b, BSON_DECODE_OPTIONS)).row),
    { rounds: ROUNDS, ms: ROUND_MS },
  );
  const ratio = result.value / result.floor;
  console.log(
    `${shape.padEnd(11)} avg ${String(avgBytes).padStart(6)} B  floor ${Math.round(result.floor).toLocaleString('en')}/s  ` +
      `transform ${Math.round(result.value).toLocaleString('en')}/s  ratio ${ratio.toFixed(2)}`,
  );
  lines.push(
    JSON.stringify({
      bench: 'transform',
      shape,
      floor_per_s: Math.round(result.floor),
      value_per_s: Math.round(result.value),
      ratio: Number(ratio.toFixed(3)),
    }),
  );
}
for (const line of lines) console.log(line);
