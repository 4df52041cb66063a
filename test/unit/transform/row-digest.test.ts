import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { parseColumnSpecs } from '../../../src/schema/column-spec.js';
import {
  canonicalHash,
  compileRowCanonical,
  datetimeText,
  decimalText,
  floatText,
  formatG17,
  timeText,
  timestampMicros,
} from '../../../src/transform/row-digest.js';

describe('formatG17 (C printf %.17g, as FORMAT in BigQuery)', () => {
  // What glibc's printf("%.17g") prints, which BigQuery's FORMAT and the emulator print (probed there too).
  it.each([
    [0.1, '0.10000000000000001'],
    [1e15, '1000000000000000'],
    [1e16, '10000000000000000'],
    [1e17, '1e+17'],
    [1e-7, '9.9999999999999995e-08'],
    [0.0001, '0.0001'],
    [2 ** 53 + 2, '9007199254740994'],
    [1e300, '1.0000000000000001e+300'],
    [5e-324, '4.9406564584124654e-324'],
    [-1.5e-300, '-1.5000000000000001e-300'],
    [123, '123'],
    [123.456, '123.456'],
    [-2.5, '-2.5'],
  ])('%s is %s', (x, text) => {
    expect(formatG17(x)).toBe(text);
  });

  it('reads back as the same double for any finite double', () => {
    fc.assert(
      fc.property(fc.double({ noNaN: true, noDefaultInfinity: true }), (x) => {
        fc.pre(x !== 0);
        expect(Number(formatG17(x))).toBe(x);
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

  it('gives DATETIME and TIME with six fraction digits', () => {
    expect(datetimeText('0012-01-02T03:04:05')).toBe('0012-01-02 03:04:05.000000');
    expect(datetimeText('2024-02-29 23:59:59.123')).toBe('2024-02-29 23:59:59.123000');
    expect(timeText('01:02:03.5')).toBe('01:02:03.500000');
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

  it('counts UTF-8 bytes in the length prefixes, as BYTE_LENGTH does', () => {
    expect(canonical({ a: 'é😀', b: null, tags: [], rec: null, _unmapped: null }, 'x')).toBe(
      '1:x6:é😀NA0:NN',
    );
  });

  it('hashes to 60 bits', () => {
    expect(canonicalHash('abc')).toBe(BigInt('0xba7816bf8f01cfe'));
    expect(canonicalHash('anything') < 2n ** 60n).toBe(true);
  });
});
