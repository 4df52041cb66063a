import { connectMongo } from '../app/archiver.js';
import { ConfigError } from '../errors.js';
import { sampleDocuments } from '../mongodb/sampler.js';
import { inferColumns } from '../schema/infer.js';
import { EXIT, loadConfig, type GlobalOptions } from './common.js';

/** Prints the column specs inferred from a bounded sample of `<db.collection>` (original settings format). */
export async function inferSchemaCommand(
  target: string,
  options: GlobalOptions & { samples?: string },
): Promise<number> {
  const dot = target.indexOf('.');
  if (dot <= 0 || dot === target.length - 1)
    throw new ConfigError(`expected <database>.<collection>, got "${target}"`);
  const config = loadConfig(options);
  const mongo = connectMongo(config);
  try {
    await mongo.connect();
    const collection = mongo.db(target.slice(0, dot)).collection(target.slice(dot + 1));
    const maxSamples = options.samples === undefined ? 1_000 : Number.parseInt(options.samples, 10);
    const sample = await sampleDocuments(collection, { maxSamples, signal: AbortSignal.timeout(120_000) });
    console.log(JSON.stringify(await inferColumns(sample), null, 2));
    return EXIT.ok;
  } finally {
    await mongo.close();
  }
}
