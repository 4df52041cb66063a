import { type Db } from 'mongodb';
import { connectMongo, connectNamingMongo } from '../app/archiver.js';
import { closestName } from '../config/suggest.js';
import { ConfigError } from '../errors.js';
import { sampleDocuments } from '../mongodb/sampler.js';
import { inferColumns } from '../schema/infer.js';
import { EXIT, loadConfig, type GlobalOptions } from './common.js';

/**
 * Why `collection` cannot be sampled in `db`, or undefined when it exists. Sampling a collection that does not
 * exist reads nothing and infers only `_id`, which looks like an answer: a misspelt name must say so instead.
 */
export async function missingCollectionProblem(db: Db, collection: string): Promise<string | undefined> {
  let names: string[];
  try {
    // `authorizedCollections`: a user allowed to read some collections but not to list the database's still
    // gets those it may read (MongoDB 4.0 and later), instead of being refused.
    names = (await db.listCollections({}, { nameOnly: true, authorizedCollections: true }).toArray()).map(
      (c) => c.name,
    );
  } catch {
    // Not allowed even so: the check is a convenience, the sample is what was asked for.
    return undefined;
  }
  if (names.includes(collection)) return undefined;
  if (names.length === 0)
    return `database ${db.databaseName} has no collections (is the database name right?)`;
  const meant = closestName(collection, names);
  return (
    `no collection ${collection} in database ${db.databaseName}` +
    (meant === undefined ? '' : `; did you mean ${db.databaseName}.${meant}?`)
  );
}

/**
 * Prints the column specs inferred from a bounded sample of `<db.collection>` (original settings format).
 * A collection that does not exist fails (exit 1) naming it; an empty one prints `_id` alone and says why.
 */
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
    await connectNamingMongo(mongo, config.MONGO_CLIENT);
    const db = mongo.db(target.slice(0, dot));
    const name = target.slice(dot + 1);
    const problem = await missingCollectionProblem(db, name);
    if (problem !== undefined) {
      console.error(`error: ${problem}`);
      return EXIT.failure;
    }
    const maxSamples = options.samples === undefined ? 1_000 : Number.parseInt(options.samples, 10);
    const sample = await sampleDocuments(db.collection(name), {
      maxSamples,
      signal: AbortSignal.timeout(120_000),
    });
    if (sample.length === 0) console.error(`note: ${target} holds no documents: only _id can be inferred`);
    console.log(JSON.stringify(await inferColumns(sample), null, 2));
    return EXIT.ok;
  } finally {
    await mongo.close();
  }
}
