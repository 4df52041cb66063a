// fast-check generators for BSON documents as the driver decodes them.
import {
  Binary,
  BSONRegExp,
  BSONSymbol,
  Code,
  DBRef,
  Decimal128,
  Int32,
  Long,
  MaxKey,
  MinKey,
  ObjectId,
  Timestamp,
  UUID,
  deserialize,
  serialize,
} from 'bson';
import fc from 'fast-check';
import { BSON_DECODE_OPTIONS } from '../../src/base/bson-kind.js';

/**
 * Keys that Extended JSON reads as type wrappers are left out: an object whose only key is `$date` cannot
 * be told apart from a date in `_unmapped` (a documented limit of Extended JSON itself).
 */
const EJSON_WRAPPER_KEYS = new Set([
  '$oid',
  '$date',
  '$numberInt',
  '$numberLong',
  '$numberDouble',
  '$numberDecimal',
  '$binary',
  '$regularExpression',
  '$code',
  '$scope',
  '$symbol',
  '$timestamp',
  '$minKey',
  '$maxKey',
  '$ref',
  '$id',
  '$db',
  '$uuid',
  '$regex',
  '$options',
  '$type',
  '$undefined',
  '$dbPointer',
]);

export const arbKey: fc.Arbitrary<string> = fc
  .oneof(
    { weight: 4, arbitrary: fc.string({ maxLength: 6 }) },
    { weight: 1, arbitrary: fc.string({ maxLength: 4, unit: 'grapheme' }) },
    {
      weight: 2,
      arbitrary: fc.constantFrom(
        'a',
        'A',
        'name',
        'Name',
        'a.b',
        '$x',
        '',
        ' ',
        'time_archived',
        '_unmapped',
        '_PARTITIONTIME',
        '1st',
        '__proto__',
        'constructor',
        'é',
        'x y',
      ),
    },
  )
  .filter((k) => !k.includes('\u0000') && !EJSON_WRAPPER_KEYS.has(k));

const arbDecimal = fc
  .oneof(
    fc.constantFrom(
      '0',
      '-0',
      '1E+6000',
      '-1E-6176',
      'NaN',
      'Infinity',
      '-Infinity',
      '0.1',
      '123456789012345678901234567890.5',
    ),
    fc
      .tuple(fc.bigInt({ min: -(10n ** 34n), max: 10n ** 34n }), fc.integer({ min: -60, max: 60 }))
      .map(([digits, exp]) => `${digits}E${exp}`),
  )
  .map((s) => Decimal128.fromString(s));

const arbDate = fc.oneof(
  fc.integer({ min: -8.64e15, max: 8.64e15 }).map((ms) => new Date(ms)),
  fc.integer({ min: -62_200_000_000_000, max: 253_500_000_000_000 }).map((ms) => new Date(ms)),
);

export const arbLeaf: fc.Arbitrary<unknown> = fc.oneof(
  fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }).map((n) => new Int32(n)),
  fc.double(),
  fc.constantFrom(Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, -0, 0.1),
  fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }).map((b) => Long.fromBigInt(b)),
  fc.string({ maxLength: 20 }),
  fc.string({ maxLength: 8, unit: 'binary' }),
  fc.boolean(),
  fc.constant(null),
  arbDate,
  fc.uint8Array({ minLength: 12, maxLength: 12 }).map((b) => new ObjectId(b)),
  fc
    .tuple(fc.uint8Array({ maxLength: 20 }), fc.constantFrom(0, 1, 2, 3, 5, 6, 7, 8, 0x80, 0xff))
    .map(([bytes, sub]) => new Binary(bytes, sub)),
  fc.uint8Array({ minLength: 16, maxLength: 16 }).map((b) => new UUID(Buffer.from(b))),
  arbDecimal,
  fc
    .tuple(
      fc.string({ maxLength: 5 }).filter((s) => !s.includes('\u0000')),
      fc.subarray(['i', 'm', 's', 'u', 'x']),
    )
    .map(([p, o]) => new BSONRegExp(p, o.join(''))),
  fc.string({ maxLength: 10 }).map((c) => new Code(c)),
  fc.string({ maxLength: 5 }).map((s) => new BSONSymbol(s)),
  fc.constantFrom(new MinKey(), new MaxKey()),
  fc.tuple(fc.nat(), fc.nat()).map(([t, i]) => new Timestamp({ t, i })),
  fc.uint8Array({ minLength: 12, maxLength: 12 }).map((b) => new DBRef('coll', new ObjectId(b))),
);

const { value: arbValue } = fc.letrec<{ value: unknown; doc: Record<string, unknown>; arr: unknown[] }>(
  (tie) => ({
    value: fc.oneof({ depthSize: 'small', withCrossShrink: true }, arbLeaf, tie('doc'), tie('arr')),
    doc: fc.dictionary(arbKey, tie('value'), { maxKeys: 5 }),
    arr: fc.array(tie('value'), { maxLength: 4 }),
  }),
);

/** A top-level document, `_id` included, decoded from BSON the way the archiver decodes it. */
export const arbDocument: fc.Arbitrary<Record<string, unknown>> = fc
  .tuple(
    fc.oneof(
      fc.uint8Array({ minLength: 12, maxLength: 12 }).map((b) => new ObjectId(b)),
      fc.string({ maxLength: 5 }),
      fc.integer(),
    ),
    fc.dictionary(
      arbKey.filter((k) => k !== '_id'),
      arbValue,
      { maxKeys: 8 },
    ),
  )
  .map(([_id, doc]) => deserialize(serialize({ _id, ...doc }), BSON_DECODE_OPTIONS));
