import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { countColumns, parseColumnSpecs } from '../../../src/schema/column-spec.js';
import { inferColumns } from '../../../src/schema/infer.js';
import { historyTableSchema } from '../../../src/schema/table-schema.js';
import { MAX_COLUMNS, MAX_NESTING_DEPTH, type ColumnSpec } from '../../../src/schema/types.js';
import { compileRowMapper } from '../../../src/transform/row-mapper.js';
import { arbDocument } from '../../support/bson-arbitraries.js';
import { lostLeaves, rowProblems } from '../../support/row-oracle.js';

const RUNS = { numRuns: 300 };

function depthOf(columns: readonly ColumnSpec[]): number {
  return Math.max(0, ...columns.map((c) => 1 + (c.fields ? depthOf(c.fields) : 0)));
}

describe('properties over generated BSON documents', () => {
  it('conversion never throws, whatever the schema', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(arbDocument, { minLength: 1, maxLength: 4 }),
        arbDocument,
        async (samples, doc) => {
          // A schema inferred from other documents: every type conflict is possible.
          const mapper = compileRowMapper(await inferColumns(samples));
          expect(() => mapper.map(doc)).not.toThrow();
        },
      ),
      RUNS,
    );
  });

  it('every leaf is found in its column or in _unmapped, and the row is valid for the table', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(arbDocument, { minLength: 1, maxLength: 4 }), async (docs) => {
        const columns = await inferColumns(docs);
        const mapper = compileRowMapper(columns);
        const schema = historyTableSchema(columns);
        for (const doc of docs) {
          const { row } = mapper.map(doc);
          expect(lostLeaves(columns, row, doc)).toEqual([]);
          expect(rowProblems(schema, row)).toEqual([]);
        }
      }),
      RUNS,
    );
  });

  it('inferred schemas have legal, unique names within BigQuery limits', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(arbDocument, { minLength: 1, maxLength: 5 }), async (docs) => {
        const columns = await inferColumns(docs);
        expect(() => parseColumnSpecs(columns)).not.toThrow();
        expect(countColumns(columns)).toBeLessThanOrEqual(MAX_COLUMNS - 7);
        expect(depthOf(columns)).toBeLessThanOrEqual(MAX_NESTING_DEPTH);
      }),
      RUNS,
    );
  });

  it('inference does not depend on the order of the samples', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc
          .array(arbDocument, { minLength: 2, maxLength: 6 })
          .chain((docs) =>
            fc.tuple(
              fc.constant(docs),
              fc.shuffledSubarray(docs, { minLength: docs.length, maxLength: docs.length }),
            ),
          ),
        async ([docs, shuffled]) => {
          expect(await inferColumns(shuffled)).toEqual(await inferColumns(docs));
        },
      ),
      RUNS,
    );
  });
});
