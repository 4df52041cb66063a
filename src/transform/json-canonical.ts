/**
 * The canonical form of a JSON value, for `verify`: one string per content, whatever text spelt it. BigQuery
 * stores a JSON value parsed (GoogleSQL's JSON type: whitespace is not kept, the members of an object are not
 * guaranteed to keep their order, of duplicate keys only the first is kept, array elements keep their order;
 * a number is stored as an integer when it is one within the 64-bit range and as a FLOAT64 otherwise), so the
 * text it gives back may differ from the text written in key order, whitespace, escapes and number spelling
 * (`1`, `1.0`, `1e0`, `1E+0`). The emulator keeps the text as written, so the peers never show such text:
 * `test/unit/transform/json-canonical.test.ts` constructs it (keys shuffled, whitespace, escapes, numbers
 * respelt) from what the mapper writes. Both texts, parsed here, give the same canonical string for the same
 * content:
 *
 * - `null`, `true`, `false`: `n`, `t`, `f`;
 * - a number whose value is an integer in [-2^63, 2^64 - 1] (what BigQuery keeps exact): `i<decimal>;`, from
 *   the exact decimal value of its text (`1e3`, `1000.0` and `1000` alike, and 2^53 + 1 kept apart from
 *   2^53); any other number as its FLOAT64: `d<shortest text of the double>;`;
 * - a string: `s<UTF-16 length>:<the decoded string>` (escapes decoded, so `"\u00e9"` is `"é"`);
 * - an array: `a<count>:` and its elements in order;
 * - an object: `o<count>:` and each member as its key's string form then its value, keys sorted by code
 *   point; of a key given twice only the first is kept, as BigQuery keeps it.
 *
 * Every part is length-prefixed or terminated, so no two values concatenate to the same string.
 */

/** What starts the canonical form of text that is not valid JSON: kept as written, so only equal texts agree. */
export const INVALID_JSON_PART = 'x';

const INT64_MIN = -(2n ** 63n);
const UINT64_MAX = 2n ** 64n - 1n;
/** Digits of the largest integer kept exact (2^64 - 1 has 20): more can only be a FLOAT64. */
const MAX_EXACT_DIGITS = 20;

const NUMBER = /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/y;
const WHITESPACE = /[ \t\n\r]*/y;

class InvalidJson extends Error {}

/**
 * The canonical string of a JSON text (see above). Text that is not one valid JSON value (which neither the
 * mapper nor BigQuery produces) is kept as written behind INVALID_JSON_PART.
 */
export function canonicalJson(text: string): string {
  const parser = new Parser(text);
  try {
    const value = parser.value();
    parser.end();
    return value;
  } catch (error) {
    if (!(error instanceof InvalidJson)) throw error;
    return `${INVALID_JSON_PART}${String(text.length)}:${text}`;
  }
}

/** The canonical part of one JSON number token (see above). */
export function canonicalJsonNumber(token: string): string {
  const match = /^(-?)(\d+)(?:\.(\d+))?(?:[eE]([+-]?\d+))?$/.exec(token);
  if (!match) throw new InvalidJson(token);
  const [, sign = '', whole = '', fraction = '', exponentText = '0'] = match;
  // The value is sign * digits * 10^exponent, with no leading or trailing zeros in digits.
  let digits = (whole + fraction).replace(/^0+/, '');
  let exponent = Number(exponentText) - fraction.length;
  if (digits === '') return 'i0;';
  const trailing = /0*$/.exec(digits)?.[0].length ?? 0;
  digits = digits.slice(0, digits.length - trailing);
  exponent += trailing;
  if (exponent >= 0 && digits.length + exponent <= MAX_EXACT_DIGITS) {
    const magnitude = BigInt(digits) * 10n ** BigInt(exponent);
    const value = sign === '-' ? -magnitude : magnitude;
    if (value >= INT64_MIN && value <= UINT64_MAX) return `i${value.toString()};`;
  }
  const x = Number(token);
  return Object.is(x, -0) || x === 0 ? 'i0;' : `d${String(x)};`;
}

function compareCodePoints(a: string, b: string): number {
  // UTF-16 order differs from code point order only where a surrogate meets U+E000..U+FFFF.
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x === y) continue;
    const xs = x >= 0xd800 && x <= 0xdfff;
    const ys = y >= 0xd800 && y <= 0xdfff;
    if (xs !== ys) return xs ? 1 : -1;
    return x - y;
  }
  return a.length - b.length;
}

function stringPart(value: string): string {
  return `s${String(value.length)}:${value}`;
}

/** A recursive-descent reader of one JSON value that writes its canonical form as it goes. */
class Parser {
  #at = 0;

  constructor(private readonly text: string) {}

  end(): void {
    this.#skip();
    if (this.#at !== this.text.length) throw new InvalidJson('trailing text');
  }

  value(): string {
    this.#skip();
    const ch = this.text[this.#at];
    switch (ch) {
      case '{':
        return this.#object();
      case '[':
        return this.#array();
      case '"':
        return stringPart(this.#string());
      case 't':
        return this.#literal('true', 't');
      case 'f':
        return this.#literal('false', 'f');
      case 'n':
        return this.#literal('null', 'n');
      default:
        return this.#number();
    }
  }

  #skip(): void {
    WHITESPACE.lastIndex = this.#at;
    WHITESPACE.exec(this.text);
    this.#at = WHITESPACE.lastIndex;
  }

  #expect(ch: string): void {
    this.#skip();
    if (this.text[this.#at] !== ch) throw new InvalidJson(`expected ${ch}`);
    this.#at++;
  }

  #literal(word: string, part: string): string {
    if (!this.text.startsWith(word, this.#at)) throw new InvalidJson(word);
    this.#at += word.length;
    return part;
  }

  #number(): string {
    NUMBER.lastIndex = this.#at;
    const match = NUMBER.exec(this.text);
    if (!match) throw new InvalidJson('value');
    this.#at = NUMBER.lastIndex;
    return canonicalJsonNumber(match[0]);
  }

  /** The decoded string at the cursor (JSON.parse of its token decodes every escape as JSON says). */
  #string(): string {
    const start = this.#at;
    let i = start + 1;
    for (;;) {
      const ch = this.text.charCodeAt(i);
      if (Number.isNaN(ch)) throw new InvalidJson('unterminated string');
      if (ch === 0x22) break;
      i += ch === 0x5c ? 2 : 1;
    }
    this.#at = i + 1;
    try {
      return JSON.parse(this.text.slice(start, i + 1)) as string;
    } catch {
      throw new InvalidJson('string');
    }
  }

  #array(): string {
    this.#at++;
    const items: string[] = [];
    this.#skip();
    if (this.text[this.#at] === ']') {
      this.#at++;
      return 'a0:';
    }
    for (;;) {
      items.push(this.value());
      this.#skip();
      const ch = this.text[this.#at++];
      if (ch === ']') break;
      if (ch !== ',') throw new InvalidJson('array');
    }
    return `a${String(items.length)}:${items.join('')}`;
  }

  #object(): string {
    this.#at++;
    const members = new Map<string, string>();
    this.#skip();
    if (this.text[this.#at] === '}') {
      this.#at++;
      return 'o0:';
    }
    for (;;) {
      this.#skip();
      if (this.text[this.#at] !== '"') throw new InvalidJson('key');
      const key = this.#string();
      this.#expect(':');
      const value = this.value();
      if (!members.has(key)) members.set(key, value);
      this.#skip();
      const ch = this.text[this.#at++];
      if (ch === '}') break;
      if (ch !== ',') throw new InvalidJson('object');
    }
    const keys = [...members.keys()].sort(compareCodePoints);
    let out = `o${String(keys.length)}:`;
    for (const key of keys) out += stringPart(key) + (members.get(key) ?? '');
    return out;
  }
}
