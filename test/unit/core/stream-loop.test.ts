import { describe, expect, it } from 'vitest';
import { type HistoryRecord } from '../../../src/core/history-rows.js';
import { type ChangeEvent, type Position } from '../../../src/core/model.js';
import {
  type ChangeBatch,
  type ChangeCursor,
  type ChangeSource,
  type Checkpoint,
  type CheckpointStore,
  type StreamStart,
} from '../../../src/core/ports.js';
import {
  resumeFrom,
  runStreamLoop,
  type RecordSink,
  type StreamObserver,
} from '../../../src/core/stream-loop.js';
import { parseColumnSpecs } from '../../../src/schema/column-spec.js';
import { compileRowMapper } from '../../../src/transform/row-mapper.js';

const mapper = compileRowMapper(
  parseColumnSpecs([
    { name: '_id', type: 'STRING', mongo_field: '_id', primary_key: true },
    { name: 'v', type: 'INTEGER' },
  ]).columns,
);

const at = (i: number) => ({ t: 1_700_000_000, i });
const token = (i: number) => `tok${String(i).padStart(4, '0')}`;
const upsert = (i: number, id: number, op: 'insert' | 'update' | 'replace' = 'insert'): ChangeEvent => ({
  kind: 'upsert',
  operationType: op,
  token: token(i),
  clusterTime: at(i),
  documentId: id,
  document: { _id: id, v: i },
});

/** A scripted source: each `next` returns the next batch; when the script ends it aborts the run. */
class ScriptedSource implements ChangeSource {
  readonly opened: StreamStart[] = [];
  closed = 0;
  constructor(
    private readonly batches: ChangeBatch[],
    private readonly stop: AbortController,
  ) {}
  open(start: StreamStart): Promise<ChangeCursor> {
    this.opened.push(start);
    return Promise.resolve({
      next: () => {
        const batch = this.batches.shift();
        if (!batch) {
          this.stop.abort();
          return Promise.reject(new Error('aborted'));
        }
        return Promise.resolve(batch);
      },
      close: () => {
        this.closed++;
        return Promise.resolve();
      },
    });
  }
  currentTime(): Promise<{ t: number; i: number }> {
    return Promise.resolve(at(0));
  }
}

class RecordingSink implements RecordSink {
  readonly writes: HistoryRecord[][] = [];
  constructor(private readonly before: (call: number) => Promise<void> = () => Promise.resolve()) {}
  async write(records: readonly HistoryRecord[]) {
    await this.before(this.writes.length + 1);
    this.writes.push([...records]);
    return { written: records.length, deadLettered: 0 };
  }
}

class RecordingCheckpoints implements CheckpointStore {
  readonly saved: Checkpoint[] = [];
  load(): Promise<Checkpoint> {
    return Promise.resolve({ position: undefined });
  }
  save(checkpoint: Checkpoint): Promise<void> {
    this.saved.push(checkpoint);
    return Promise.resolve();
  }
}

const start: StreamStart = { kind: 'startAt', clusterTime: at(0) };
const limits = { maxRows: 100, maxBytes: 1_000_000, maxRowBytes: 100_000, lingerMs: 60_000 };
const positions = (c: RecordingCheckpoints) => c.saved.map((s) => s.position?.token);

/** Records what the loop reports: events read by operation type, and lookup misses. */
class RecordingObserver implements StreamObserver {
  readonly events = new Map<string, number>();
  readonly calls: number[] = [];
  lookupMisses = 0;
  eventsRead(operation: string, count: number): void {
    this.events.set(operation, (this.events.get(operation) ?? 0) + count);
    this.calls.push(count);
  }
  lookupMissed(): void {
    this.lookupMisses++;
  }
}

describe('stream loop', () => {
  it('issue 11: hands the sink each row encoded once, as the batch holds it, with its ids, not the row object', async () => {
    const stop = new AbortController();
    const source = new ScriptedSource(
      [
        { events: [upsert(1, 1), upsert(2, 2)], position: undefined },
        { events: [], position: undefined },
      ],
      stop,
    );
    const sink = new RecordingSink();
    const encoded: { size: number; eventId: unknown }[] = [];
    const encode = (row: Readonly<Record<string, unknown>>) => {
      const entry = { size: 10, eventId: row._event_id };
      encoded.push(entry);
      return entry;
    };
    await runStreamLoop(
      { source, sink, checkpoints: new RecordingCheckpoints(), mapper: () => mapper, limits, encode },
      start,
      stop.signal,
    );
    const records = sink.writes.flat();
    expect(encoded.map((e) => e.eventId)).toEqual(['tok0001', 'tok0002']);
    expect(records.map((r) => r.encoded)).toEqual(encoded);
    expect(records.map((r) => r.encoded === encoded[records.indexOf(r)])).toEqual([true, true]);
    expect(records.map((r) => [r.eventId, r.docId])).toEqual([
      ['tok0001', '{"$numberInt":"1"}'],
      ['tok0002', '{"$numberInt":"2"}'],
    ]);
    // The record keeps no row: none of its own values is a row object.
    for (const record of records) {
      expect(Object.values(record).some((v) => typeof v === 'object' && v !== null && '_event_id' in v)).toBe(
        false,
      );
    }
    // Built again on demand, the row is the one that was encoded.
    expect(records[1]?.row()._event_id).toBe('tok0002');
  });

  it('writes rows, then saves the position of the last written change; never the reverse', async () => {
    const stop = new AbortController();
    const order: string[] = [];
    const source = new ScriptedSource(
      [
        { events: [upsert(1, 1), upsert(2, 2)], position: undefined },
        { events: [], position: undefined },
      ],
      stop,
    );
    const sink = new RecordingSink(() => {
      order.push('sink');
      return Promise.resolve();
    });
    const checkpoints = new RecordingCheckpoints();
    const save = checkpoints.save.bind(checkpoints);
    checkpoints.save = (c) => {
      order.push('checkpoint');
      return save(c);
    };
    await runStreamLoop({ source, sink, checkpoints, mapper: () => mapper, limits }, start, stop.signal);
    expect(order).toEqual(['sink', 'checkpoint']);
    expect(sink.writes.flat().map((r) => [r.row().operationType, r.row()._id, r.row()._seq])).toEqual([
      ['insert', '{"$numberInt":"1"}', '6553f1000000000' + '1tok0001'],
      ['insert', '{"$numberInt":"2"}', '6553f1000000000' + '2tok0002'],
    ]);
    expect(positions(checkpoints)).toEqual(['tok0002']);
    expect(source.closed).toBe(1);
  });

  it('advances the checkpoint of an idle stream to the post-batch position without writing', async () => {
    const stop = new AbortController();
    const idle: Position = { token: 'tok0009', clusterTime: at(9) };
    const source = new ScriptedSource([{ events: [], position: idle }], stop);
    const sink = new RecordingSink();
    const checkpoints = new RecordingCheckpoints();
    await runStreamLoop({ source, sink, checkpoints, mapper: () => mapper, limits }, start, stop.signal);
    expect(sink.writes).toEqual([]);
    expect(positions(checkpoints)).toEqual(['tok0009']);
  });

  it('issue 10 item 13 (review finding 3): never saves the token of an event put together from fragments; the batch position, or nothing', async () => {
    const stop = new AbortController();
    // An event over 16 MB arrives in fragments; its token is the last fragment's, which MongoDB resumes
    // from only while the event splits the same way.
    const split = (i: number): ChangeEvent => ({ ...upsert(i, i, 'update'), split: true });
    const source = new ScriptedSource(
      [
        // First stream after a backfill: the source knows no position before the split event.
        { events: [split(2)], position: undefined },
        // The source's position is the whole change before the split one.
        { events: [upsert(3, 3), split(4)], position: { token: token(3), clusterTime: at(3) } },
        { events: [upsert(5, 5)], position: undefined },
      ],
      stop,
    );
    const sink = new RecordingSink();
    const checkpoints = new RecordingCheckpoints();
    await runStreamLoop(
      { source, sink, checkpoints, mapper: () => mapper, limits: { ...limits, maxRows: 1 } },
      start,
      stop.signal,
    );
    // Batches leave as they fill (one row each here); the one with the split event covers up to tok0003.
    expect(sink.writes.map((w) => w.map((r) => r.row()._event_id))).toEqual([
      ['tok0002'],
      ['tok0003'],
      ['tok0004'],
      ['tok0005'],
    ]);
    expect(positions(checkpoints)).toEqual(['tok0003', 'tok0005']);
  });

  it('skips an update whose document is gone, counts it, and still moves past it', async () => {
    const stop = new AbortController();
    const missed: ChangeEvent = {
      kind: 'lookup-missed',
      operationType: 'update',
      token: token(2),
      clusterTime: at(2),
      documentId: 7,
    };
    const del: ChangeEvent = { kind: 'delete', token: token(3), clusterTime: at(3), documentId: 7 };
    const source = new ScriptedSource(
      [
        { events: [upsert(1, 7), missed, del], position: undefined },
        { events: [], position: undefined },
      ],
      stop,
    );
    const sink = new RecordingSink();
    const checkpoints = new RecordingCheckpoints();
    const observer = new RecordingObserver();
    await runStreamLoop(
      { source, sink, checkpoints, mapper: () => mapper, limits, observer },
      start,
      stop.signal,
    );
    expect(sink.writes.flat().map((r) => r.row().operationType)).toEqual(['insert', 'delete']);
    expect(sink.writes.flat()[1]?.row()).toMatchObject({
      _id: '{"$numberInt":"7"}',
      _doc_id: '{"$numberInt":"7"}',
      v: null,
    });
    expect(Object.fromEntries(observer.events)).toEqual({ insert: 1, update: 1, delete: 1 });
    expect(observer.lookupMisses).toBe(1);
    expect(positions(checkpoints)).toEqual(['tok0003']);
  });

  it('reports the events it read by MongoDB operation type, once per pull, up to a drop that ends the stream', async () => {
    const stop = new AbortController();
    const ops: ChangeEvent[] = [
      upsert(1, 1),
      upsert(2, 2),
      upsert(3, 1, 'update'),
      upsert(4, 2, 'replace'),
      { kind: 'delete', token: token(5), clusterTime: at(5), documentId: 1 },
      { kind: 'ignored', operationType: 'createIndexes', token: token(6), clusterTime: at(6) },
    ];
    const drop: ChangeEvent = {
      kind: 'collection-gone',
      operationType: 'drop',
      token: token(8),
      clusterTime: at(8),
    };
    const source = new ScriptedSource(
      [
        { events: ops, position: undefined },
        // The insert after the drop is read again by the stream that continues after it.
        { events: [upsert(7, 3), drop, upsert(9, 4)], position: undefined },
      ],
      stop,
    );
    const observer = new RecordingObserver();
    await runStreamLoop(
      {
        source,
        sink: new RecordingSink(),
        checkpoints: new RecordingCheckpoints(),
        mapper: () => mapper,
        limits,
        observer,
      },
      start,
      stop.signal,
    );
    expect(Object.fromEntries(observer.events)).toEqual({
      insert: 3,
      update: 1,
      replace: 1,
      delete: 1,
      createIndexes: 1,
      drop: 1,
    });
    // One report per operation type and pull: the hot path does not pay a metric update per event.
    expect(observer.calls).toEqual([2, 1, 1, 1, 1, 1, 1]);
    expect(observer.lookupMisses).toBe(0);
  });

  it('writes a drop marker and ends with the position to continue from with startAfter', async () => {
    const stop = new AbortController();
    const drop: ChangeEvent = {
      kind: 'collection-gone',
      operationType: 'drop',
      token: token(2),
      clusterTime: at(2),
    };
    const source = new ScriptedSource(
      [{ events: [upsert(1, 1), drop, upsert(3, 3)], position: undefined }],
      stop,
    );
    const sink = new RecordingSink();
    const checkpoints = new RecordingCheckpoints();
    const end = await runStreamLoop(
      { source, sink, checkpoints, mapper: () => mapper, limits },
      start,
      stop.signal,
    );
    expect(end).toEqual({ kind: 'collection-gone', position: { token: 'tok0002', clusterTime: at(2) } });
    expect(sink.writes.flat().map((r) => [r.row().operationType, r.row()._doc_id])).toEqual([
      ['insert', '{"$numberInt":"1"}'],
      ['drop', null],
    ]);
    expect(positions(checkpoints)).toEqual(['tok0002']);
  });

  it('writes no marker for an invalidate that replays the very token it resumed from (mongo-java-server after a drop)', async () => {
    const stop = new AbortController();
    const resumedAt: Position = { token: token(7), clusterTime: at(7) };
    const replayed: ChangeEvent = {
      kind: 'collection-gone',
      operationType: 'invalidate',
      token: token(7),
      clusterTime: at(7),
    };
    const source = new ScriptedSource([{ events: [replayed], position: undefined }], stop);
    const sink = new RecordingSink();
    const checkpoints = new RecordingCheckpoints();
    const end = await runStreamLoop(
      { source, sink, checkpoints, mapper: () => mapper, limits },
      { kind: 'resumeAfter', position: resumedAt },
      stop.signal,
    );
    expect(end).toEqual({ kind: 'collection-gone', position: { ...resumedAt, invalidate: true } });
    expect(sink.writes.flat()).toEqual([]);
    expect(positions(checkpoints)).toEqual([]);
  });

  it('writes a marker for each new drop and invalidate of real MongoDB, after the position it resumed from', async () => {
    // Real MongoDB: `drop` then `invalidate`, one cluster time, distinct tokens. Resuming after the drop
    // yields the invalidate, which is new: its marker shares the drop's cluster time, so nothing re-created
    // later is hidden.
    const stop = new AbortController();
    const invalidate: ChangeEvent = {
      kind: 'collection-gone',
      operationType: 'invalidate',
      token: token(9),
      clusterTime: at(8),
    };
    const source = new ScriptedSource([{ events: [invalidate], position: undefined }], stop);
    const sink = new RecordingSink();
    const end = await runStreamLoop(
      { source, sink, checkpoints: new RecordingCheckpoints(), mapper: () => mapper, limits },
      { kind: 'startAfter', position: { token: token(8), clusterTime: at(8) } },
      stop.signal,
    );
    expect(end).toEqual({
      kind: 'collection-gone',
      position: { token: token(9), clusterTime: at(8), invalidate: true },
    });
    expect(sink.writes.flat().map((r) => [r.row().operationType, r.row()._doc_id])).toEqual([['drop', null]]);
  });

  it('issue 10 item 14: a checkpoint saved on an invalidate remembers it, so a restart continues with startAfter', async () => {
    const stop = new AbortController();
    const invalidate: ChangeEvent = {
      kind: 'collection-gone',
      operationType: 'invalidate',
      token: token(9),
      clusterTime: at(8),
    };
    const source = new ScriptedSource([{ events: [invalidate], position: undefined }], stop);
    const checkpoints = new RecordingCheckpoints();
    await runStreamLoop(
      { source, sink: new RecordingSink(), checkpoints, mapper: () => mapper, limits },
      { kind: 'startAfter', position: { token: token(8), clusterTime: at(8) } },
      stop.signal,
    );
    const saved = checkpoints.saved.at(-1)?.position;
    expect(saved).toEqual({ token: token(9), clusterTime: at(8), invalidate: true });
    // The restart (MongoDB refuses resumeAfter an invalidate: InvalidResumeToken 260).
    expect(saved && resumeFrom(saved)).toEqual({ kind: 'startAfter', position: saved });
    // A database stream's position (issue 12) is resumed at its cluster time: another stream may not hold
    // its change (ChangeStreamFatalError 280); an invalidate stays startAfter.
    const shared = { token: token(7), clusterTime: at(7), shared: true as const };
    expect(resumeFrom(shared)).toEqual({ kind: 'startAt', clusterTime: at(7) });
    expect(resumeFrom({ ...shared, invalidate: true })).toEqual({
      kind: 'startAfter',
      position: { ...shared, invalidate: true },
    });

    // Idle after continuing from it: the post-batch position is the invalidate's own token, still one.
    const idle = new AbortController();
    const after = new RecordingCheckpoints();
    const restart = saved ? resumeFrom(saved) : start;
    await runStreamLoop(
      {
        source: new ScriptedSource([{ events: [], position: { token: token(9), clusterTime: at(8) } }], idle),
        sink: new RecordingSink(),
        checkpoints: after,
        mapper: () => mapper,
        limits,
      },
      restart,
      idle.signal,
    );
    expect(after.saved).toEqual([]);
    // A later ordinary position is an ordinary resume.
    expect(resumeFrom({ token: token(10), clusterTime: at(10) })).toMatchObject({ kind: 'resumeAfter' });
  });

  it('does not save a checkpoint when the sink fails', async () => {
    const stop = new AbortController();
    const source = new ScriptedSource(
      [
        { events: [upsert(1, 1)], position: undefined },
        { events: [], position: undefined },
      ],
      stop,
    );
    const sink = new RecordingSink(() => Promise.reject(new Error('BigQuery down')));
    const checkpoints = new RecordingCheckpoints();
    await expect(
      runStreamLoop({ source, sink, checkpoints, mapper: () => mapper, limits }, start, stop.signal),
    ).rejects.toThrow('BigQuery down');
    expect(checkpoints.saved).toEqual([]);
    expect(source.closed).toBe(1);
  });

  it('batches across pulls until a limit is reached, and flushes what it read when stopped', async () => {
    const stop = new AbortController();
    const source = new ScriptedSource(
      [
        { events: [upsert(1, 1)], position: undefined },
        { events: [upsert(2, 2)], position: undefined },
        { events: [upsert(3, 3)], position: undefined },
      ],
      stop,
    );
    const sink = new RecordingSink();
    const checkpoints = new RecordingCheckpoints();
    await runStreamLoop(
      { source, sink, checkpoints, mapper: () => mapper, limits: { ...limits, maxRows: 2 } },
      start,
      stop.signal,
    );
    expect(sink.writes.map((w) => w.length)).toEqual([2, 1]);
    expect(positions(checkpoints)).toEqual(['tok0002', 'tok0003']);
  });

  describe('issue 10 item 17: a graceful stop flushes with its own bounded deadline', () => {
    /**
     * Honours its signal as BigQuerySink and the writers do: refuses to start once it is aborted, and gives
     * up a request under way when it aborts.
     */
    class SignalSink implements RecordSink {
      readonly writes: HistoryRecord[][] = [];
      readonly reasons: unknown[] = [];
      constructor(
        private readonly takesMs: number,
        private readonly during: (call: number) => void = () => undefined,
      ) {}
      async write(records: readonly HistoryRecord[], signal?: AbortSignal) {
        signal?.throwIfAborted();
        this.during(this.writes.length + this.reasons.length + 1);
        try {
          await delay(this.takesMs, signal);
        } catch (error) {
          this.reasons.push(error);
          throw error;
        }
        this.writes.push([...records]);
        return { written: records.length, deadLettered: 0 };
      }
    }

    class SignalCheckpoints extends RecordingCheckpoints {
      override save(checkpoint: Checkpoint, signal?: AbortSignal): Promise<void> {
        signal?.throwIfAborted();
        return super.save(checkpoint);
      }
    }

    function delay(ms: number, signal?: AbortSignal): Promise<void> {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(resolve, ms);
        signal?.addEventListener(
          'abort',
          () => {
            clearTimeout(timer);
            reject(signal.reason as Error);
          },
          { once: true },
        );
      });
    }

    it('writes the rows read in the last linger window and saves their position after the stop', async () => {
      const stop = new AbortController();
      // Within the linger time and under every limit: nothing is written until the stop.
      const source = new ScriptedSource(
        [{ events: [upsert(1, 1), upsert(2, 2)], position: undefined }],
        stop,
      );
      const sink = new SignalSink(5);
      const checkpoints = new SignalCheckpoints();
      await runStreamLoop({ source, sink, checkpoints, mapper: () => mapper, limits }, start, stop.signal);
      expect(sink.writes.map((w) => w.map((r) => r.row()._event_id))).toEqual([['tok0001', 'tok0002']]);
      expect(positions(checkpoints)).toEqual(['tok0002']);
    });

    it('lets a write under way when the stop comes finish, and saves its position', async () => {
      const stop = new AbortController();
      const source = new ScriptedSource(
        [{ events: [upsert(1, 1), upsert(2, 2)], position: undefined }],
        stop,
      );
      // The stop arrives 5 ms into a 30 ms write.
      const sink = new SignalSink(30, () => {
        setTimeout(() => {
          stop.abort();
        }, 5);
      });
      const checkpoints = new SignalCheckpoints();
      await runStreamLoop(
        { source, sink, checkpoints, mapper: () => mapper, limits: { ...limits, maxRows: 2 } },
        start,
        stop.signal,
      );
      expect(sink.reasons).toEqual([]);
      expect(sink.writes.map((w) => w.length)).toEqual([2]);
      expect(positions(checkpoints)).toEqual(['tok0002']);
    });

    it('still flushes what was read before when the stop comes while the schema evolves', async () => {
      const stop = new AbortController();
      const source = new ScriptedSource(
        [
          { events: [upsert(1, 1)], position: undefined },
          { events: [upsert(2, 2)], position: undefined },
        ],
        stop,
      );
      const sink = new SignalSink(5);
      const checkpoints = new SignalCheckpoints();
      let evolutions = 0;
      const beforeMap = (_events: readonly ChangeEvent[], signal: AbortSignal): Promise<void> => {
        evolutions++;
        if (evolutions === 2) stop.abort();
        signal.throwIfAborted();
        return Promise.resolve();
      };
      await runStreamLoop(
        { source, sink, checkpoints, mapper: () => mapper, limits, beforeMap },
        start,
        stop.signal,
      );
      // The second batch was not mapped: its position is not saved, so the next owner reads it.
      expect(sink.writes.map((w) => w.map((r) => r.row()._event_id))).toEqual([['tok0001']]);
      expect(positions(checkpoints)).toEqual(['tok0001']);
    });

    it('gives up a flush that outlasts its deadline, and saves no position for rows not acknowledged', async () => {
      const stop = new AbortController();
      const source = new ScriptedSource([{ events: [upsert(1, 1)], position: undefined }], stop);
      const sink = new SignalSink(60_000);
      const checkpoints = new SignalCheckpoints();
      const started = Date.now();
      await expect(
        runStreamLoop(
          { source, sink, checkpoints, mapper: () => mapper, limits, finalFlushTimeoutMs: 50 },
          start,
          stop.signal,
        ),
      ).rejects.toThrow(/did not finish within 50 ms/);
      expect(Date.now() - started).toBeLessThan(5_000);
      expect(sink.writes).toEqual([]);
      expect(checkpoints.saved).toEqual([]);
      expect(source.closed).toBe(1);
    });
  });
});
