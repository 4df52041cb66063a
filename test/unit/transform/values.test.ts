import {
  Binary,
  BSONRegExp,
  BSONSymbol,
  Code,
  DBRef,
  Decimal128,
  Double,
  Int32,
  Long,
  MaxKey,
  MinKey,
  ObjectId,
  Timestamp,
  UUID,
} from 'bson';
import { describe, expect, it } from 'vitest';
import { type ColumnType } from '../../../src/schema/types.js';
import { docIdString, NO_FIT, scalarConverter } from '../../../src/transform/values.js';

const oid = new ObjectId('507f1f77bcf86cd799439011');
const uuid = new UUID('a1b2c3d4-e5f6-4718-9a0b-1c2d3e4f5a6b');

function yearDate(year: number): Date {
  const d = new Date(0);
  d.setUTCFullYear(year, 0, 1);
  return d;
}

type Case = readonly [label: string, value: unknown, expected: unknown];

const cases: Record<Exclude<ColumnType, 'RECORD'>, readonly Case[]> = {
  STRING: [
    ['string with a null byte', 'a\u0000b', 'a\u0000b'],
    ['ObjectId as hex', oid, '507f1f77bcf86cd799439011'],
    ['UUID in canonical form', uuid, 'a1b2c3d4-e5f6-4718-9a0b-1c2d3e4f5a6b'],
    ['int32', new Int32(7), '7'],
    ['Long beyond 2^53 exactly', Long.fromString('9223372036854775807'), '9223372036854775807'],
    ['Decimal128', Decimal128.fromString('1E+6000'), '1E+6000'],
    ['Date as ISO', new Date('2024-02-29T12:00:00.123Z'), '2024-02-29T12:00:00.123Z'],
    ['Symbol', new BSONSymbol('sym'), 'sym'],
    ['issue 10 item 6: -0 keeps its sign', -0, '-0'],
    ['issue 10 item 6: Double -0 keeps its sign', new Double(-0), '-0'],
    ['Code', new Code('function () {}'), 'function () {}'],
    ['Code with scope as Extended JSON', new Code('x', { a: 1 }), '{"$code":"x","$scope":{"a":1}}'],
    [
      'Regex as Extended JSON',
      new BSONRegExp('^a', 'ix'),
      '{"$regularExpression":{"pattern":"^a","options":"ix"}}',
    ],
    ['MinKey', new MinKey(), '{"$minKey":1}'],
    [
      'sub-document as Extended JSON',
      { a: Long.fromString('9007199254740993') },
      '{"a":{"$numberLong":"9007199254740993"}}',
    ],
  ],
  INTEGER: [
    ['int32', new Int32(-5), -5],
    ['promoted whole double', 3, 3],
    ['Long at int64 max as text', Long.fromString('9223372036854775807'), '9223372036854775807'],
    ['integral double beyond 2^53', 2 ** 60, '1152921504606846976'],
    ['integral Decimal128', Decimal128.fromString('1.2E+3'), 1200],
    ['Timestamp as its 64-bit value', new Timestamp({ t: 1, i: 2 }), '4294967298'],
    ['fraction does not fit', 1.5, NO_FIT],
    ['NaN does not fit', Number.NaN, NO_FIT],
    ['string does not fit', '12', NO_FIT],
    ['boolean does not fit', true, NO_FIT],
    ['Decimal128 beyond int64 does not fit', Decimal128.fromString('1E+19'), NO_FIT],
  ],
  FLOAT: [
    ['double', 1.25, 1.25],
    ['Double wrapper', new Double(2), 2],
    ['NaN as text', Number.NaN, 'NaN'],
    ['Infinity as text', Number.POSITIVE_INFINITY, 'Infinity'],
    ['-Infinity as text', Number.NEGATIVE_INFINITY, '-Infinity'],
    ['Long that a double holds', Long.fromNumber(2 ** 60), 2 ** 60],
    ['Long a double cannot hold', Long.fromString('9007199254740993'), NO_FIT],
    ['Decimal128 with an exact double', Decimal128.fromString('0.1'), 0.1],
    ['Decimal128 without one', Decimal128.fromString('0.1000000000000000000001'), NO_FIT],
    ['Decimal128 NaN', Decimal128.fromString('NaN'), 'NaN'],
    // JSON has no -0 (JSON.stringify(-0) is "0"): as with NaN, the text form keeps the value.
    ['issue 10 item 6: -0 as text keeps its sign', -0, '-0'],
    ['issue 10 item 6: Double -0 as text keeps its sign', new Double(-0), '-0'],
    ['issue 10 item 6: Decimal128 -0 as text keeps its sign', Decimal128.fromString('-0'), '-0'],
    ['+0 stays a number', 0, 0],
  ],
  NUMERIC: [
    ['Decimal128 in plain notation passes as is', Decimal128.fromString('12.3400'), '12.3400'],
    ['Decimal128 in exponent notation is written out', Decimal128.fromString('1.2E+3'), '1200'],
    ['trailing zeros past the scale are trimmed', Decimal128.fromString('0.100000000000'), '0.1'],
    ['double in positional notation', 1e-7, '0.0000001'],
    ['scale 10 does not fit', Decimal128.fromString('0.0000000001'), NO_FIT],
    ['30 integer digits do not fit', Decimal128.fromString('1E+29'), NO_FIT],
    ['NaN does not fit', Decimal128.fromString('NaN'), NO_FIT],
  ],
  BIGNUMERIC: [
    ['38 fraction digits', Decimal128.fromString('0.' + '1'.repeat(34)), '0.' + '1'.repeat(34)],
    ['Long', Long.fromString('-9223372036854775808'), '-9223372036854775808'],
    ['1E+6000 does not fit', Decimal128.fromString('1E+6000'), NO_FIT],
  ],
  BOOLEAN: [
    ['true', true, true],
    ['1 does not fit', 1, NO_FIT],
  ],
  BYTES: [
    ['generic binary as base64', new Binary(Buffer.from('hi')), 'aGk='],
    ['old generic subtype 2', new Binary(Buffer.from('hi'), 2), 'aGk='],
    ['MD5 subtype keeps its tag in _unmapped', new Binary(Buffer.from('hi'), 5), NO_FIT],
    ['UUID keeps its tag in _unmapped', uuid, NO_FIT],
    ['string does not fit', 'aGk=', NO_FIT],
  ],
  TIMESTAMP: [
    ['Date', new Date('2024-01-01T00:00:00Z'), '2024-01-01T00:00:00.000Z'],
    ['year 1', yearDate(1), '0001-01-01T00:00:00.000Z'],
    ['year 0 is out of range', yearDate(0), NO_FIT],
    ['year 10000 is out of range', yearDate(10_000), NO_FIT],
    ['canonical text passes', '2024-01-01T10:00:00.123456+02:00', '2024-01-01T10:00:00.123456+02:00'],
    ['impossible text does not fit', '2024-02-30T00:00:00Z', NO_FIT],
    [
      'BSON Timestamp with increment 0',
      new Timestamp({ t: 1_700_000_000, i: 0 }),
      '2023-11-14T22:13:20.000Z',
    ],
    ['BSON Timestamp with an increment does not fit', new Timestamp({ t: 1_700_000_000, i: 3 }), NO_FIT],
    ['epoch number is ambiguous', 1_700_000_000, NO_FIT],
  ],
  DATE: [
    ['midnight Date', new Date('2024-03-01T00:00:00Z'), '2024-03-01'],
    ['Date with a time does not fit', new Date('2024-03-01T00:00:01Z'), NO_FIT],
    ['canonical text', '2024-03-01', '2024-03-01'],
  ],
  DATETIME: [
    ['Date', new Date('2024-03-01T10:11:12.013Z'), '2024-03-01T10:11:12.013'],
    ['text', '2024-03-01 10:11:12', '2024-03-01 10:11:12'],
  ],
  TIME: [
    ['text', '10:11:12.5', '10:11:12.5'],
    ['25 hours do not fit', '25:00:00', NO_FIT],
  ],
  JSON: [
    ['NaN keeps its value', Number.NaN, '{"$numberDouble":"NaN"}'],
    ['MaxKey', new MaxKey(), '{"$maxKey":1}'],
    [
      'DBRef',
      new DBRef('users', oid, 'app'),
      '{"$ref":"users","$id":{"$oid":"507f1f77bcf86cd799439011"},"$db":"app"}',
    ],
    ['out-of-range date', yearDate(10_000), '{"$date":{"$numberLong":"253402300800000"}}'],
    ['-0 keeps its sign', -0, '{"$numberDouble":"-0.0"}'],
    ['array of arrays', [[1], ['a']], '[[1],["a"]]'],
    // bson decodes MongoDB's `s` option into a native RegExp as `g`; BSON_DECODE_OPTIONS avoids that path.
    ['native RegExp from default decoding', /a/gi, '{"$regularExpression":{"pattern":"a","options":"is"}}'],
  ],
};

describe('scalar conversion is lossless or refuses', () => {
  for (const [type, rows] of Object.entries(cases)) {
    describe(type, () => {
      const convert = scalarConverter(type as Exclude<ColumnType, 'RECORD'>);
      it.each(rows.map((r) => [...r]))('%s', (_label, value, expected) => {
        expect(convert(value)).toEqual(expected);
      });
    });
  }
});

describe('document ids', () => {
  it('renders ObjectId as hex and every other id as canonical Extended JSON', () => {
    expect(docIdString(oid)).toBe('507f1f77bcf86cd799439011');
    expect(docIdString('abc')).toBe('"abc"');
    expect(docIdString({ a: 1, b: 'x' })).toBe('{"a":{"$numberInt":"1"},"b":"x"}');
    expect(docIdString(uuid)).toBe('{"$binary":{"base64":"obLD1OX2RxiaCxwtPk9aaw==","subType":"04"}}');
    expect(docIdString(new Date(0))).toBe('{"$date":{"$numberLong":"0"}}');
  });

  it('gives 1, 1.0 and 1L one id string, as MongoDB treats them as one key', () => {
    const ids = [1, new Int32(1), new Double(1), Long.fromNumber(1)].map(docIdString);
    expect(new Set(ids)).toEqual(new Set(['{"$numberInt":"1"}']));
    expect(docIdString(Long.fromString('9007199254740993'))).toBe('{"$numberLong":"9007199254740993"}');
    expect(docIdString(1.5)).toBe('{"$numberDouble":"1.5"}');
  });
});
