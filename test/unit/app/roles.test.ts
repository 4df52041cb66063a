import { describe, expect, it } from 'vitest';
import { runRoles, type Role } from '../../../src/app/roles.js';

/** A role that works until its signal aborts, then rejects with the reason (as the stream and backfill do). */
function untilStopped(log: string[], name: string): Role {
  return (signal) =>
    new Promise<void>((_, reject) => {
      signal.addEventListener('abort', () => {
        log.push(`${name} stopped`);
        reject(signal.reason instanceof Error ? signal.reason : new Error('aborted'));
      });
    });
}

describe('runRoles (issue 11 roles)', () => {
  it('throws the first real error, stops the other role and awaits it (its abort is no error)', async () => {
    const log: string[] = [];
    const first = new Error('BigQuery refused the table');
    const failing: Role = async () => {
      await new Promise((resolve) => setTimeout(resolve, 5));
      throw first;
    };
    const outcome = await runRoles([untilStopped(log, 'stream'), failing], new AbortController().signal).then(
      () => 'resolved',
      (error: unknown) => error,
    );
    expect(outcome).toBe(first);
    expect(log).toEqual(['stream stopped']);
  });

  it('a second error after the first is not the one reported', async () => {
    const first = new Error('first');
    const later: Role = (signal) =>
      new Promise((_, reject) => {
        signal.addEventListener('abort', () => {
          setTimeout(() => {
            reject(new Error('later, while stopping'));
          }, 1);
        });
      });
    await expect(runRoles([later, () => Promise.reject(first)], new AbortController().signal)).rejects.toBe(
      first,
    );
  });

  it('a stop ends every role and resolves; a role that ends on its own leaves the others running', async () => {
    const log: string[] = [];
    const stop = new AbortController();
    let backfillDone = false;
    const backfill: Role = async () => {
      await new Promise((resolve) => setTimeout(resolve, 1));
      backfillDone = true;
    };
    const running = runRoles([untilStopped(log, 'stream'), backfill], stop.signal);
    await new Promise((resolve) => setTimeout(resolve, 10));
    expect(backfillDone).toBe(true);
    expect(log).toEqual([]);
    stop.abort(new Error('shutdown'));
    await expect(running).resolves.toBeUndefined();
    expect(log).toEqual(['stream stopped']);
  });

  it('an error other than the abort while stopping (a checkpoint write refused as the stream flushes) is reported', async () => {
    const fenced = new Error('another instance owns this mapping now');
    const stop = new AbortController();
    const flushing: Role = (signal) =>
      new Promise((_, reject) => {
        signal.addEventListener('abort', () => {
          reject(fenced);
        });
      });
    const log: string[] = [];
    const running = runRoles([flushing, untilStopped(log, 'backfill')], stop.signal);
    stop.abort(new Error('lease lost'));
    await expect(running).rejects.toBe(fenced);
    expect(log).toEqual(['backfill stopped']);
  });
});
