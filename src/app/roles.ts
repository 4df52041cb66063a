/** One concurrent part of a mapping run: works until its signal aborts (resolve) or it fails (reject). */
export type Role = (signal: AbortSignal) => Promise<void>;

/**
 * Runs `roles` concurrently until all of them ended. The first real error wins: the other roles are then
 * stopped (their signal aborts with that error) and awaited, and that error is thrown. A role that rejects
 * after the roles were told to stop (by `signal`, or by another role's failure) reports that stop, not an
 * error of its own. Resolves when every role ended without a real error (after `signal` aborted, or because
 * each was done).
 */
export async function runRoles(roles: readonly Role[], signal: AbortSignal): Promise<void> {
  const stop = new AbortController();
  const onStop = (): void => {
    stop.abort(signal.reason);
  };
  signal.addEventListener('abort', onStop, { once: true });
  if (signal.aborted) onStop();
  let failure: { readonly error: unknown } | undefined;
  try {
    await Promise.all(
      roles.map(async (role) => {
        try {
          await role(stop.signal);
        } catch (error) {
          if (stop.signal.aborted) return;
          failure = { error };
          stop.abort(error);
        }
      }),
    );
  } finally {
    signal.removeEventListener('abort', onStop);
  }
  if (failure) throw failure.error;
}
