import { describe, expect, it } from 'vitest';
import {
  CheckFailure,
  CheckSkipped,
  resultLine,
  runChecks,
  summaryLine,
  type Check,
  type CheckResult,
  type CheckStatus,
} from '../../../src/app/checks.js';

function after<T>(ms: number, value: T): Promise<T> {
  return new Promise((resolve) => setTimeout(resolve, ms, value));
}

function check(name: string, run: Check['run']): Check {
  return { name, run, timedOut: (seconds) => `${name}: no answer within ${String(seconds)} s` };
}

describe('runChecks (issue 13: validate fails fast)', () => {
  it('runs the checks side by side: each one ends only once all three have started', async () => {
    let started = 0;
    let allStarted: () => void = () => undefined;
    const barrier = new Promise<void>((resolve) => {
      allStarted = resolve;
    });
    // Run one after the other, the first would wait for the others for ever and time out.
    const together = (name: string) =>
      check(name, async () => {
        if (++started === 3) allStarted();
        await barrier;
        return { detail: 'fine' };
      });
    const results = await runChecks([together('a'), together('b'), together('c')], {
      timeoutMs: 2_000,
      onResult: () => undefined,
    });
    expect(results.map((r) => r.status)).toEqual(['ok', 'ok', 'ok']);
  });

  it('reports each result as it completes, the fastest first', async () => {
    const seen: string[] = [];
    await runChecks(
      [check('slow', () => after(60, { detail: '' })), check('fast', () => after(5, { detail: '' }))],
      {
        timeoutMs: 5_000,
        onResult: (r) => seen.push(r.name),
      },
    );
    expect(seen).toEqual(['fast', 'slow']);
  });

  it('a check that does not answer fails at its timeout with its own line, and its signal aborts', async () => {
    let aborted = false;
    const hanging = check(
      'mongodb',
      (signal) =>
        new Promise(() => {
          signal.addEventListener('abort', () => {
            aborted = true;
          });
        }),
    );
    const started = performance.now();
    const results = await runChecks([hanging, check('bigquery', () => after(5, { detail: 'ok' }))], {
      timeoutMs: 80,
      onResult: () => undefined,
    });
    const elapsed = performance.now() - started;
    expect(elapsed).toBeGreaterThanOrEqual(75);
    expect(elapsed).toBeLessThan(1_000);
    expect(aborted).toBe(true);
    expect(results).toEqual([
      expect.objectContaining({ name: 'bigquery', status: 'ok' }),
      expect.objectContaining({
        name: 'mongodb',
        status: 'failed',
        message: 'mongodb: no answer within 0.08 s',
      }),
    ]);
  });

  it("a failure's message is reported as the check names it", async () => {
    const results = await runChecks(
      [
        check('key file /k.json', () =>
          Promise.reject(new CheckFailure('cannot read /k.json (no such file): check SERVICE_ACCOUNT_FILE')),
        ),
      ],
      { timeoutMs: 1_000, onResult: () => undefined },
    );
    expect(results).toEqual([
      expect.objectContaining({
        status: 'failed',
        message: 'cannot read /k.json (no such file): check SERVICE_ACCOUNT_FILE',
      }),
    ]);
  });

  it('starts the checks a pass brings once it passed, and none after a failure', async () => {
    const order: string[] = [];
    const child = (name: string) =>
      check(name, () => {
        order.push(name);
        return Promise.resolve({ detail: '' });
      });
    const results = await runChecks(
      [
        check('settings', () =>
          after(10, { detail: '2 documents', next: [child('stream a'), child('stream b')] }),
        ),
        check('bigquery', () => Promise.reject(new Error('down'))),
      ],
      { timeoutMs: 1_000, onResult: () => undefined },
    );
    expect(order).toEqual(['stream a', 'stream b']);
    expect(results.map((r) => r.name)).toEqual(['bigquery', 'settings', 'stream a', 'stream b']);
  });

  it('a check that cannot run for want of another is skipped, not failed', async () => {
    const results = await runChecks(
      [check('table ads', () => Promise.reject(new CheckSkipped('BigQuery failed')))],
      { timeoutMs: 1_000, onResult: () => undefined },
    );
    expect(results).toEqual([expect.objectContaining({ status: 'skipped', message: 'BigQuery failed' })]);
  });

  it('each check has its own bound from its own start (a follow-up is not cut by its parent time)', async () => {
    const results = await runChecks(
      [
        check('first', () =>
          after(60, { detail: '', next: [check('second', () => after(60, { detail: '' }))] }),
        ),
      ],
      { timeoutMs: 100, onResult: () => undefined },
    );
    expect(results.map((r) => r.status)).toEqual(['ok', 'ok']);
  });
});

describe('summaryLine and resultLine', () => {
  const result = (name: string, status: CheckStatus, message = ''): CheckResult => ({
    name,
    status,
    message,
    ms: 1,
  });

  it('names the failed checks, and counts the skipped apart', () => {
    expect(
      summaryLine([
        result('config', 'ok'),
        result('mongodb', 'failed'),
        result('bigquery', 'failed'),
        result('table ads', 'skipped'),
      ]),
    ).toBe('validate: failed, 2 of 3 checks failed (1 skipped): mongodb, bigquery');
  });

  it('says how many passed', () => {
    expect(summaryLine([result('config', 'ok')])).toBe('validate: ok, 1 check passed');
  });

  it('prints one line per result', () => {
    expect(resultLine(result('config', 'ok'))).toBe('config: ok');
    expect(resultLine(result('mongodb', 'ok', 'reached h:1'))).toBe('mongodb: ok, reached h:1');
    expect(resultLine(result('mongodb', 'failed', 'MongoDB at h:1 unreachable'))).toBe(
      'mongodb: failed: MongoDB at h:1 unreachable',
    );
    expect(resultLine(result('table ads', 'skipped', 'BigQuery failed'))).toBe(
      'table ads: skipped (BigQuery failed)',
    );
  });
});
