/**
 * Remembers what a command printed, so that when it fails the runner can repeat the lines that say why
 * after the peer logs it prints: a CI view that shows only the end of the output then still names the
 * failed tests and their errors.
 */

// Colour and cursor escapes (CSI sequences), which vitest writes when it thinks it has a terminal.
// eslint-disable-next-line no-control-regex
const ANSI = /\u001b\[[0-9;?]*[A-Za-z]/g;

/** A vitest failure header (` FAIL  project file > test`) or an error's first line; not a JSON log line. */
const FAILURE_LINE = /^\s*(?:FAIL\s|×\s|\S*(?:Error|Exception)\b.*:)/;

export interface OutputRecapOptions {
  /** How many of the last lines to keep. */
  readonly tailLines?: number;
  /** How many failure lines to keep (the first ones). */
  readonly failureLines?: number;
}

export class OutputRecap {
  readonly #tailLines: number;
  readonly #failureLines: number;
  readonly #tail: string[] = [];
  readonly #failures: string[] = [];
  #partial = '';

  constructor(options: OutputRecapOptions = {}) {
    this.#tailLines = options.tailLines ?? 15;
    this.#failureLines = options.failureLines ?? 25;
  }

  /** Takes a chunk of output as it comes; lines may be split across chunks. */
  push(chunk: string): void {
    const lines = (this.#partial + chunk).split('\n');
    this.#partial = lines.pop() ?? '';
    for (const line of lines) this.#line(line);
  }

  /** The failure lines seen (first ones, without repeats), then the last lines, colour removed. */
  recap(): { failures: string[]; tail: string[] } {
    const tail = [...this.#tail];
    const partial = this.#partial.replace(ANSI, '').trimEnd();
    if (partial !== '') tail.push(partial);
    return { failures: [...this.#failures], tail: tail.slice(-this.#tailLines) };
  }

  #line(raw: string): void {
    const line = raw.replace(ANSI, '').replace(/\r$/, '').trimEnd();
    if (line === '') return;
    this.#tail.push(line);
    if (this.#tail.length > this.#tailLines) this.#tail.shift();
    if (
      this.#failures.length < this.#failureLines &&
      !line.trimStart().startsWith('{') &&
      FAILURE_LINE.test(line) &&
      !this.#failures.includes(line)
    ) {
      this.#failures.push(line);
    }
  }
}
