import { describe, expect, it } from 'vitest';
import {
  runBackfill,
  type BackfillRecords,
  type BackfillRoleOptions,
  type BackfillShown,
} from '../../../src/app/backfill-role.js';
import { backfillRecord } from '../../../src/core/history-rows.js';
import { type BackfillProgress, type IdRange, type SourceDocument } from '../../../src/core/ports.js';
import { decodeId, encodeId } from '../../../src/mongodb/checkpoint-store.js';
import { decodeDocument } from '../../../src/mongodb/raw-documents.js';
import { createLogger } from '../../../src/observability/logger.js';
import { compileRowMapper } from '../../../src/transform/row-mapper.js';
import { MemoryCheckpointStore } from '../../support/fakes/checkpoint-store.js';
import { HeldSink } from '../../support/fakes/held-sink.js';
import {
  FakeSnapshotSource,
  numberedDocuments,
  RawFakeSnapshotSource,
} from '../../support/fakes/snapshot-source.js';

const SNAPSHOT = { t: 1_700_000_000, i: 1 };
const fresh = (): BackfillProgress => ({
  snapshotStart: SNAPSHOT,
  lastId: undefined,
  copied: 0,
  done: false,
});
const never = new AbortController().signal;

/** The ids of the acknowledged rows (`_doc_id` is the id as canonical Extended JSON). */
function ackedIds(sink: HeldSink): number[] {
  return sink.acknowledged.map((text) => Number((JSON.parse(text) as { $numberInt: string }).$numberInt));
}

function setup(documents: readonly SourceDocument[], chunkSize: number, auto = true, raw = false) {
  const source = raw
    ? new RawFakeSnapshotSource(documents, chunkSize)
    : new FakeSnapshotSource(documents, chunkSize);
  const sink = new HeldSink(auto);
  source.inFlight = () => sink.inFlight;
  const checkpoints = new MemoryCheckpointStore();
  const evolved: number[] = [];
  const lines: Record<string, unknown>[] = [];
  const options: BackfillRoleOptions = {
    source,
    sink,
    checkpoints,
    schema: {
      mapper: compileRowMapper([]),
      evolve: (docs) => {
        evolved.push(docs.length);
        return Promise.resolve();
      },
    },
    log: createLogger({
      level: 'info',
      destination: { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) },
    }),
    parallelism: 4,
  };
  return { source, sink, checkpoints, evolved, lines, options };
}

/** Every saved range's `lastId` is the end of an acknowledged prefix: ids up to it are all acknowledged. */
function expectPrefixes(
  checkpoints: MemoryCheckpointStore,
  acknowledged: ReadonlySet<string>,
  all: number[],
) {
  for (const progress of checkpoints.progressSaves) {
    for (const range of progress.ranges ?? []) {
      if (range.lastId === undefined) continue;
      const after = range.after === undefined ? -Infinity : (decodeId(range.after) as number);
      const last = decodeId(range.lastId) as number;
      for (const id of all.filter((i) => i > after && i <= last)) {
        expect(acknowledged.has(String(id)), `id ${id} saved as copied in ${range.lastId}`).toBe(true);
      }
    }
  }
}

describe('backfill role (issue 11 Build 3 and 5)', () => {
  it('copies every document exactly once over concurrent ranges, saves the split first and ends done', async () => {
    const { source, sink, checkpoints, evolved, options } = setup(numberedDocuments(1_000), 50);
    const done = await runBackfill(options, fresh(), never);
    expect(source.splits).toEqual([4]);
    expect(ackedIds(sink).sort((a, b) => a - b)).toEqual([...Array(1_000).keys()]);
    expect(new Set(ackedIds(sink)).size).toBe(1_000);
    // Ranges were read concurrently, and the split was saved before any copy.
    expect(source.maxReading).toBeGreaterThan(1);
    expect(checkpoints.progressSaves[0]?.ranges?.map((r) => r.copied)).toEqual([0, 0, 0, 0]);
    expect(done).toMatchObject({ done: true, copied: 1_000, estimated: 1_000 });
    expect(done.ranges?.every((r) => r.done)).toBe(true);
    expect(checkpoints.progress).toEqual(done);
    // Every chunk went through the schema before it was written.
    expect(evolved.reduce((a, b) => a + b, 0)).toBe(1_000);
    expect(checkpoints.maxSaving).toBe(1);
  });

  it('reads the next chunk of a range while the previous one is written, and holds at most 2 per range', async () => {
    const { source, sink, options } = setup(numberedDocuments(100), 10, false);
    const running = runBackfill({ ...options, parallelism: 1 }, fresh(), never);
    // Chunk 1 is out: chunk 2 is read meanwhile and sent; chunk 3 waits for a slot.
    await sink.writesMade(2);
    await new Promise((resolve) => setTimeout(resolve, 10));
    expect(sink.inFlight).toBe(2);
    expect(source.reads).toHaveLength(2);
    expect(source.reads[1]?.writesInFlight).toBe(1);
    while (!sink.writes.every((w) => w.settled) || sink.writes.length < 10) {
      sink.pending.forEach((w) => {
        w.ack();
      });
      await new Promise((resolve) => setTimeout(resolve, 1));
    }
    await running;
    expect(sink.maxInFlight).toBe(2);
    expect(source.reads.some((r) => r.writesInFlight > 0)).toBe(true);
  });

  it('issue 11: a later chunk acknowledged before an earlier one fails never moves the saved progress past the failed chunk', async () => {
    const { sink, checkpoints, options } = setup(numberedDocuments(60), 10, false);
    const running = runBackfill({ ...options, parallelism: 1 }, fresh(), never);
    await sink.writesMade(2);
    const [first, second] = sink.writes;
    second?.ack();
    await new Promise((resolve) => setTimeout(resolve, 5));
    const failure = new Error('BigQuery said no');
    first?.fail(failure);
    // What is still in flight settles (acknowledged here) before the error is thrown.
    await new Promise((resolve) => setTimeout(resolve, 5));
    sink.pending.forEach((w) => {
      w.ack();
    });
    await expect(running).rejects.toBe(failure);
    for (const progress of checkpoints.progressSaves) {
      expect(progress.ranges?.[0]?.lastId).toBeUndefined();
      expect(progress.ranges?.[0]?.copied).toBe(0);
    }
    // Nothing more is read after the failure.
    expect(sink.writes.length).toBeLessThanOrEqual(3);
  });

  it('property: random acknowledgement order and failures only ever save acknowledged prefixes, and a resume copies the rest', async () => {
    for (let trial = 0; trial < 20; trial++) {
      const ids = numberedDocuments(200);
      const { sink, checkpoints, options } = setup(ids, 7, false);
      const failAt = trial % 3 === 0 ? undefined : 3 + Math.floor(Math.random() * 15);
      const running = runBackfill({ ...options, parallelism: 1 + (trial % 5) }, fresh(), never).then(
        () => undefined,
        (error: unknown) => error,
      );
      let answered = 0;
      const state = { ended: false };
      void running.then(() => {
        state.ended = true;
      });
      while (!state.ended) {
        const pending = sink.pending;
        const pick = pending[Math.floor(Math.random() * pending.length)];
        if (pick) {
          answered++;
          if (answered === failAt) pick.fail(new Error(`failure ${answered}`));
          else pick.ack();
        }
        await new Promise((resolve) => setTimeout(resolve, 0));
      }
      const outcome = await running;
      expect(outcome === undefined).toBe(failAt === undefined || answered < failAt);
      const acked = new Set(ackedIds(sink).map(String));
      expectPrefixes(
        checkpoints,
        acked,
        ids.map((d) => d._id as number),
      );
      // A resume from what was saved copies whatever is missing, nothing twice within itself.
      const saved = checkpoints.progress;
      if (!saved) throw new Error('no progress saved');
      const resumed = setup(ids, 7);
      const done = await runBackfill(resumed.options, saved, never);
      expect(done.done).toBe(true);
      const union = new Set([...acked, ...ackedIds(resumed.sink).map(String)]);
      expect(union.size).toBe(200);
      expect(new Set(resumed.sink.acknowledged).size).toBe(resumed.sink.acknowledged.length);
      // The split saved is reused on resume, not made again.
      expect(resumed.source.splits).toEqual([]);
    }
  });

  it("resumes the previous release's one-range form (lastId, no ranges) after its last id", async () => {
    const { sink, source, options } = setup(numberedDocuments(30), 10);
    const done = await runBackfill(
      options,
      { snapshotStart: SNAPSHOT, lastId: encodeId(19), copied: 20, done: false },
      never,
    );
    expect(source.splits).toEqual([]);
    expect(ackedIds(sink)).toEqual([...Array(10).keys()].map((i) => 20 + i));
    expect(done).toMatchObject({ copied: 30, done: true, lastId: undefined });
    expect(done.ranges).toEqual([
      { after: undefined, upTo: undefined, lastId: encodeId(29), copied: 30, done: true },
    ]);
  });

  it('saves are one at a time and coalesced when the store is slower than the acknowledgements', async () => {
    const { sink, checkpoints, options } = setup(numberedDocuments(400), 5);
    checkpoints.saveDelayMs = 15;
    await runBackfill(options, fresh(), never);
    expect(checkpoints.maxSaving).toBe(1);
    expect(sink.writes).toHaveLength(80);
    expect(checkpoints.progressSaves.length).toBeLessThan(40);
    expect(checkpoints.progress?.done).toBe(true);
  });

  it('a stop with chunks in flight writes them, saves their progress and rejects with the stop', async () => {
    const { sink, checkpoints, options } = setup(numberedDocuments(100), 10, false);
    const stop = new AbortController();
    const running = runBackfill({ ...options, parallelism: 2 }, fresh(), stop.signal);
    await sink.writesMade(4);
    const shutdown = new Error('shutdown');
    stop.abort(shutdown);
    await new Promise((resolve) => setTimeout(resolve, 5));
    expect(sink.writes).toHaveLength(4);
    sink.pending.forEach((w) => {
      w.ack();
    });
    await expect(running).rejects.toBe(shutdown);
    const saved = checkpoints.progress;
    expect(saved?.copied).toBe(40);
    expect(saved?.ranges?.map((r) => r.copied)).toEqual([20, 20]);
  });

  it('logs copied, estimated, percent, rate and ETA every interval', async () => {
    const { lines, options } = setup(numberedDocuments(100), 10);
    let now = 0;
    const shown: BackfillShown[] = [];
    await runBackfill(
      {
        ...options,
        parallelism: 1,
        logIntervalMs: 1_000,
        clock: { now: () => (now += 500) },
        onCopied: (_, s) => shown.push(s),
      },
      fresh(),
      never,
    );
    const progress = lines.filter((l) => l.msg === 'backfill progress');
    expect(progress.length).toBeGreaterThan(0);
    expect(progress.at(-1)).toMatchObject({ estimated: 100 });
    expect(Object.keys(progress[0] ?? {})).toEqual(
      expect.arrayContaining(['copied', 'percent', 'docsPerSecond', 'etaSeconds']),
    );
    // issue 13: the ranges done, named as in `status --json` (one range here, done only at the end).
    expect(progress[0]).toMatchObject({ rangesDone: 0, ranges: 1 });
    // The status hook sees the same: copied over the estimate, this run's rate and the time left.
    expect(shown.at(-1)).toMatchObject({ copied: 100, estimated: 100, percent: 100 });
    expect(shown[0]).toMatchObject({ copied: 10, estimated: 100, percent: 10 });
    expect(shown[0]?.rate).toBeGreaterThan(0);
    expect(shown[0]?.etaSeconds).toBeGreaterThan(0);
  });
});

describe('backfill role, many ranges (issue 11 review)', () => {
  it.each([false, true])(
    'issue 11: eight ranges of chunks in flight listen to the signals they are given without a leak warning (raw: %s)',
    async (raw) => {
      const warnings: string[] = [];
      const onWarning = (warning: Error) => warnings.push(warning.name);
      process.on('warning', onWarning);
      try {
        const documents = Array.from({ length: 400 }, (_, i) => ({ _id: i, v: i }));
        const { options } = raw ? rawSetup(documents, 10) : setup(documents, 10);
        let written = 0;
        // Each write listens as BigQuerySink and its writer do (a backoff, a request, a deadline), until it ends.
        const sink: BackfillRoleOptions['sink'] = {
          write: async (records, signal) => {
            const listeners = [0, 1, 2].map(() => () => undefined);
            for (const listener of listeners) signal?.addEventListener('abort', listener);
            await new Promise((resolve) => setTimeout(resolve, 5));
            for (const listener of listeners) signal?.removeEventListener('abort', listener);
            written += records.length;
            return { written: records.length, deadLettered: 0 };
          },
        };
        // Records made elsewhere listen as a worker pool's task does, until they are made.
        const made = options.records;
        const records: BackfillRecords | undefined =
          made &&
          (async (documents, now, signal) => {
            const listener = () => undefined;
            signal.addEventListener('abort', listener);
            await new Promise((resolve) => setTimeout(resolve, 2));
            try {
              return await made(documents, now, signal);
            } finally {
              signal.removeEventListener('abort', listener);
            }
          });
        const done = await runBackfill(
          { ...options, sink, parallelism: 8, ...(records ? { records } : {}) },
          fresh(),
          never,
        );
        await new Promise((resolve) => setImmediate(resolve));
        expect(done.done).toBe(true);
        expect(written).toBe(400);
        expect(warnings).not.toContain('MaxListenersExceededWarning');
      } finally {
        process.off('warning', onWarning);
      }
    },
  );
});

/**
 * A `records` as prepareDocuments will be one, made on this thread: each document decoded from its bytes and
 * mapped with no columns. `calls` holds the ids of each call's documents, in call order; `hold`, when set,
 * is awaited by a call before it maps (its argument: the call's number, from 1).
 */
function recordsOnThisThread() {
  const mapper = compileRowMapper([]);
  const calls: number[][] = [];
  const state: { hold: ((call: number) => Promise<void>) | undefined } = { hold: undefined };
  const records: BackfillRecords = async (documents, now) => {
    const decoded = documents.map((bytes) => decodeDocument(bytes));
    calls.push(decoded.map((document) => document._id as number));
    await state.hold?.(calls.length);
    return decoded.map((document) => backfillRecord(mapper, document, SNAPSHOT, now));
  };
  return { records, calls, state };
}

/** A backfill over a source that reads raw, with `records` made on this thread. */
function rawSetup(documents: readonly SourceDocument[], chunkSize: number, auto = true) {
  const made = setup(documents, chunkSize, auto, true);
  const recorder = recordsOnThisThread();
  return { ...made, ...recorder, options: { ...made.options, records: recorder.records } };
}

/** Whether `id` lies in `range` (bounds are whole numbers as canonical Extended JSON). */
function inRange(range: IdRange, id: number): boolean {
  const after = range.after === undefined ? -Infinity : (decodeId(range.after) as number);
  const upTo = range.upTo === undefined ? Infinity : (decodeId(range.upTo) as number);
  return id > after && id <= upTo;
}

describe('backfill role, chunks read as BSON bytes (issue 11, build 6)', () => {
  it('issue 11: records is called once per chunk, in _id order within each range, and schema.evolve never', async () => {
    const { source, sink, evolved, calls, options } = rawSetup(numberedDocuments(1_000), 50);
    const done = await runBackfill(options, fresh(), never);
    expect(source.reads.every((read) => read.raw)).toBe(true);
    expect(evolved).toEqual([]);
    const ranges = done.ranges ?? [];
    expect(ranges).toHaveLength(4);
    for (const range of ranges) {
      const ofRange = calls.filter((ids) => inRange(range, ids[0] ?? NaN));
      // Each call is one chunk of the range, and the calls follow each other through it in order.
      for (const ids of ofRange) expect(ids.length).toBeLessThanOrEqual(50);
      const ids = ofRange.flat();
      expect(ids.every((id) => inRange(range, id))).toBe(true);
      expect(ids).toEqual([...ids].sort((a, b) => a - b));
      expect(ids).toHaveLength(250);
    }
    expect(ackedIds(sink).sort((a, b) => a - b)).toEqual([...Array(1_000).keys()]);
    expect(done).toMatchObject({ done: true, copied: 1_000, estimated: 1_000 });
  });

  it('issue 11: progress, lastIds and reads are those of the decoded path', async () => {
    const documents = numberedDocuments(300);
    const decoded = setup(documents, 7);
    const raw = rawSetup(documents, 7);
    const copied = { decoded: 0, raw: 0 };
    const doneDecoded = await runBackfill(
      { ...decoded.options, parallelism: 3, onCopied: (n) => (copied.decoded += n) },
      fresh(),
      never,
    );
    const doneRaw = await runBackfill(
      { ...raw.options, parallelism: 3, onCopied: (n) => (copied.raw += n) },
      fresh(),
      never,
    );
    expect(doneRaw).toEqual(doneDecoded);
    expect(raw.checkpoints.progress).toEqual(decoded.checkpoints.progress);
    expect(copied).toEqual({ decoded: 300, raw: 300 });
    // Chunk by chunk, each range is read after the same lastIds.
    const reads = (source: FakeSnapshotSource) =>
      source.reads.map((read) => `${read.range.after ?? ''}/${read.lastId ?? ''}`).sort();
    expect(reads(raw.source)).toEqual(reads(decoded.source));
  });

  it('issue 11 property: random acknowledgement order and failures save only acknowledged prefixes, and a resume copies the rest', async () => {
    for (let trial = 0; trial < 10; trial++) {
      const ids = numberedDocuments(150);
      const { sink, checkpoints, options } = rawSetup(ids, 7, false);
      const failAt = trial % 3 === 0 ? undefined : 3 + Math.floor(Math.random() * 12);
      const state = { ended: false };
      const running = runBackfill({ ...options, parallelism: 1 + (trial % 4) }, fresh(), never).then(
        () => undefined,
        (error: unknown) => error,
      );
      void running.then(() => {
        state.ended = true;
      });
      let answered = 0;
      while (!state.ended) {
        const pick = sink.pending[Math.floor(Math.random() * sink.pending.length)];
        if (pick) {
          answered++;
          if (answered === failAt) pick.fail(new Error(`failure ${answered}`));
          else pick.ack();
        }
        await new Promise((resolve) => setTimeout(resolve, 0));
      }
      const outcome = await running;
      expect(outcome === undefined).toBe(failAt === undefined || answered < failAt);
      const acked = new Set(ackedIds(sink).map(String));
      expectPrefixes(
        checkpoints,
        acked,
        ids.map((d) => d._id as number),
      );
      const saved = checkpoints.progress;
      if (!saved) throw new Error('no progress saved');
      const resumed = rawSetup(ids, 7);
      expect((await runBackfill(resumed.options, saved, never)).done).toBe(true);
      expect(new Set([...acked, ...ackedIds(resumed.sink).map(String)]).size).toBe(150);
    }
  });

  it.each(['rejects', 'throws'] as const)(
    'issue 11: a records call that %s fails the backfill as a failing write does: nothing read after it, progress not past it',
    async (how) => {
      const { sink, checkpoints, source, calls, options } = rawSetup(numberedDocuments(60), 10, false);
      const failure = new Error('the worker pool said no');
      const records: BackfillRecords = (documents, now, signal) => {
        if (calls.length === 1) {
          calls.push([]);
          if (how === 'throws') throw failure;
          return Promise.reject(failure);
        }
        return options.records(documents, now, signal);
      };
      const running = runBackfill({ ...options, records, parallelism: 1 }, fresh(), never);
      await sink.writesMade(1);
      await new Promise((resolve) => setTimeout(resolve, 5));
      // The chunk before the failed one is still written, and its progress saved.
      sink.pending.forEach((w) => {
        w.ack();
      });
      await expect(running).rejects.toBe(failure);
      expect(sink.writes).toHaveLength(1);
      expect(source.reads).toHaveLength(2);
      expect(checkpoints.progress?.ranges).toEqual([
        { after: undefined, upTo: undefined, lastId: encodeId(9), copied: 10, done: false },
      ]);
    },
  );

  it('issue 11: the next chunk of a range is read while the records of the one before are made, at most 2 chunks a range', async () => {
    const { source, sink, calls, state, options } = rawSetup(numberedDocuments(100), 10, false);
    let release = (): void => undefined;
    const held = new Promise<void>((resolve) => {
      release = resolve;
    });
    state.hold = (call) => (call === 1 ? held : Promise.resolve());
    const running = runBackfill({ ...options, parallelism: 1 }, fresh(), never);
    await sink.writesMade(1);
    await new Promise((resolve) => setTimeout(resolve, 10));
    // Chunk 1 is being mapped; chunk 2 was read and mapped meanwhile, and is written; chunk 3 waits.
    expect(calls.map((ids) => ids[0])).toEqual([0, 10]);
    expect(source.reads).toHaveLength(2);
    expect(sink.writes.map((w) => w.records.length)).toEqual([10]);
    expect(ackedIds(sink)).toEqual([]);
    release();
    while (sink.writes.length < 10 || sink.pending.length > 0) {
      sink.pending.forEach((w) => {
        w.ack();
      });
      await new Promise((resolve) => setTimeout(resolve, 1));
    }
    expect(await running).toMatchObject({ done: true, copied: 100 });
    expect(sink.maxInFlight).toBeLessThanOrEqual(2);
  });

  it('issue 11: records given, a source that cannot read raw is read and mapped as before', async () => {
    const { source, sink, evolved, options } = setup(numberedDocuments(200), 20);
    const { records, calls } = recordsOnThisThread();
    const done = await runBackfill({ ...options, records }, fresh(), never);
    expect(calls).toEqual([]);
    expect(source.reads.every((read) => !read.raw)).toBe(true);
    expect(evolved.reduce((a, b) => a + b, 0)).toBe(200);
    expect(ackedIds(sink).sort((a, b) => a - b)).toEqual([...Array(200).keys()]);
    expect(done.done).toBe(true);
  });

  it('issue 11: a stop with raw chunks in flight makes and writes their records, saves their progress and rejects with the stop', async () => {
    const { sink, checkpoints, options } = rawSetup(numberedDocuments(100), 10, false);
    const stop = new AbortController();
    const running = runBackfill({ ...options, parallelism: 2 }, fresh(), stop.signal);
    await sink.writesMade(4);
    const shutdown = new Error('shutdown');
    stop.abort(shutdown);
    await new Promise((resolve) => setTimeout(resolve, 5));
    expect(sink.writes).toHaveLength(4);
    sink.pending.forEach((w) => {
      w.ack();
    });
    await expect(running).rejects.toBe(shutdown);
    expect(checkpoints.progress?.ranges?.map((r) => r.copied)).toEqual([20, 20]);
  });
});
