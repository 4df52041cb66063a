import { Int32, Long, ObjectId } from 'bson';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { BigQueryViewReader, docIdIntervals, docIdPrefilterSql } from '../../../src/bigquery/view-reader.js';
import { encodeId } from '../../../src/mongodb/checkpoint-store.js';
import { parseColumnSpecs } from '../../../src/schema/column-spec.js';
import { docIdKey, inRange, rangeBounds } from '../../../src/transform/id-order.js';
import { docIdString } from '../../../src/transform/values.js';

/** BigQuery's order of STRING values: byte by byte over UTF-8. */
const bytes = (a: string, b: string): number => Buffer.compare(Buffer.from(a), Buffer.from(b));

/** Strings rich in what JSON escapes (controls, quote, backslash) and in characters around them. */
const arbString = fc.string({
  unit: fc.oneof(
    fc.constantFrom(
      '\u0000',
      '\u001f',
      ' ',
      '!',
      '"',
      '#',
      '0',
      '9',
      '[',
      '\\',
      ']',
      '_',
      'a',
      'z',
      '~',
      'é',
      '😀',
    ),
    fc.string({ unit: 'grapheme', minLength: 1, maxLength: 1 }),
  ),
  maxLength: 6,
});

const arbId: fc.Arbitrary<unknown> = fc.oneof(
  fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }).map((n) => new Int32(n)),
  fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }).map((n) => Long.fromBigInt(n)),
  arbString,
  fc.uint8Array({ minLength: 12, maxLength: 12 }).map((b) => new ObjectId(b)),
);

describe('the _doc_id prefilter of the view reader (issue 14, review finding 11)', () => {
  it('holds every id placed in a range, whatever its type and the bounds', () => {
    fc.assert(
      fc.property(fc.array(arbId, { minLength: 1, maxLength: 30 }), arbId, arbId, (ids, a, b) => {
        const range = { after: encodeId(a), upTo: encodeId(b) };
        const bounds = rangeBounds(range);
        const intervals = docIdIntervals(range);
        for (const id of ids) {
          const docId = docIdString(id);
          const key = docIdKey(docId);
          if (key === undefined || !inRange(key, bounds)) continue;
          const held = intervals.some(
            (i) =>
              (i.fromIncluded ? bytes(docId, i.from) >= 0 : bytes(docId, i.from) > 0) &&
              (i.toIncluded ? bytes(docId, i.to) <= 0 : bytes(docId, i.to) < 0),
          );
          expect(held, `${docId} in ${JSON.stringify(range)}: ${JSON.stringify(intervals)}`).toBe(true);
        }
      }),
      { numRuns: 2_000 },
    );
  });

  it('narrows ranges of ObjectIds to their hex and of strings to their bounds, so clustering prunes', () => {
    const low = '000000000000000000000001';
    const high = '00000000000000000000ffff';
    expect(
      docIdIntervals({ after: encodeId(new ObjectId(low)), upTo: encodeId(new ObjectId(high)) }),
    ).toEqual([{ from: low, fromIncluded: false, to: high, toIncluded: true }]);
    expect(docIdIntervals({ after: encodeId('user_100'), upTo: encodeId('user_200') })).toEqual([
      { from: '"user_', fromIncluded: true, to: '"user_]', toIncluded: false },
    ]);
    expect(docIdIntervals({ after: encodeId('pear'), upTo: encodeId('plum') })).toEqual([
      { from: '"pear', fromIncluded: true, to: '"plum"', toIncluded: true },
    ]);
    // Adjoining ranges are one interval; the ranges of a split together span every type.
    const sql = docIdPrefilterSql([
      { after: encodeId('pear'), upTo: encodeId('plum') },
      { after: encodeId('plum'), upTo: encodeId('quince') },
    ]);
    expect(sql).toBe(`(h.\`_doc_id\` >= '"pear' AND h.\`_doc_id\` <= '"quince"')`);
  });

  it('puts the prefilter on the history table, inside the view query, before the window', async () => {
    const queries: string[] = [];
    const reader = new BigQueryViewReader({
      bigquery: {
        createQueryJob: (options: { query: string }) => {
          queries.push(options.query);
          const job = {
            getQueryResults: () => Promise.resolve([[]]),
            getMetadata: () => Promise.resolve([{ statistics: { query: { totalBytesProcessed: '0' } } }]),
          };
          return Promise.resolve([job]);
        },
      } as unknown as ConstructorParameters<typeof BigQueryViewReader>[0]['bigquery'],
      projectId: 'proj-1',
      datasetId: 'd',
      table: 't',
      columns: parseColumnSpecs([{ name: 'n', type: 'INTEGER' }]).columns,
    });
    const range = { after: encodeId(new ObjectId('000000000000000000000001')), upTo: undefined };
    await reader.documentDigests(range, AbortSignal.timeout(1_000));
    await reader.rangeDigests([range], AbortSignal.timeout(1_000));
    for (const query of queries) {
      expect(query).toContain('FROM `proj-1.d.t` AS h');
      expect(query).not.toContain('`proj-1.d.t_view`');
      expect(query).toContain(`AND ((h.\`_doc_id\` > '000000000000000000000001' AND h.\`_doc_id\` < 'g'))`);
    }
  });
});
