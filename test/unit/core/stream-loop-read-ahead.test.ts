import { describe, expect, it } from 'vitest';
import { type ChangeEvent } from '../../../src/core/model.js';
import { type ChangeBatch, type StreamStart } from '../../../src/core/ports.js';
import { type PreparedBatch } from '../../../src/core/prepared.js';
import {
  prepareInThread,
  runPreparedStreamLoop,
  type PreparedStreamLoopOptions,
} from '../../../src/core/stream-loop.js';
import { parseColumnSpecs } from '../../../src/schema/column-spec.js';
import { compileRowMapper } from '../../../src/transform/row-mapper.js';
import { ScriptedChangeSource } from '../../support/fakes/change-cursor.js';
import { MemoryCheckpointStore } from '../../support/fakes/checkpoint-store.js';
import { ManualSink } from '../../support/fakes/sink.js';

const mapper = compileRowMapper(
  parseColumnSpecs([
    { name: '_id', type: 'STRING', mongo_field: '_id', primary_key: true },
    { name: 'v', type: 'INTEGER' },
  ]).columns,
);
const at = (i: number) => ({ t: 1_700_000_000, i });
const token = (i: number) => `tok${String(i).padStart(4, '0')}`;
const upsert = (i: number): ChangeEvent => ({
  kind: 'upsert',
  operationType: 'insert',
  token: token(i),
  clusterTime: at(i),
  documentId: i,
  document: { _id: i, v: i },
});
const pulls = (count: number): ChangeBatch[] =>
  Array.from({ length: count }, (_, k) => ({ events: [upsert(k + 1)], position: undefined }));
const start: StreamStart = { kind: 'startAt', clusterTime: at(0) };
const oneRow = { maxRows: 1, maxBytes: 1_000_000, maxRowBytes: 100_000, lingerMs: 60_000 };
const inThread = prepareInThread({ mapper: () => mapper });

/** Preparations that finish when the test says so (as work on other threads does), in any order. */
class HeldPreparation {
  readonly calls: { batch: ChangeBatch; finish: () => void; fail: (error: Error) => void }[] = [];
  readonly prepare = (batch: ChangeBatch, now: Date, signal: AbortSignal): Promise<PreparedBatch> =>
    new Promise((resolve, reject) => {
      this.calls.push({
        batch,
        finish: () => {
          void inThread(batch, now, signal).then(resolve, reject);
        },
        fail: reject,
      });
      const aborted = () => {
        reject(signal.reason instanceof Error ? signal.reason : new Error('aborted'));
      };
      if (signal.aborted) aborted();
      else signal.addEventListener('abort', aborted, { once: true });
    });
}

const settle = async (rounds = 5): Promise<void> => {
  for (let i = 0; i < rounds; i++) await new Promise((resolve) => setImmediate(resolve));
};

function loopOptions(
  source: ScriptedChangeSource,
  sink: ManualSink,
  prepare: PreparedStreamLoopOptions<ChangeBatch>['prepare'],
  readAhead: number,
): PreparedStreamLoopOptions<ChangeBatch> {
  return {
    source,
    prepare,
    readAhead,
    sink,
    checkpoints: new MemoryCheckpointStore(),
    limits: oneRow,
  };
}

describe('stream loop read-ahead', () => {
  it('without read-ahead, pulls once and waits for that pull to be prepared', async () => {
    const stop = new AbortController();
    const source = new ScriptedChangeSource(pulls(5));
    const held = new HeldPreparation();
    const run = runPreparedStreamLoop(
      loopOptions(
        source,
        new ManualSink((w) => {
          w.ack();
        }),
        held.prepare,
        0,
      ),
      start,
      stop.signal,
    );
    await settle();
    expect(source.pulls).toBe(1);
    expect(held.calls).toHaveLength(1);
    stop.abort();
    await run;
  });

  it('with read-ahead 2, three pulls are prepared at once, and their rows go out in stream order whatever order they finish in', async () => {
    const stop = new AbortController();
    const source = new ScriptedChangeSource(pulls(3));
    const held = new HeldPreparation();
    const sink = new ManualSink((w) => {
      w.ack();
    });
    const checkpoints = new MemoryCheckpointStore();
    const run = runPreparedStreamLoop(
      { ...loopOptions(source, sink, held.prepare, 2), checkpoints },
      start,
      stop.signal,
    );
    await settle();
    expect(held.calls).toHaveLength(3);
    held.calls[2]?.finish();
    held.calls[1]?.finish();
    await settle();
    expect(sink.writes).toHaveLength(0);
    held.calls[0]?.finish();
    await settle(10);
    expect(sink.writes.map((w) => w.records.map((r) => r.eventId))).toEqual(
      [1, 2, 3].map((i): unknown[] => [expect.stringContaining(token(i))]),
    );
    stop.abort();
    await run;
    expect(checkpoints.checkpoint.position?.token).toBe(token(3));
  });

  it('a preparation that fails fails the loop after the batches before it are written and saved, and nothing after it is pulled', async () => {
    const source = new ScriptedChangeSource(pulls(6));
    const held = new HeldPreparation();
    const sink = new ManualSink((w) => {
      w.ack();
    });
    const checkpoints = new MemoryCheckpointStore();
    const run = runPreparedStreamLoop(
      { ...loopOptions(source, sink, held.prepare, 2), checkpoints },
      start,
      new AbortController().signal,
    );
    await settle();
    held.calls[0]?.finish();
    held.calls[1]?.fail(new Error('worker failed'));
    await expect(run).rejects.toThrow('worker failed');
    expect(sink.writes.flatMap((w) => w.records.map((r) => r.eventId))).toEqual([
      expect.stringContaining(token(1)),
    ]);
    expect(checkpoints.checkpoint.position?.token).toBe(token(1));
    // Pulled: the first three (read-ahead) and the one started as the first was taken; no more after.
    expect(source.pulls).toBeLessThanOrEqual(4);
    expect(source.closed).toBe(1);
  });

  it('a failed pull fails the pulls read ahead of it without asking the cursor again', async () => {
    let pullsMade = 0;
    const source = {
      open: () =>
        Promise.resolve({
          next: () => {
            pullsMade++;
            return pullsMade === 1
              ? Promise.resolve<ChangeBatch>({ events: [upsert(1)], position: undefined })
              : Promise.reject(new Error('network'));
          },
          close: () => Promise.resolve(),
        }),
      currentTime: () => Promise.resolve(at(0)),
    };
    const sink = new ManualSink((w) => {
      w.ack();
    });
    const run = runPreparedStreamLoop(
      {
        source,
        prepare: inThread,
        readAhead: 3,
        sink,
        checkpoints: new MemoryCheckpointStore(),
        limits: oneRow,
      },
      start,
      new AbortController().signal,
    );
    await expect(run).rejects.toThrow('network');
    expect(pullsMade).toBe(2);
  });

  it('a stop aborts the pulls read ahead and closes the cursor only after they ended', async () => {
    const stop = new AbortController();
    const source = new ScriptedChangeSource([]);
    const run = runPreparedStreamLoop(
      loopOptions(
        source,
        new ManualSink((w) => {
          w.ack();
        }),
        inThread,
        3,
      ),
      start,
      stop.signal,
    );
    await settle();
    expect(source.pulls).toBe(1);
    stop.abort();
    await run;
    expect(source.closed).toBe(1);
  });
});
