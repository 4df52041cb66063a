// Finding 5 of the issue 14 review: a failed repair or verification stopped the mapping's stream (the repair
// role ran beside it and the first error of any role stops them all). keepServing is what the mapping runs
// the repair role in now.
import { describe, expect, it } from 'vitest';
import { keepServing } from '../../../src/app/repair-role.js';
import { FencedOutError } from '../../../src/errors.js';
import { createLogger } from '../../../src/observability/logger.js';

function harness() {
  const lines: Record<string, unknown>[] = [];
  const log = createLogger({
    level: 'info',
    destination: { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) },
  });
  const reported: string[] = [];
  const waits: number[] = [];
  const options = {
    log,
    reportFailure: (error: unknown) => {
      reported.push((error as Error).message);
      return Promise.resolve();
    },
    sleep: (ms: number) => {
      waits.push(ms);
      return Promise.resolve();
    },
    random: () => 1,
  };
  return { lines, reported, waits, options };
}

describe('keepServing (the repair role)', () => {
  it('never fails for a failed repair: it logs, reports, backs off and tries again until served', async () => {
    const { lines, reported, waits, options } = harness();
    let calls = 0;
    const serve = () => {
      calls++;
      return calls < 3 ? Promise.reject(new Error(`view query failed ${String(calls)}`)) : Promise.resolve();
    };

    await expect(keepServing(serve, options, new AbortController().signal)).resolves.toBeUndefined();

    expect(calls).toBe(3);
    expect(reported).toEqual(['view query failed 1', 'view query failed 2']);
    expect(waits).toHaveLength(2);
    expect(waits[1]).toBeGreaterThan(waits[0] ?? Infinity);
    expect(lines.filter((l) => l.level === 'warn')).toHaveLength(2);
  });

  it('passes on a fenced-out write: the mapping belongs to another instance now', async () => {
    const { options } = harness();
    const serve = () => Promise.reject(new FencedOutError('a newer owner wrote'));
    await expect(keepServing(serve, options, new AbortController().signal)).rejects.toBeInstanceOf(
      FencedOutError,
    );
  });

  it('ends quietly when the mapping stops while it waits', async () => {
    const { options } = harness();
    const stop = new AbortController();
    const serve = () => Promise.reject(new Error('MongoDB timed out'));
    const waiting = keepServing(
      serve,
      {
        ...options,
        sleep: (_ms: number, signal?: AbortSignal) =>
          new Promise<void>((_resolve, reject) => {
            signal?.addEventListener('abort', () => {
              reject(signal.reason as Error);
            });
            stop.abort();
          }),
      },
      stop.signal,
    );
    await expect(waiting).resolves.toBeUndefined();
  });
});
