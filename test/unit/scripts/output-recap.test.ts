import { describe, expect, it } from 'vitest';
import { OutputRecap } from '../../../scripts/peers/output-recap.js';

describe('OutputRecap', () => {
  it('keeps vitest failure headers and error lines, without colour, repeats or JSON log lines', () => {
    const recap = new OutputRecap();
    const output = [
      ' \u001b[32m✓\u001b[39m integration test/a.test.ts (3 tests) 120ms',
      '{"level":40,"msg":"pipeline failed","err":{"type":"Error: boom"}}',
      ' \u001b[31mFAIL\u001b[39m  integration test/integration/daemon/crash.test.ts > crash recovery > loses nothing',
      'AssertionError: expected 4999 to be 5000 // Object.is equality',
      ' FAIL  integration test/integration/daemon/crash.test.ts > crash recovery > loses nothing',
      '   ❯ test/integration/support/daemon.ts:141:41',
      ' Test Files  1 failed | 50 passed (51)',
      '',
    ].join('\n');
    // Chunks split inside lines and inside a colour escape.
    for (let i = 0; i < output.length; i += 7) recap.push(output.slice(i, i + 7));
    const { failures, tail } = recap.recap();
    expect(failures).toEqual([
      ' FAIL  integration test/integration/daemon/crash.test.ts > crash recovery > loses nothing',
      'AssertionError: expected 4999 to be 5000 // Object.is equality',
    ]);
    expect(tail.at(-1)).toBe(' Test Files  1 failed | 50 passed (51)');
    expect(tail.join('\n')).not.toContain('\u001b');
  });

  it('keeps only the last lines, and a last line without a newline', () => {
    const recap = new OutputRecap({ tailLines: 3 });
    recap.push('one\ntwo\nthree\r\nfour\nfive');
    expect(recap.recap().tail).toEqual(['three', 'four', 'five']);
  });

  it('bounds the failure lines to the first ones', () => {
    const recap = new OutputRecap({ failureLines: 2 });
    recap.push(['TypeError: a', 'RangeError: b', 'Error: c', ''].join('\n'));
    expect(recap.recap().failures).toEqual(['TypeError: a', 'RangeError: b']);
  });
});
