import { runPreparedStreamLoop, type PreparedStreamLoopOptions } from '../core/stream-loop.js';
import { type StreamStart } from '../core/ports.js';
import { type Logger } from '../observability/logger.js';

/**
 * The stream role of a mapping run: the change stream from `start` until `signal` aborts, through drops,
 * renames and invalidations of the collection (a re-created collection is archived again, `startAfter` the
 * invalidate). Errors, a lost history included, are the caller's: it decides whether to take a new snapshot.
 * The stream is read decoded and mapped on this thread, or raw and mapped on worker threads: `options`
 * carries the source and the preparation that go together.
 */
export async function runStream<B>(
  options: PreparedStreamLoopOptions<B>,
  start: StreamStart,
  signal: AbortSignal,
  log: Logger,
): Promise<void> {
  let from = start;
  for (;;) {
    const end = await runPreparedStreamLoop(options, from, signal);
    if (!end) return;
    log.warn(
      { position: end.position.clusterTime },
      'collection dropped, renamed or invalidated; archiving continues when it is re-created',
    );
    from = { kind: 'startAfter', position: end.position };
  }
}
