import { type Position } from '../../../src/core/model.js';
import {
  type ChangeCursor,
  type ChangeSource,
  type RawChangeBatch,
  type StreamStart,
} from '../../../src/core/ports.js';
import { type ProbedStreamSource } from '../../../src/app/database-streams.js';

/** An idle raw cursor: every pull is empty at `position` (as an idle change stream's post-batch token). */
function idleCursor(position: Position | undefined, onClose: () => void): ChangeCursor<RawChangeBatch> {
  return {
    next: () => Promise.resolve({ changes: [], position }),
    close: () => {
      onClose();
      return Promise.resolve();
    },
  };
}

/** A collection's own raw stream, idle, recording where it was opened. */
export class IdleRawSource implements ChangeSource<RawChangeBatch> {
  readonly opened: StreamStart[] = [];

  open(start: StreamStart): Promise<ChangeCursor<RawChangeBatch>> {
    this.opened.push(start);
    return Promise.resolve(
      idleCursor(start.kind === 'startAt' ? undefined : start.position, () => undefined),
    );
  }

  currentTime() {
    return Promise.resolve({ t: 1_765_000_000, i: 1 });
  }
}

/**
 * A database's shared stream as the registry sees it: `refusal` answers `refused` (or throws `failure`,
 * once); its cursors serve `pulls` in order (all of its cursors together, as one server-side stream), then
 * are idle at the position they reached. Records its probes and opens.
 */
export class FakeSharedStream implements ProbedStreamSource {
  probes = 0;
  readonly opened: { readonly start: StreamStart; readonly collections: readonly string[] }[] = [];
  closed = 0;

  constructor(
    private readonly refused: string | undefined,
    private failure?: Error,
    private readonly pulls: RawChangeBatch[] = [],
  ) {}

  refusal(): Promise<string | undefined> {
    this.probes++;
    const failure = this.failure;
    this.failure = undefined;
    return failure ? Promise.reject(failure) : Promise.resolve(this.refused);
  }

  /** The next opens fail with this (a refusal after the probe, say). */
  openFailure: Error | undefined;

  open(start: StreamStart, collections: readonly string[]): Promise<ChangeCursor<RawChangeBatch>> {
    this.opened.push({ start, collections });
    if (this.openFailure !== undefined) return Promise.reject(this.openFailure);
    let position = start.kind === 'startAt' ? undefined : start.position;
    const idle = idleCursor(position, () => this.closed++);
    return Promise.resolve({
      next: (maxEvents, signal) => {
        const pull = this.pulls.shift();
        if (pull === undefined)
          return position === undefined
            ? idle.next(maxEvents, signal)
            : Promise.resolve({ changes: [], position });
        position = pull.position;
        return Promise.resolve(pull);
      },
      close: () => idle.close(),
    });
  }
}
