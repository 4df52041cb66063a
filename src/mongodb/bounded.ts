import { type Abortable } from 'mongodb';

/**
 * Bounds every bookkeeping operation (checkpoint, status, columns, fencing reads) on its own: a connection
 * that stopped answering (a half-open TCP connection, a stalled load balancer) would otherwise hold it until
 * the operating system gives up on the connection, many minutes later. Far above what a healthy write takes,
 * a majority write on a lagging replica set included.
 */
export const DEFAULT_MONGO_OPERATION_TIMEOUT_MS = 30_000;

/**
 * Every operation gets its signal bounded by `within` (core/deadline.ts). The driver (7.x) takes a signal on
 * every operation (`Abortable`, typed on reads only); its per-operation `timeoutMS` has no effect any more. On
 * abort it closes the connection the operation was waiting on, so nothing stays checked out of the pool. A
 * write given up may still have been applied: every bookkeeping write is idempotent or fenced, and is
 * repeated by the next attempt.
 */

/** Operation options carrying `signal` (if any), in a form every driver method accepts (see `within`). */
export function withSignal<T extends object>(options: T, signal: AbortSignal | undefined): T & Abortable {
  return signal ? { ...options, signal } : options;
}
