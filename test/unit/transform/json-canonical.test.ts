// The canonical form of a JSON value that `verify` compares (transform/json-canonical.ts). The emulator keeps
// JSON text as written, so the peers cannot show what real BigQuery does to it (keys reordered, whitespace
// dropped, escapes and numbers respelt); these texts are constructed here, the way BigQuery may give them
// back, from the text the mapper writes.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { canonicalJson, canonicalJsonNumber } from '../../../src/transform/json-canonical.js';

/** A small deterministic generator of choices, seeded by fast-check. */
function chooser(seed: number): (n: number) => number {
  let state = seed >>> 0;
  return (n) => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) % n;
  };
}

const SPACES = ['', ' ', '\n', '\t', '\r\n  '];

/** The spellings of a number's value that JSON allows: `1`, `1.0`, `1e0`, `10E-1`, `0.1e+1`... */
function respellNumber(x: number, pick: (n: number) => number): string {
  const plain = JSON.stringify(x);
  const [mantissa = plain, exponent = '0'] = x.toExponential().split('e');
  const e = Number(exponent);
  const [whole = '', fraction = ''] = mantissa.split('.');
  const digits = `${whole}${fraction}`.replace('-', '');
  const sign = x < 0 ? '-' : '';
  switch (pick(5)) {
    case 0:
      return plain;
    case 1:
      return `${mantissa}${pick(2) ? 'e' : 'E'}${e >= 0 && pick(2) ? '+' : ''}${String(e)}`;
    case 2:
      // All digits after the point: 0.<digits>e<e+1>.
      return `${sign}0.${digits}e${String(e + 1)}`;
    case 3:
      // Trailing zeros in the fraction.
      return Number.isInteger(x) && Math.abs(x) < 1e21
        ? `${plain}.000`
        : `${mantissa}${mantissa.includes('.') ? '' : '.'}00e${String(e)}`;
    default:
      // The digits as an integer, the exponent moved: <digits>e<e - fraction length>.
      return `${sign}${digits}e${String(e - fraction.length)}`;
  }
}

/** A string's JSON text with some characters escaped as `\uXXXX` (and `/` as `\/`), as another writer may. */
function respellString(text: string, pick: (n: number) => number): string {
  let out = '"';
  for (const ch of JSON.stringify(text)
    .slice(1, -1)
    .match(/\\u[0-9a-f]{4}|\\.|[^]/g) ?? []) {
    if (ch.length === 1 && ch !== '"' && pick(3) === 0) {
      out += ch === '/' && pick(2) ? '\\/' : `\\u${ch.charCodeAt(0).toString(16).padStart(4, '0')}`;
    } else {
      out += ch;
    }
  }
  return `${out}"`;
}

/** The same JSON value written as another writer may: keys shuffled, whitespace, escapes, numbers respelt. */
function respell(value: unknown, pick: (n: number) => number): string {
  const space = () => SPACES[pick(SPACES.length)] ?? '';
  if (value === null || typeof value === 'boolean') return JSON.stringify(value);
  if (typeof value === 'number') return respellNumber(value, pick);
  if (typeof value === 'string') return respellString(value, pick);
  if (Array.isArray(value)) {
    return `[${space()}${value.map((v) => `${respell(v, pick)}${space()}`).join(`,${space()}`)}]`;
  }
  // Each member inserted at a random place: the keys in a random order.
  const entries: [string, unknown][] = [];
  for (const entry of Object.entries(value as Record<string, unknown>))
    entries.splice(pick(entries.length + 1), 0, entry);
  const members = entries.map(
    ([k, v]) => `${respellString(k, pick)}${space()}:${space()}${respell(v, pick)}`,
  );
  return `{${space()}${members.join(`${space()},${space()}`)}${space()}}`;
}

/** Whether two parsed JSON values have the same content: keys in any order, numbers by value. */
function sameContent(a: unknown, b: unknown): boolean {
  if (typeof a === 'number' && typeof b === 'number') return a === b;
  if (a === null || b === null || typeof a !== 'object' || typeof b !== 'object') return a === b;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  if (Array.isArray(a) && Array.isArray(b))
    return a.length === b.length && a.every((x, i) => sameContent(x, b[i]));
  const ka = Object.keys(a).sort();
  const kb = Object.keys(b).sort();
  return (
    ka.length === kb.length &&
    ka.every(
      (k, i) =>
        k === kb[i] && sameContent((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]),
    )
  );
}

describe('canonicalJson', () => {
  it('is the same for texts that differ only in key order, whitespace, escapes and number spelling', () => {
    fc.assert(
      fc.property(fc.jsonValue(), fc.integer(), (value, seed) => {
        const written = JSON.stringify(value);
        const other = respell(JSON.parse(written), chooser(seed));
        expect(canonicalJson(other), other).toBe(canonicalJson(written));
      }),
      { numRuns: 500 },
    );
  });

  it('is the same exactly when the content is the same (value, key and nesting changes differ)', () => {
    // A small domain, so that equal and unequal pairs both come up often.
    const { value } = fc.letrec((tie) => ({
      value: fc.oneof(
        { depthSize: 'small' },
        fc.constantFrom(null, true, false, 0, 1, 1.5, -2, 'a', 'b', ''),
        fc.array(tie('value'), { maxLength: 3 }),
        fc.dictionary(fc.constantFrom('a', 'b', 'é', '😀'), tie('value'), { maxKeys: 3 }),
      ),
    }));
    fc.assert(
      fc.property(value, value, fc.integer(), (a, b, seed) => {
        const same = canonicalJson(JSON.stringify(a)) === canonicalJson(respell(b, chooser(seed)));
        expect(same).toBe(sameContent(a, b));
      }),
      { numRuns: 2_000 },
    );
  });

  it.each([
    ['a value', '{"a":1,"b":[true,"x"]}', '{"a":1,"b":[true,"y"]}'],
    ['a key', '{"a":1}', '{"A":1}'],
    ['nesting', '{"a":{"b":1}}', '{"a":[{"b":1}]}'],
    ['nesting of arrays', '[[1],2]', '[1,[2]]'],
    ['a string for a number', '{"n":1}', '{"n":"1"}'],
    ['null for a missing key', '{"a":null}', '{}'],
    ['an array for an object', '{"0":"a"}', '["a"]'],
    ['a key that is a prefix of another', '{"ab":"c"}', '{"a":"bc"}'],
    ['integers beyond 2^53 by one', '9007199254740993', '9007199254740992'],
    ['a fraction', '0.1', '0.10000000000000002'],
  ])('differs for %s', (_, a, b) => {
    expect(canonicalJson(a)).not.toBe(canonicalJson(b));
  });

  it.each([
    ['1', '1.0', '1e0', '1E+0', '10e-1', '0.1e1'],
    ['-0', '0', '0.0', '0e10', '-0.0e-5'],
    ['9007199254740993', '9007199254740993.0', '9.007199254740993e15', '90071992547409930e-1'],
    ['1e20', '100000000000000000000', '1.0E+20'],
    ['18446744073709551615', '1.8446744073709551615e19'],
    ['1e300', '1.0e300', '1E+300'],
    ['0.1', '1e-1', '0.10', '100e-3'],
  ])('gives one form for the spellings of %s', (...texts) => {
    const forms = new Set(texts.map(canonicalJsonNumber));
    expect([...forms]).toHaveLength(1);
  });

  it('keeps integers within 64 bits exact and compares other numbers as their double', () => {
    expect(canonicalJsonNumber('9223372036854775807')).toBe('i9223372036854775807;');
    expect(canonicalJsonNumber('-9223372036854775808')).toBe('i-9223372036854775808;');
    // Beyond UINT64 BigQuery keeps a FLOAT64: the double's text, however the integer was spelt.
    expect(canonicalJsonNumber('18446744073709551616')).toBe(canonicalJsonNumber('1.8446744073709552e19'));
    expect(canonicalJsonNumber('1180591620717411303424')).toBe(canonicalJsonNumber('1.1805916207174113e+21'));
  });

  it('keeps the first of duplicate keys, as BigQuery does', () => {
    expect(canonicalJson('{"a":1,"b":2,"a":3}')).toBe(canonicalJson('{"b":2,"a":1}'));
  });

  it('sorts keys by code point, not by UTF-16 unit', () => {
    // U+FFFD sorts before U+1F600 by code point; its UTF-16 unit 0xFFFD sorts after the surrogate 0xD83D.
    expect(canonicalJson('{"😀":1,"\uFFFD":2}')).toBe('o2:s1:\uFFFDi2;s2:😀i1;');
  });

  it('keeps text that is not JSON as written, so that only the same text agrees', () => {
    expect(canonicalJson('{"a":')).toBe('x5:{"a":');
    expect(canonicalJson('[1] 2')).not.toBe(canonicalJson('[1]'));
  });
});
