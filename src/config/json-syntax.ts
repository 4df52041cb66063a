/*
 * Where a JSON text stops being JSON, as a line and column. Node 20's JSON.parse names the position only for
 * some mistakes ("Unexpected token '}', ... is not valid JSON" names none), and a configuration file is
 * edited by hand: its reader should be told where to look. This scanner runs only after JSON.parse failed.
 */

/** A place in a text: 1-based line and column (columns count UTF-16 code units, as editors mostly do). */
export interface TextPlace {
  readonly line: number;
  readonly column: number;
}

/** The first place where `text` is not JSON, with what was expected there; undefined when it is JSON. */
export function jsonSyntaxProblem(text: string): { place: TextPlace; expected: string } | undefined {
  const scanner = new Scanner(text);
  try {
    scanner.document();
    return undefined;
  } catch (error) {
    if (!(error instanceof SyntaxProblem)) throw error;
    return { place: placeOf(text, error.offset), expected: error.expected };
  }
}

/** The line and column of `offset` in `text`. */
export function placeOf(text: string, offset: number): TextPlace {
  let line = 1;
  let lineStart = 0;
  for (let i = 0; i < offset && i < text.length; i++) {
    if (text[i] === '\n') {
      line++;
      lineStart = i + 1;
    }
  }
  return { line, column: offset - lineStart + 1 };
}

class SyntaxProblem extends Error {
  constructor(
    readonly offset: number,
    readonly expected: string,
  ) {
    super(expected);
  }
}

const LITERALS = ['true', 'false', 'null'] as const;
const NUMBER = /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/y;
/** A string's characters up to its closing quote: anything but a quote, a backslash or a control character. */
const STRING_BODY = new RegExp(
  `(?:[^"\\\\${String.fromCharCode(0)}-${String.fromCharCode(0x1f)}]|\\\\(?:["\\\\/bfnrt]|u[0-9a-fA-F]{4}))*`,
  'y',
);

/** A recursive-descent reader of RFC 8259 JSON that only finds the first mistake. */
class Scanner {
  #at = 0;

  constructor(private readonly text: string) {}

  document(): void {
    this.#space();
    this.#value();
    this.#space();
    if (this.#at < this.text.length) this.#fail('the end of the file after the JSON value');
  }

  #value(): void {
    const c = this.text[this.#at];
    if (c === '{') {
      this.#object();
      return;
    }
    if (c === '[') {
      this.#array();
      return;
    }
    if (c === '"') {
      this.#string();
      return;
    }
    for (const literal of LITERALS) {
      if (this.text.startsWith(literal, this.#at)) {
        this.#at += literal.length;
        return;
      }
    }
    NUMBER.lastIndex = this.#at;
    if (NUMBER.test(this.text) && NUMBER.lastIndex > this.#at) {
      this.#at = NUMBER.lastIndex;
      return;
    }
    this.#fail('a value (a string in double quotes, a number, true, false, null, an object or an array)');
  }

  #object(): void {
    this.#at++;
    this.#space();
    if (this.text[this.#at] === '}') {
      this.#at++;
      return;
    }
    for (;;) {
      if (this.text[this.#at] !== '"') this.#fail('a key in double quotes');
      this.#string();
      this.#space();
      this.#expect(':', 'a colon after the key');
      this.#space();
      this.#value();
      this.#space();
      if (this.text[this.#at] === ',') {
        this.#at++;
        this.#space();
        if (this.text[this.#at] === '}')
          this.#fail('another key after the comma (JSON allows no trailing comma)');
        continue;
      }
      this.#expect('}', 'a comma or the closing }');
      return;
    }
  }

  #array(): void {
    this.#at++;
    this.#space();
    if (this.text[this.#at] === ']') {
      this.#at++;
      return;
    }
    for (;;) {
      this.#value();
      this.#space();
      if (this.text[this.#at] === ',') {
        this.#at++;
        this.#space();
        if (this.text[this.#at] === ']')
          this.#fail('another value after the comma (JSON allows no trailing comma)');
        continue;
      }
      this.#expect(']', 'a comma or the closing ]');
      return;
    }
  }

  #string(): void {
    this.#at++;
    STRING_BODY.lastIndex = this.#at;
    STRING_BODY.test(this.text);
    this.#at = STRING_BODY.lastIndex;
    this.#expect('"', 'the closing double quote of the string (or a valid escape)');
  }

  #expect(char: string, expected: string): void {
    if (this.text[this.#at] !== char) this.#fail(expected);
    this.#at++;
  }

  #space(): void {
    while (this.#at < this.text.length && ' \t\n\r'.includes(this.text.charAt(this.#at))) this.#at++;
  }

  #fail(expected: string): never {
    throw new SyntaxProblem(this.#at, expected);
  }
}
