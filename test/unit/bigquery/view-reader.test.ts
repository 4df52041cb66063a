import { Int32, Long, ObjectId } from 'bson';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { BigQueryViewReader, docIdIntervals, docIdPrefilterSql } from '../../../src/bigquery/view-reader.js';
import { encodeId } from '../../../src/mongodb/checkpoint-store.js';
import { parseColumnSpecs } from '../../../src/schema/column-spec.js';
import { docIdKey, inRange, rangeBounds } from '../../../src/transform/id-order.js';
import { compileJsonHash, jsonContentHash } from '../../../src/transform/row-digest.js';
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

/**
 * A stand-in for the REST client's query jobs: `answer` gives the pages of rows for a query (the JSON query
 * is the one with TO_JSON_STRING), each job claims `bytes` processed. Records the queries and page requests.
 */
function scriptedBigQuery(answer: (sql: string) => Record<string, unknown>[][], bytes: number) {
  const queries: string[] = [];
  const pageRequests: unknown[] = [];
  const bigquery = {
    createQueryJob: (options: { query: string }) => {
      queries.push(options.query);
      const pages = answer(options.query);
      const job = {
        getQueryResults: (request?: { pageToken?: string; maxResults?: number }) => {
          pageRequests.push(request);
          if (request?.maxResults === undefined) return Promise.resolve([pages.flat()]);
          const at = request.pageToken === undefined ? 0 : Number(request.pageToken);
          const next = at + 1 < pages.length ? { pageToken: String(at + 1) } : null;
          return Promise.resolve([pages[at] ?? [], next]);
        },
        getMetadata: () =>
          Promise.resolve([{ statistics: { query: { totalBytesProcessed: String(bytes) } } }]),
      };
      return Promise.resolve([job]);
    },
  } as unknown as ConstructorParameters<typeof BigQueryViewReader>[0]['bigquery'];
  return { bigquery, queries, pageRequests };
}

// Issue 14: JSON values are compared by content. The digest query stays SQL-only; the documents with JSON
// content are read back as text, page by page, and their canonical JSON hash folded into the digests.
describe('BigQueryViewReader and JSON content', () => {
  const columns = parseColumnSpecs([
    { name: 'n', type: 'INTEGER' },
    { name: 'meta', type: 'JSON' },
  ]).columns;
  const one = docIdString(1);
  const two = docIdString(2);
  const range = { after: undefined, upTo: undefined };
  const isJsonQuery = (sql: string) => sql.includes('TO_JSON_STRING');

  it('folds the JSON content of the documents that have some into their range digest, a page at a time', async () => {
    const { bigquery, queries, pageRequests } = scriptedBigQuery(
      // The JSON query is given only the ranges with JSON content: `r` indexes those.
      (sql) =>
        isJsonQuery(sql)
          ? [
              [{ r: 0, d: one, __mba_j0: '{"b": 1, "a": [2.0]}', __mba_j1: null }],
              [{ r: 0, d: two, __mba_j0: null, __mba_j1: '{"x":"\\u00e9"}' }],
            ]
          : [
              [
                { r: 0, n: 3, x: '7', nj: 0 },
                { r: 1, n: 2, x: '5', nj: 2 },
              ],
            ],
      100,
    );
    const reader = new BigQueryViewReader({
      bigquery,
      projectId: 'proj-1',
      datasetId: 'd',
      table: 't',
      columns,
      jsonPageRows: 1,
    });
    const ranges = [
      { after: undefined, upTo: encodeId(0) },
      { after: encodeId(0), upTo: undefined },
    ];
    const answer = await reader.rangeDigests(ranges, AbortSignal.timeout(1_000));
    expect(answer.value).toEqual([
      { count: 3, digest: 7n },
      {
        count: 2,
        digest:
          5n ^ jsonContentHash(one, ['{"a":[2],"b":1}', null]) ^ jsonContentHash(two, [null, '{"x":"é"}']),
      },
    ]);
    expect(answer.bytesScanned).toBe(200);
    // The JSON query covers only the range with JSON content, reads `meta` and `_unmapped` as text.
    const json = queries.find(isJsonQuery) ?? '';
    expect(json).toContain('TO_JSON_STRING(w.`meta`)');
    expect(json).toContain('TO_JSON_STRING(w.`_unmapped`)');
    expect(json).toContain("h.`_doc_id` >= '{\"$number'");
    expect(pageRequests.filter((r) => r !== undefined)).toEqual([
      { autoPaginate: false, maxResults: 1 },
      { autoPaginate: false, maxResults: 1, pageToken: '1' },
    ]);
  });

  it('sends no JSON query when no document of the ranges has JSON content', async () => {
    const { bigquery, queries } = scriptedBigQuery(() => [[{ r: 0, n: 3, x: '7', nj: 0 }]], 100);
    const reader = new BigQueryViewReader({
      bigquery,
      projectId: 'proj-1',
      datasetId: 'd',
      table: 't',
      columns,
    });
    const answer = await reader.rangeDigests([range], AbortSignal.timeout(1_000));
    expect(answer).toEqual({ value: [{ count: 3, digest: 7n }], bytesScanned: 100 });
    expect(queries.filter(isJsonQuery)).toEqual([]);
  });

  it("names a range's documents with the JSON content folded into the hash of those that have some", async () => {
    const { bigquery } = scriptedBigQuery(
      (sql) =>
        isJsonQuery(sql)
          ? [[{ r: 0, d: two, __mba_j0: null, __mba_j1: '{"k":1e0}' }]]
          : [
              [
                { d: one, x: '11', jn: false },
                { d: two, x: '12', jn: true },
              ],
            ],
      10,
    );
    const reader = new BigQueryViewReader({
      bigquery,
      projectId: 'proj-1',
      datasetId: 'd',
      table: 't',
      columns,
    });
    const answer = await reader.documentDigests(range, AbortSignal.timeout(1_000));
    expect(answer.value).toEqual([
      { docId: one, hash: 11n },
      { docId: two, hash: 12n ^ jsonContentHash(two, [null, '{"k":1}']) },
    ]);
    expect(answer.bytesScanned).toBe(20);
  });
});

// Issue 14 (REPEATED JSON): a REPEATED JSON column and a JSON field of a REPEATED RECORD were compared by
// presence only. Now each is read back as one JSON array (of the column, or of that field alone) and folded in
// like any JSON value; an empty list counts as no JSON content in SQL as in JavaScript.
describe('BigQueryViewReader and lists of JSON values', () => {
  const columns = parseColumnSpecs([
    { name: 'n', type: 'INTEGER' },
    { name: 'list', type: 'JSON', mode: 'REPEATED' },
    {
      name: 'items',
      type: 'RECORD',
      mode: 'REPEATED',
      fields: [
        { name: 'k', type: 'STRING' },
        { name: 'j', type: 'JSON' },
      ],
    },
  ]).columns;
  const one = docIdString(1);
  const range = { after: undefined, upTo: undefined };
  const isJsonQuery = (sql: string) => sql.includes('TO_JSON_STRING');

  it('reads the array of each list back, only the JSON field of a record, and folds its content', async () => {
    const { bigquery, queries } = scriptedBigQuery(
      (sql) =>
        isJsonQuery(sql)
          ? [
              [
                {
                  r: 0,
                  d: one,
                  // As BigQuery may give them back: keys reordered, numbers respelt.
                  __mba_j0: '[{"b":1,"a":2.0},"x"]',
                  __mba_j1: '[null,{"z":1e0}]',
                  __mba_j2: null,
                },
              ],
            ]
          : [[{ r: 0, n: 1, x: '7', nj: 1 }]],
      10,
    );
    const reader = new BigQueryViewReader({
      bigquery,
      projectId: 'proj-1',
      datasetId: 'd',
      table: 't',
      columns,
    });
    const answer = await reader.rangeDigests([range], AbortSignal.timeout(1_000));
    // The mapped row's element texts hash as the array text read back.
    const mapped = {
      n: 1,
      list: ['{"a":2,"b":1}', '"x"'],
      items: [{ k: 'one' }, { k: 'two', j: '{"z":1}' }],
      _unmapped: null,
    };
    expect(answer.value).toEqual([{ count: 1, digest: 7n ^ compileJsonHash(columns)(mapped, one) }]);
    const [digest = '', json = ''] = queries;
    // Presence: a list counts only when it has elements, in the digest query's flag and the JSON query's filter.
    for (const sql of [digest, json]) {
      expect(sql).toContain('COALESCE(ARRAY_LENGTH(w.`list`), 0) > 0');
      expect(sql).toContain('COALESCE(ARRAY_LENGTH(w.`items`), 0) > 0');
    }
    expect(json).toContain('TO_JSON_STRING(w.`list`)');
    // The record's JSON field alone, in the elements' order: never TO_JSON_STRING of the record (`k`).
    expect(json).toContain(
      'TO_JSON_STRING(ARRAY(SELECT __mba_je.`j` FROM UNNEST(w.`items`) AS __mba_je WITH OFFSET AS __mba_jo ORDER BY __mba_jo))',
    );
    expect(json).not.toContain('TO_JSON_STRING(w.`items`)');
    expect(json).not.toContain('`k`');
  });
});
