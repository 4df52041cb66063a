import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MongoClient } from 'mongodb';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { inferSchemaCommand } from '../../../src/cli/infer-schema.js';
import { EXIT } from '../../../src/cli/common.js';

const uri = process.env.MBA_TEST_MONGODB_URI ?? '';
const DATABASE = `infer_cli_${String(process.pid)}`;
let client: MongoClient;
let configPath: string;

beforeAll(async () => {
  client = new MongoClient(uri);
  await client.connect();
  await client
    .db(DATABASE)
    .collection('ad_cpta')
    .insertMany([
      { tracking_code: 1, spend: 2.5 },
      { tracking_code: 2, spend: 3 },
    ]);
  await client.db(DATABASE).createCollection('empty');
  configPath = join(mkdtempSync(join(tmpdir(), 'mba-infer-')), 'config.json');
  writeFileSync(
    configPath,
    JSON.stringify({ MONGO_CLIENT: uri, BIGQUERY_PROJECT: 'test-project', BIGQUERY_DATASET: 'unused' }),
  );
});

afterAll(async () => {
  await client.db(DATABASE).dropDatabase();
  await client.close();
});

afterEach(() => {
  vi.restoreAllMocks();
});

/** Runs the command as `mongo-bigquery-archiver --config <file> infer-schema <target>` does; what it printed. */
async function inferSchema(target: string): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  vi.spyOn(console, 'log').mockImplementation((line: string) => out.push(line));
  vi.spyOn(console, 'error').mockImplementation((line: string) => err.push(line));
  const code = await inferSchemaCommand(target, { config: configPath });
  return { code, out: out.join('\n'), err: err.join('\n') };
}

describe('infer-schema against the MongoDB peer', () => {
  it('prints the columns inferred from the collection', async () => {
    const { code, out } = await inferSchema(`${DATABASE}.ad_cpta`);
    expect(code).toBe(EXIT.ok);
    expect((JSON.parse(out) as { name: string }[]).map((c) => c.name)).toEqual(
      expect.arrayContaining(['_id', 'tracking_code', 'spend']),
    );
  });

  // Issue 13: a missing collection printed `[_id]` and exited 0, as if the collection held documents of
  // that shape.
  it('issue 13: fails on a collection that does not exist, naming it and the one probably meant', async () => {
    expect(await inferSchema(`${DATABASE}.ad_cpt`)).toEqual({
      code: EXIT.failure,
      out: '',
      err: `error: no collection ad_cpt in database ${DATABASE}; did you mean ${DATABASE}.ad_cpta?`,
    });
    expect(await inferSchema(`${DATABASE}_nothing.ad_cpta`)).toEqual({
      code: EXIT.failure,
      out: '',
      err: `error: database ${DATABASE}_nothing has no collections (is the database name right?)`,
    });
  });

  it('says so when the collection exists but holds no documents', async () => {
    const { code, out, err } = await inferSchema(`${DATABASE}.empty`);
    expect(code).toBe(EXIT.ok);
    expect((JSON.parse(out) as { name: string }[]).map((c) => c.name)).toEqual(['_id']);
    expect(err).toBe(`note: ${DATABASE}.empty holds no documents: only _id can be inferred`);
  });
});
