import { describe, expect, it } from 'vitest';
import { runBackfill, type BackfillRoleOptions, type BackfillShown } from '../../../src/app/backfill-role.js';
import { type BackfillProgress, type SourceDocument } from '../../../src/core/ports.js';
import { decodeId, encodeId } from '../../../src/mongodb/checkpoint-store.js';
import { createLogger } from '../../../src/observability/logger.js';
import { compileRowMapper } from '../../../src/transform/row-mapper.js';
import { MemoryCheckpointStore } from '../../support/fakes/checkpoint-store.js';
import { HeldSink } from '../../support/fakes/held-sink.js';
import { FakeSnapshotSource, numberedDocuments } from '../../support/fakes/snapshot-source.js';

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

function setup(documents: readonly SourceDocument[], chunkSize: number, auto = true) {
  const source = new FakeSnapshotSource(documents, chunkSize);
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
    // The status hook sees the same: copied over the estimate, this run's rate and the time left.
    expect(shown.at(-1)).toMatchObject({ copied: 100, estimated: 100, percent: 100 });
    expect(shown[0]).toMatchObject({ copied: 10, estimated: 100, percent: 10 });
    expect(shown[0]?.rate).toBeGreaterThan(0);
    expect(shown[0]?.etaSeconds).toBeGreaterThan(0);
  });
});

describe('backfill role, many ranges (issue 11 review)', () => {
  it('issue 11: eight ranges of chunks in flight listen to the signals they are given without a leak warning', async () => {
    const warnings: string[] = [];
    const onWarning = (warning: Error) => warnings.push(warning.name);
    process.on('warning', onWarning);
    try {
      const documents = Array.from({ length: 400 }, (_, i) => ({ _id: i, v: i }));
      const { options } = setup(documents, 10);
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
      const done = await runBackfill({ ...options, sink, parallelism: 8 }, fresh(), never);
      await new Promise((resolve) => setImmediate(resolve));
      expect(done.done).toBe(true);
      expect(written).toBe(400);
      expect(warnings).not.toContain('MaxListenersExceededWarning');
    } finally {
      process.off('warning', onWarning);
    }
  });
});
