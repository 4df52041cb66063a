/** One concurrent part of a mapping run: works until its signal aborts (resolve) or it fails (reject). */
export type Role = (signal: AbortSignal) => Promise<void>;

/**
 * Runs `roles` concurrently until all of them ended. The first real error wins: the other roles are then
 * stopped (their signal aborts with that error) and awaited, and that error is thrown. A role that rejects
 * with the reason of its own stop (an abort) reports no error; one that fails otherwise while stopping (a
 * checkpoint write refused as it flushed, say) does, if no error came before. Resolves when every role
 * ended without a real error (after `signal` aborted, or because each was done).
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
          if (failure || isAbort(error, stop.signal)) return;
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

/** Whether `error` is `signal`'s abort as a role reports it: the reason itself, or an AbortError. */
function isAbort(error: unknown, signal: AbortSignal): boolean {
  if (!signal.aborted) return false;
  return error === signal.reason || (error instanceof Error && error.name === 'AbortError');
}
