import { errorMessage } from '../errors.js';

/**
 * Pre-flight checks (`validate`): each one asks one thing of one service, and they run side by side, each
 * bounded, so a service that does not answer costs one timeout, not one per check after it.
 */

/** How long `validate` gives each check unless `--timeout` says otherwise. */
export const DEFAULT_CHECK_TIMEOUT_MS = 10_000;

/** What a check that passed says, and the checks that can only run now that it passed. */
export interface CheckPass {
  /** The line's text after `ok`, e.g. `reached 127.0.0.1:27017`; empty for none. */
  readonly detail: string;
  /** Started as soon as this check passed (the change streams once the settings are read, say). */
  readonly next?: readonly Check[];
}

/** One question to one service. */
export interface Check {
  /** What the line names first: `mongodb`, `settings archive.settings`, `key file /keys/sa.json`. */
  readonly name: string;
  /** Rejects with a CheckFailure (or any error) when the check fails; `signal` aborts at its timeout. */
  run(signal: AbortSignal): Promise<CheckPass>;
  /** The failure line when the check has not answered within its time: names the service and what to check. */
  timedOut(seconds: number): string;
}

/**
 * A check failed for a reason it could name: `message` names the service and the fix and is printed as is;
 * `cause` keeps the original error.
 */
export class CheckFailure extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'CheckFailure';
  }
}

/**
 * A check cannot run because what it needs failed in another check (which reported it): it is neither
 * passed nor failed, so the failure is reported once.
 */
export class CheckSkipped extends Error {
  constructor(reason: string) {
    super(reason);
    this.name = 'CheckSkipped';
  }
}

export type CheckStatus = 'ok' | 'failed' | 'skipped';

/** A finished check, in the order they finished. */
export interface CheckResult {
  readonly name: string;
  readonly status: CheckStatus;
  /** `detail` of a pass, the failure's message, or why it was skipped. */
  readonly message: string;
  readonly ms: number;
}

export interface CheckOptions {
  /** Each check's bound, from its own start. */
  readonly timeoutMs: number;
  /** Told of each result as soon as it is known (one printed line). */
  readonly onResult: (result: CheckResult) => void;
}

/**
 * Runs `checks` concurrently, each within `timeoutMs`, and the checks a pass brings (`next`) as soon as it
 * passes; resolves with every result once all have finished. A check that runs out of time is reported
 * failed at once with its `timedOut` line (its signal aborts; what it still does afterwards is ignored).
 */
export async function runChecks(checks: readonly Check[], options: CheckOptions): Promise<CheckResult[]> {
  const results: CheckResult[] = [];
  const pending = new Set<Promise<void>>();
  const start = (check: Check): void => {
    const running = runOne(check, options.timeoutMs).then((outcome) => {
      results.push(outcome.result);
      options.onResult(outcome.result);
      for (const next of outcome.next) start(next);
    });
    pending.add(running);
    void running.finally(() => pending.delete(running));
  };
  for (const check of checks) start(check);
  while (pending.size > 0) await Promise.all([...pending]);
  return results;
}

async function runOne(
  check: Check,
  timeoutMs: number,
): Promise<{ result: CheckResult; next: readonly Check[] }> {
  const started = performance.now();
  const controller = new AbortController();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<'timeout'>((resolve) => {
    timer = setTimeout(() => {
      resolve('timeout');
    }, timeoutMs);
  });
  const result = (status: CheckStatus, message: string): CheckResult => ({
    name: check.name,
    status,
    message,
    ms: Math.round(performance.now() - started),
  });
  try {
    const outcome = await Promise.race([check.run(controller.signal), timeout]);
    if (outcome === 'timeout') {
      controller.abort(new DOMException(`${check.name}: no answer`, 'TimeoutError'));
      return { result: result('failed', check.timedOut(timeoutMs / 1_000)), next: [] };
    }
    return { result: result('ok', outcome.detail), next: outcome.next ?? [] };
  } catch (error) {
    const status = error instanceof CheckSkipped ? 'skipped' : 'failed';
    return { result: result(status, errorMessage(error)), next: [] };
  } finally {
    clearTimeout(timer);
  }
}

/** One printed line for a result: `mongodb: ok, reached h:27017`, `mongodb: failed: MongoDB at ...`. */
export function resultLine(result: CheckResult): string {
  switch (result.status) {
    case 'ok':
      return `${result.name}: ok${result.message === '' ? '' : `, ${result.message}`}`;
    case 'failed':
      return `${result.name}: failed: ${result.message}`;
    case 'skipped':
      return `${result.name}: skipped (${result.message})`;
    default:
      return result.status satisfies never;
  }
}

/** The last line of `validate`: how many checks ran, and which failed. */
export function summaryLine(results: readonly CheckResult[]): string {
  const failed = results.filter((r) => r.status === 'failed').map((r) => r.name);
  const skipped = results.filter((r) => r.status === 'skipped').length;
  const ran = results.length - skipped;
  const checks = `${String(ran)} check${ran === 1 ? '' : 's'}`;
  const skips = skipped === 0 ? '' : ` (${String(skipped)} skipped)`;
  return failed.length === 0
    ? `validate: ok, ${checks} passed${skips}`
    : `validate: failed, ${String(failed.length)} of ${checks} failed${skips}: ${failed.join(', ')}`;
}
