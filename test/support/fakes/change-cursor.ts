import { type ClusterTime } from '../../../src/core/model.js';
import {
  type ChangeBatch,
  type ChangeCursor,
  type ChangeSource,
  type StreamStart,
} from '../../../src/core/ports.js';

/**
 * A change source that serves scripted batches, one per pull. `onPull` sees every pull before it is served
 * (the test can note what else is going on then). When the script ends the cursor either aborts `stop` (the
 * run ends as a graceful stop) or, with `stop` undefined, idles: each pull waits for its signal, as a
 * quiet change stream does.
 */
export class ScriptedChangeSource implements ChangeSource {
  readonly opened: StreamStart[] = [];
  /** Pulls made, served or not. */
  pulls = 0;
  closed = 0;

  constructor(
    private readonly batches: ChangeBatch[],
    private readonly stop?: AbortController,
    private readonly onPull: (pull: number) => void = () => undefined,
  ) {}

  /** Batches not yet served. */
  get remaining(): number {
    return this.batches.length;
  }

  open(start: StreamStart): Promise<ChangeCursor> {
    this.opened.push(start);
    return Promise.resolve({
      next: (_maxEvents, signal) => {
        this.pulls++;
        this.onPull(this.pulls);
        const batch = this.batches.shift();
        if (batch) return Promise.resolve(batch);
        if (this.stop) {
          this.stop.abort();
          return Promise.reject(new Error('aborted'));
        }
        return new Promise<ChangeBatch>((_, reject) => {
          const aborted = () => {
            reject(signal.reason instanceof Error ? signal.reason : new Error('aborted'));
          };
          if (signal.aborted) aborted();
          else signal.addEventListener('abort', aborted, { once: true });
        });
      },
      close: () => {
        this.closed++;
        return Promise.resolve();
      },
    });
  }

  currentTime(): Promise<ClusterTime> {
    return Promise.resolve({ t: 1_700_000_000, i: 0 });
  }
}
