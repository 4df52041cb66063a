import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { parseColumnSpecs } from '../../../src/schema/column-spec.js';
import {
  canonicalHash,
  compileDocumentHash,
  compileJsonHash,
  compileRowCanonical,
  compileRowHash,
  jsonContentHash,
  jsonContentPaths,
  datetimeText,
  decimalText,
  floatText,
  floatBits,
  timeText,
  timestampMicros,
} from '../../../src/transform/row-digest.js';

describe('floatBits (the double exactly, as the digest SQL computes it by division by powers of two)', () => {
  it.each([
    [1, '4503599627370496p0'],
    [-2.5, '-5629499534213120p1'],
    [0.1, '7205759403792794p-4'],
    [2 ** 53 + 2, '4503599627370497p53'],
    [Number.MAX_VALUE, '9007199254740991p1023'],
    [2 ** -1022, '4503599627370496p-1022'],
    [5e-324, '4503599627370496p-1074'],
    [2 ** -1022 - 2 ** -1074, '9007199254740990p-1023'],
  ])('%s is %s', (x, text) => {
    expect(floatBits(x)).toBe(text);
  });

  it('reads back as the same double for any finite non-zero double', () => {
    fc.assert(
      fc.property(fc.double({ noNaN: true, noDefaultInfinity: true }), (x) => {
        fc.pre(x !== 0);
        const [, sign, m = '0', e = '0'] = /^(-?)(\d+)p(-?\d+)$/.exec(floatBits(x)) ?? [];
        const back = Number(m) * 2 ** -52 * 2 ** Number(e);
        expect(sign === '-' ? -back : back).toBe(x);
        expect(Number(m) >= 2 ** 52 && Number(m) < 2 ** 53).toBe(true);
      }),
    );
  });
});

describe('canonical texts of the wire values', () => {
  it('names NaN, infinities and both zeros so that SQL can name them alike', () => {
    expect(['NaN', 'Infinity', '-Infinity', '-0', 0, -0].map(floatText)).toEqual([
      'NaN',
      'Inf',
      '-Inf',
      '0',
      '0',
      '0',
    ]);
  });

  it('strips trailing fraction zeros of decimals, never integer zeros', () => {
    expect(['100', '1.500', '-0.250', '1.000', '-0', '-0.000', '0'].map(decimalText)).toEqual([
      '100',
      '1.5',
      '-0.25',
      '1',
      '0',
      '0',
      '0',
    ]);
  });

  it('gives timestamps as microseconds since the epoch, zones applied', () => {
    expect(timestampMicros('2020-01-01T00:00:00.123456+02:00')).toBe('1577829600123456');
    expect(timestampMicros('0001-01-01T00:00:00.000Z')).toBe('-62135596800000000');
    expect(timestampMicros(new Date(Date.UTC(2024, 1, 29, 23, 59, 59, 999)).toISOString())).toBe(
      String(Date.UTC(2024, 1, 29, 23, 59, 59, 999) * 1000),
    );
  });

  it("gives every TIMESTAMP of BigQuery's range exactly, either side of the span a double holds exactly", () => {
    fc.assert(
      fc.property(
        fc.date({
          min: new Date('0001-01-01T00:00:00Z'),
          max: new Date('9999-12-31T23:59:59.999Z'),
          noInvalidDate: true,
        }),
        fc.integer({ min: 0, max: 999 }),
        (date, extraMicros) => {
          const text = `${date.toISOString().slice(0, 23)}${String(extraMicros).padStart(3, '0')}Z`;
          const exact = BigInt(date.getTime()) * 1000n + BigInt(extraMicros);
          expect(timestampMicros(text)).toBe(exact.toString());
        },
      ),
    );
    expect(timestampMicros('1969-12-31T23:59:59.5Z')).toBe('-500000');
    expect(timestampMicros('9999-12-31T23:59:59.999999Z')).toBe('253402300799999999');
  });

  it('gives DATETIME as microseconds since 0001-01-01 and TIME since midnight', () => {
    expect(datetimeText('0001-01-01T00:00:00')).toBe('0');
    // 11 years of 365 days and 2 leap days (4, 8) to 0012-01-01, then a day and 03:04:05.
    expect(datetimeText('0012-01-02T03:04:05')).toBe(String((4018 * 86_400 + 11_045) * 1_000_000));
    expect(datetimeText('2024-02-29 23:59:59.123')).toBe(
      String(BigInt(Date.UTC(2024, 1, 29, 23, 59, 59, 123) + 62_135_596_800_000) * 1000n),
    );
    expect(timeText('01:02:03.5')).toBe('3723500000');
    expect(timeText('23:59:59.999999')).toBe('86399999999');
  });
});

describe('compileRowCanonical', () => {
  const columns = parseColumnSpecs([
    { name: 'a', type: 'STRING' },
    { name: 'b', type: 'STRING' },
    { name: 'tags', type: 'STRING', mode: 'REPEATED' },
    { name: 'rec', type: 'RECORD', fields: [{ name: 'x', type: 'INTEGER' }] },
  ]).columns;
  const canonical = compileRowCanonical(columns);

  it('tells apart rows whose values would concatenate alike', () => {
    const rows = [
      { a: 'xy', b: 'z', tags: [], rec: null, _unmapped: null },
      { a: 'x', b: 'yz', tags: [], rec: null, _unmapped: null },
      { a: 'N', b: null, tags: [], rec: null, _unmapped: null },
      { a: null, b: 'N', tags: [], rec: null, _unmapped: null },
      { a: null, b: null, tags: ['x', 'y'], rec: null, _unmapped: null },
      { a: null, b: null, tags: ['xy'], rec: null, _unmapped: null },
      { a: null, b: null, tags: [], rec: { x: 1 }, _unmapped: null },
      { a: null, b: null, tags: [], rec: null, _unmapped: '{}' },
    ];
    const texts = rows.map((row) => canonical(row, '"id"'));
    expect(new Set(texts).size).toBe(rows.length);
  });

  it('counts code points in the length prefixes, as CHAR_LENGTH does', () => {
    expect(canonical({ a: 'é😀', b: null, tags: [], rec: null, _unmapped: null }, 'x')).toBe(
      '1:x2:é😀NA0:NN',
    );
  });

  // Regression (review finding 1): a RECORD was compared by presence only, so a change inside a
  // sub-document during a lost history was never seen by verify or repaired.
  it('reads RECORDs field by field, nested and repeated, so a change inside a sub-document is seen', () => {
    const nested = compileRowCanonical(
      parseColumnSpecs([
        {
          name: 'address',
          type: 'RECORD',
          fields: [
            { name: 'city', type: 'STRING' },
            {
              name: 'lines',
              type: 'RECORD',
              mode: 'REPEATED',
              fields: [{ name: 'n', type: 'INTEGER' }],
            },
          ],
        },
      ]).columns,
    );
    const row = (city: string, n: number) => ({ address: { city, lines: [{ n }] }, _unmapped: null });
    expect(nested(row('A', 1), '"x"')).toBe('3:"x"R1:AA1:R1:1N');
    expect(nested(row('B', 1), '"x"')).not.toBe(nested(row('A', 1), '"x"'));
    expect(nested(row('A', 2), '"x"')).not.toBe(nested(row('A', 1), '"x"'));
    // A REPEATED field the sub-document lacks is empty, as BigQuery stores it.
    expect(nested({ address: { city: 'A' }, _unmapped: null }, '"x"')).toBe('3:"x"R1:AA0:N');
    expect(nested({ address: null, _unmapped: null }, '"x"')).toBe('3:"x"NN');
  });

  it('hashes to 60 bits', () => {
    expect(canonicalHash('abc')).toBe(BigInt('0xba7816bf8f01cfe'));
    expect(canonicalHash('anything') < 2n ** 60n).toBe(true);
  });
});

// Issue 14: JSON columns and `_unmapped` were compared by presence only, so a change to a field waiting in
// `_unmapped` (capture_unmapped, a new field) made while the history was lost was never seen nor repaired.
describe('the JSON content of a row (compileJsonHash, compileDocumentHash)', () => {
  const columns = parseColumnSpecs([
    { name: 'id', type: 'STRING', mongo_field: '_id' },
    { name: 'meta', type: 'JSON' },
    { name: 'rec', type: 'RECORD', fields: [{ name: 'j', type: 'JSON' }] },
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
  const json = compileJsonHash(columns);
  const document = compileDocumentHash(columns);
  const rowHash = compileRowHash(columns);
  const row = (meta: string | null, j: string | null, unmapped: string | null) => ({
    id: 'x',
    meta,
    rec: { j },
    list: [],
    items: [],
    _unmapped: unmapped,
  });

  it('reads JSON columns, inside RECORDs too, REPEATED JSON columns, JSON fields of REPEATED RECORDs, then _unmapped', () => {
    expect(jsonContentPaths(columns)).toEqual([
      { names: ['meta'] },
      { names: ['rec', 'j'] },
      { names: ['list'], element: [] },
      { names: ['items'], element: ['j'] },
      { names: ['_unmapped'] },
    ]);
  });

  it('is 0 without JSON content, so such a document keeps the hash SQL computes', () => {
    expect(json(row(null, null, null), '"x"')).toBe(0n);
    expect(document(row(null, null, null), '"x"')).toBe(rowHash(row(null, null, null), '"x"'));
  });

  it('is the same for the text BigQuery may give back: keys reordered, whitespace, number spelling', () => {
    const written = row('{"b":1,"a":[1.5,"é"]}', '{"x":null}', '{"extra":{"n":10,"s":"v"}}');
    const normalised = row(
      '{"a": [15e-1, "\\u00e9"], "b": 1.0}',
      '{ "x" : null }',
      '{"extra":{"s":"v","n":1e1}}',
    );
    expect(json(normalised, '"x"')).toBe(json(written, '"x"'));
    expect(document(normalised, '"x"')).toBe(document(written, '"x"'));
    expect(json(written, '"x"')).not.toBe(0n);
  });

  it('differs when only the content of a JSON value differs, in a column, a RECORD or _unmapped', () => {
    const base = document(row('{"a":1}', '{"b":2}', '{"c":3}'), '"x"');
    expect(document(row('{"a":2}', '{"b":2}', '{"c":3}'), '"x"')).not.toBe(base);
    expect(document(row('{"a":1}', '{"b":"2"}', '{"c":3}'), '"x"')).not.toBe(base);
    expect(document(row('{"a":1}', '{"b":2}', '{"c":[3]}'), '"x"')).not.toBe(base);
    // The same texts moved to another JSON value, or in another document, differ too.
    expect(document(row('{"b":2}', '{"a":1}', '{"c":3}'), '"x"')).not.toBe(base);
    const r = row('{"a":1}', '{"b":2}', '{"c":3}');
    expect(json(r, '"y"')).not.toBe(json(r, '"x"'));
  });
});

// Issue 14 (REPEATED JSON): a REPEATED JSON column, and a JSON field of a REPEATED RECORD, were compared by
// presence only, so a changed element made while the history was lost was never seen nor repaired.
describe('the JSON content of lists of JSON values (REPEATED JSON, JSON fields of REPEATED RECORDs)', () => {
  const columns = parseColumnSpecs([
    { name: 'id', type: 'STRING', mongo_field: '_id' },
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
  const json = compileJsonHash(columns);
  const document = compileDocumentHash(columns);
  const rowHash = compileRowHash(columns);
  interface Item {
    k: string;
    j?: string | null;
  }
  const row = (list: string[] | null, items: Item[] | null = []) => ({
    id: 'x',
    list,
    items,
    _unmapped: null,
  });
  const base = document(row(['{"b":1,"a":[2]}', '"é"', '3']), '"x"');

  it('is the same for respelt and reordered element text, and for the array text BigQuery gives back', () => {
    expect(document(row(['{ "a": [2.0], "b": 1e0 }', '"\\u00e9"', '30E-1']), '"x"')).toBe(base);
    expect(json(row(['{"b":1,"a":[2]}', '"é"', '3']), '"x"')).not.toBe(0n);
    // What the view reader reads back: one JSON array, per column (list, the items' field, `_unmapped`).
    expect(json(row(['{"b":1,"a":[2]}', '"é"', '3']), '"x"')).toBe(
      jsonContentHash('"x"', ['[{"a":[2],"b":1},"\\u00e9",3.0]', null, null]),
    );
  });

  it('differs for a changed, an added or a removed element, and for the elements reordered', () => {
    expect(document(row(['{"b":1,"a":[3]}', '"é"', '3']), '"x"')).not.toBe(base);
    expect(document(row(['{"b":1,"a":[2]}', '"é"', '3', 'null']), '"x"')).not.toBe(base);
    expect(document(row(['{"b":1,"a":[2]}', '"é"']), '"x"')).not.toBe(base);
    expect(document(row(['"é"', '{"b":1,"a":[2]}', '3']), '"x"')).not.toBe(base);
    // The same lengths, so the SQL row hash alone does not tell them apart: the JSON content hash does.
    expect(rowHash(row(['"é"', '{"b":1,"a":[2]}', '3']), '"x"')).toBe(
      rowHash(row(['{"b":1,"a":[2]}', '"é"', '3']), '"x"'),
    );
  });

  it('compares a JSON field of the elements of a REPEATED RECORD, in their order', () => {
    const items = (a: string | null, b: string | null): Item[] => [
      { k: 'one', j: a },
      { k: 'two', j: b },
    ];
    const withItems = document(row(null, items('{"x":1,"y":2}', null)), '"x"');
    expect(document(row(null, items('{"y":2.0,"x":1}', null)), '"x"')).toBe(withItems);
    expect(document(row(null, items('{"x":1,"y":3}', null)), '"x"')).not.toBe(withItems);
    expect(document(row(null, items(null, '{"x":1,"y":2}')), '"x"')).not.toBe(withItems);
    // BigQuery's text of that field alone, an element without it as `null`.
    expect(json(row(null, items('{"x":1,"y":2}', null)), '"x"')).toBe(
      jsonContentHash('"x"', [null, '[{"y":2,"x":1},null]', null]),
    );
  });

  it('counts an empty or absent list as no JSON content, as BigQuery stores a NULL array as an empty one', () => {
    for (const empty of [row([], []), row(null, null), row([], null)]) {
      expect(json(empty, '"x"')).toBe(0n);
      expect(document(empty, '"x"')).toBe(rowHash(empty, '"x"'));
    }
    expect(jsonContentHash('"x"', [[], [], null])).toBe(0n);
    // Elements without the JSON field are content (`null` each), as the view reader reads them.
    expect(json(row(null, [{ k: 'one' }]), '"x"')).toBe(jsonContentHash('"x"', [null, '[null]', null]));
  });

  it('keeps an element that is not one JSON value apart from the elements its text would splice into', () => {
    const spliced = json(row(['1,2']), '"x"');
    expect(spliced).not.toBe(json(row(['1', '2']), '"x"'));
    expect(spliced).not.toBe(jsonContentHash('"x"', ['[1,2]', null, null]));
    // `[` + `[1` + `,` + `2]` + `]` would be one element, the array [1, 2].
    expect(json(row(['[1', '2]']), '"x"')).not.toBe(jsonContentHash('"x"', ['[[1,2]]', null, null]));
  });
});
