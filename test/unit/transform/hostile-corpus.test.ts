import { describe, expect, it } from 'vitest';
import { parseColumnSpecs } from '../../../src/schema/column-spec.js';
import { inferColumns } from '../../../src/schema/infer.js';
import { historyTableSchema } from '../../../src/schema/table-schema.js';
import { compileRowMapper } from '../../../src/transform/row-mapper.js';
import { docIdString } from '../../../src/transform/values.js';
import { HOSTILE_DOCUMENTS } from '../../fixtures/hostile-documents.js';
import { lostLeaves, rowProblems } from '../../support/row-oracle.js';

const METADATA = {
  time_archived: '2024-01-01T00:00:00.000Z',
  operationType: 'insert',
  _cluster_time: '2024-01-01T00:00:00.000Z',
  _seq: '00000001',
  _doc_id: 'x',
  _event_id: 'e',
};

async function check(documents: readonly Record<string, unknown>[], probe: Record<string, unknown>) {
  const columns = await inferColumns(documents);
  // The inferred schema is itself a valid settings document.
  expect(() => parseColumnSpecs(columns)).not.toThrow();
  const { row } = compileRowMapper(columns).map(probe);
  expect(
    rowProblems(historyTableSchema(columns), { ...row, ...METADATA, _doc_id: docIdString(probe._id) }),
  ).toEqual([]);
  expect(lostLeaves(columns, row, probe)).toEqual([]);
}

describe('hostile corpus', () => {
  it('has at least 30 documents', () => {
    expect(HOSTILE_DOCUMENTS.length).toBeGreaterThanOrEqual(30);
  });

  it.each(HOSTILE_DOCUMENTS.map(([name, doc]) => [name, doc]))(
    '%s: valid schema, valid row, nothing lost',
    async (_name, doc) => {
      await check([doc], doc);
    },
    30_000,
  );

  it('every document also maps losslessly through the schema inferred from the whole corpus', async () => {
    const docs = HOSTILE_DOCUMENTS.map(([, d]) => d);
    const columns = await inferColumns(docs);
    expect(() => parseColumnSpecs(columns)).not.toThrow();
    const mapper = compileRowMapper(columns);
    const schema = historyTableSchema(columns);
    for (const [name, doc] of HOSTILE_DOCUMENTS) {
      const { row } = mapper.map(doc);
      expect({ name, problems: rowProblems(schema, { ...row, ...METADATA }) }).toEqual({
        name,
        problems: [],
      });
      expect({ name, lost: lostLeaves(columns, row, doc) }).toEqual({ name, lost: [] });
    }
  }, 60_000);
});
