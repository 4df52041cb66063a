import { setMaxListeners } from 'node:events';
import { DEFAULT_BACKFILL_PARALLELISM } from '../core/settings.js';
import {
  DEFAULT_CHECKPOINT_SAVE_TIMEOUT_MS,
  DEFAULT_FINAL_FLUSH_TIMEOUT_MS,
  deadlineAfter,
  within,
} from '../core/deadline.js';
import { backfillRecord, type HistoryRecord } from '../core/history-rows.js';
import { estimateBackfill, type BackfillEstimate } from '../core/progress.js';
import {
  SYSTEM_CLOCK,
  type BackfillProgress,
  type BackfillRangeProgress,
  type BackfillCheckpointStore,
  type Clock,
  type IdRange,
  type RawChunk,
  type SnapshotSource,
  type SourceDocument,
} from '../core/ports.js';
import { type RecordSink } from '../core/stream-loop.js';
import { CoalescedTask } from '../core/coalesced.js';
import { Watermark } from '../core/watermark.js';
import { InFlightWindow } from '../core/window.js';
import { encodeId } from '../mongodb/checkpoint-store.js';
import { type Logger } from '../observability/logger.js';
import { type RowMapper } from '../transform/row-mapper.js';

/**
 * Chunks of one range out at once: one being written while the next is read (read-ahead). With the default
 * parallelism that is 8 chunks, and 16 requests in flight (a chunk of 1,000 documents is two requests, sent
 * together): the stream loop's default window.
 */
export const DEFAULT_BACKFILL_CHUNKS_IN_FLIGHT = 2;

/**
 * Abort listeners one chunk in flight may add: its read, its records when `records` makes them (the worker
 * pool's task), and for each of the sink's requests out at once for it (REQUESTS_PER_WRITE, two) a retry
 * wait, the writer's request and the sink's own signal.
 */
const LISTENERS_PER_CHUNK = 9;
/** The copy's own listeners besides its chunks (saves, the deadline). */
const LISTENERS_OF_THE_COPY = 10;

/** How often the backfill logs its progress (copied, estimated, percent, rate, ETA). */
export const DEFAULT_BACKFILL_LOG_INTERVAL_MS = 5_000;

/** What the backfill needs of the schema coordinator: evolution for the chunks it read, the current mapper. */
export interface BackfillSchema {
  readonly mapper: RowMapper;
  evolve(documents: readonly SourceDocument[], signal: AbortSignal): Promise<void>;
}

/**
 * The history records of a chunk read as BSON bytes (SnapshotSource.nextRawChunk), in the chunk's order;
 * `now` is their `time_archived`. It evolves the schema for the documents itself (`schema.evolve` is not
 * called for them) and may decode and map them elsewhere (worker threads). A rejection fails the backfill
 * as a failed write does.
 */
export type BackfillRecords = (
  documents: readonly Uint8Array[],
  now: Date,
  signal: AbortSignal,
) => Promise<readonly HistoryRecord[]>;

export interface BackfillRoleOptions {
  readonly source: SnapshotSource;
  readonly sink: RecordSink;
  readonly checkpoints: BackfillCheckpointStore;
  readonly schema: BackfillSchema;
  /**
   * Makes the records of chunks read raw. When given and the source reads raw (`nextRawChunk`), chunks are
   * read as BSON bytes and their records come from here, made while the range's next chunk is read;
   * otherwise chunks are read decoded, and evolved (`schema.evolve`) and mapped on this thread.
   */
  readonly records?: BackfillRecords;
  readonly log: Logger;
  /** `_id` ranges copied at once; default DEFAULT_BACKFILL_PARALLELISM. */
  readonly parallelism?: number;
  /** Chunks of one range in flight at once; default DEFAULT_BACKFILL_CHUNKS_IN_FLIGHT. */
  readonly chunksInFlight?: number;
  readonly clock?: Clock;
  /** How long writing what was read may go on after `signal` aborts; default DEFAULT_FINAL_FLUSH_TIMEOUT_MS. */
  readonly finalFlushTimeoutMs?: number;
  readonly logIntervalMs?: number;
  /** The copy starts (or resumes) from `progress`, with its estimate of the documents in the collection. */
  readonly onStarted?: (progress: BackfillProgress) => void;
  /** `documents` more were acknowledged by the sink; `shown`: where the copy stands now. */
  readonly onCopied?: (documents: number, shown: BackfillShown) => void;
}

/** Where a copy stands, for status and logs: `copied` counts every acknowledged document, earlier runs too. */
export interface BackfillShown extends BackfillEstimate {
  readonly copied: number;
  readonly estimated: number | undefined;
}

/** Where one range stands: what a checkpoint may say of it (the end of an acknowledged prefix of chunks). */
interface RangeMark {
  readonly lastId: string | undefined;
  readonly copied: number;
  readonly done: boolean;
}

interface RangeCopy {
  readonly range: IdRange;
  readonly start: RangeMark;
  readonly watermark: Watermark<RangeMark>;
}

/** A chunk read: how many documents, the `_id` of the last one (canonical Extended JSON), and its write. */
interface ChunkInHand {
  readonly documents: number;
  readonly lastId: string;
  /** Writes its records to the sink: made already (decoded chunks), or once made (raw chunks). */
  write(signal: AbortSignal): Promise<unknown>;
}

/** Reads the chunk of `range` after `lastId`; undefined when the range is done. */
type ChunkReader = (
  range: IdRange,
  lastId: string | undefined,
  reading: AbortSignal,
  flushing: AbortSignal,
) => Promise<ChunkInHand | undefined>;

/**
 * The backfill role of a mapping run: copies the collection as of `progress.snapshotStart` into the sink,
 * resuming from `progress` (saved by whoever began the backfill: at least its snapshot start). The collection
 * is split into `_id` ranges (once; the split is saved, so a restart resumes every range where it stood),
 * the ranges are copied concurrently, and within a range the next chunk is read while earlier ones are
 * written. Chunks are read decoded, and evolved and mapped here, or, given `records` and a source that reads
 * raw, read as BSON bytes and mapped by `records` (see BackfillRoleOptions). Each range's progress is the
 * end of its acknowledged prefix of chunks (a Watermark), so a chunk acknowledged before an earlier one that
 * fails is never counted as copied. Progress saves go through `saveBackfill` (the stream's position is not
 * touched), one at a time, coalesced.
 *
 * Resolves with the finished progress (saved, `done`). On the first error the reading stops everywhere, what
 * is in flight settles, the progress reached is saved, and that error is thrown. When `signal` aborts, the
 * reading stops at once, the chunks read are still written and their progress saved within the final-flush
 * deadline, and the abort reason is thrown.
 */
export async function runBackfill(
  options: BackfillRoleOptions,
  resume: BackfillProgress,
  signal: AbortSignal,
): Promise<BackfillProgress> {
  return new BackfillCopy(options, resume).run(signal);
}

class BackfillCopy {
  readonly #o: BackfillRoleOptions;
  readonly #clock: Clock;
  readonly #read: ChunkReader;
  #progress: BackfillProgress;
  #copies: RangeCopy[] = [];
  #failure: { readonly error: unknown } | undefined;
  readonly #stopReading = new AbortController();
  /** Acknowledged documents, out of order included (for the progress shown; the checkpoint uses prefixes). */
  #copied = 0;
  #startedAt = 0;
  #copiedAtStart = 0;
  #loggedAt = 0;
  /** Saves the progress one save at a time, the newest progress when the one under way ends. */
  readonly #saver = new CoalescedTask(
    () => this.#save(),
    (error) => {
      this.#fail(error);
    },
  );
  /** Bounds the writes and saves of what was read once a stop came (see DEFAULT_FINAL_FLUSH_TIMEOUT_MS). */
  #flushing: AbortSignal | undefined;

  constructor(options: BackfillRoleOptions, resume: BackfillProgress) {
    this.#o = options;
    this.#clock = options.clock ?? SYSTEM_CLOCK;
    this.#progress = resume;
    const { records, source } = options;
    this.#read =
      records && source.nextRawChunk
        ? this.#rawReader(source.nextRawChunk.bind(source), records)
        : (range, lastId, reading, flushing) => this.#readDecoded(range, lastId, reading, flushing);
  }

  /** Today's chunk: read decoded, then evolved and mapped on this thread before the next read. */
  async #readDecoded(
    range: IdRange,
    lastId: string | undefined,
    reading: AbortSignal,
    flushing: AbortSignal,
  ): Promise<ChunkInHand | undefined> {
    const chunk = await this.#o.source.nextChunk(range, lastId, reading);
    const last = chunk.at(-1);
    if (!last) return undefined;
    // Evolution and writing belong to the chunk in hand: a stop lets them finish (bounded).
    await this.#o.schema.evolve(chunk, flushing);
    const now = new Date(this.#clock.now());
    const mapper = this.#o.schema.mapper;
    const records = chunk.map((doc) => backfillRecord(mapper, doc, this.#progress.snapshotStart, now));
    return {
      documents: chunk.length,
      lastId: encodeId(last._id),
      write: (signal) => this.#o.sink.write(records, signal),
    };
  }

  /**
   * A chunk read as BSON bytes, its records left to `records` (given the final-flush signal: they belong to
   * the chunk in hand) and not awaited here, so the range's next chunk is read while they are made.
   */
  #rawReader(
    nextRawChunk: (range: IdRange, lastId: string | undefined, signal: AbortSignal) => Promise<RawChunk>,
    records: BackfillRecords,
  ): ChunkReader {
    return async (range, lastId, reading, flushing) => {
      const chunk = await nextRawChunk(range, lastId, reading);
      if (chunk.documents.length === 0 || chunk.lastId === undefined) return undefined;
      const now = new Date(this.#clock.now());
      // Called here, in read order; a throw becomes the rejection of the chunk's write, as a failed write's.
      const making = (async () => records(chunk.documents, now, flushing))();
      return {
        documents: chunk.documents.length,
        lastId: chunk.lastId,
        write: (signal) => making.then((made) => this.#o.sink.write(made, signal)),
      };
    };
  }

  async run(signal: AbortSignal): Promise<BackfillProgress> {
    const reading = AbortSignal.any([signal, this.#stopReading.signal]);
    // Armed by a stop or by the first failure: what is in flight then gets this long to settle.
    const flushing = deadlineAfter(reading, this.#o.finalFlushTimeoutMs ?? DEFAULT_FINAL_FLUSH_TIMEOUT_MS);
    this.#flushing = flushing.signal;
    try {
      await this.#prepare(signal);
      // Every chunk out listens to both (the read, the sink's retries, the writer's request): as many as the
      // ranges and their chunks in flight let out.
      const out = this.#copies.length * (this.#o.chunksInFlight ?? DEFAULT_BACKFILL_CHUNKS_IN_FLIGHT);
      setMaxListeners(LISTENERS_PER_CHUNK * out + LISTENERS_OF_THE_COPY, flushing.signal, reading);
      this.#o.onStarted?.(this.#progress);
      await Promise.all(
        this.#copies
          .filter((copy) => !copy.start.done)
          .map((copy) => this.#copyRange(copy, reading, flushing.signal)),
      );
      // Every range settled and asked for a save of where it stands (also after a failure or a stop: the
      // acknowledged prefixes are safe to resume from).
      await this.#saver.settled();
      if (this.#failure) throw this.#failure.error;
      if (flushing.signal.aborted) throw flushing.signal.reason;
      signal.throwIfAborted();
    } catch (error) {
      // The deadline says more than the sink's or the store's reaction to it, but less than a first failure.
      if (flushing.signal.aborted && !this.#failure) throw flushing.signal.reason;
      throw error;
    } finally {
      flushing.dispose();
    }
    const done: BackfillProgress = { ...this.#current(), done: true };
    await this.#o.checkpoints.saveBackfill(done, within(signal, DEFAULT_CHECKPOINT_SAVE_TIMEOUT_MS));
    this.#progress = done;
    this.#o.log.info({ copied: done.copied }, 'backfill done');
    return done;
  }

  /** The ranges: as saved, the previous release's single range, or a new split (saved before any copy). */
  async #prepare(signal: AbortSignal): Promise<void> {
    const saved = this.#progress;
    const estimated = saved.estimated ?? (await this.#o.source.estimatedCount(signal));
    let ranges: readonly BackfillRangeProgress[];
    let fresh = false;
    if (saved.ranges) {
      ranges = saved.ranges;
    } else if (saved.lastId !== undefined || saved.copied > 0) {
      // Begun as one range by the previous release: it goes on as that one range.
      ranges = [
        { after: undefined, upTo: undefined, lastId: saved.lastId, copied: saved.copied, done: false },
      ];
    } else {
      const parts = this.#o.parallelism ?? DEFAULT_BACKFILL_PARALLELISM;
      const split = await this.#o.source.split(parts, signal);
      ranges = split.map((range) => ({ ...range, lastId: undefined, copied: 0, done: false }));
      fresh = true;
    }
    this.#copies = ranges.map((range) => {
      const start: RangeMark = { lastId: range.lastId, copied: range.copied, done: range.done };
      return { range: { after: range.after, upTo: range.upTo }, start, watermark: new Watermark(start) };
    });
    this.#progress = { ...saved, estimated, lastId: undefined, ranges };
    this.#progress = this.#current();
    this.#copiedAtStart = this.#progress.copied;
    this.#copied = this.#progress.copied;
    this.#startedAt = this.#clock.now();
    this.#loggedAt = this.#startedAt;
    // The split must be saved before any range is copied: progress only means something for its ranges.
    if (fresh) {
      await this.#o.checkpoints.saveBackfill(
        this.#progress,
        within(signal, DEFAULT_CHECKPOINT_SAVE_TIMEOUT_MS),
      );
    }
    this.#o.log.info(
      { estimated, ranges: ranges.length, copied: this.#progress.copied },
      fresh ? 'backfill started' : 'resuming the backfill',
    );
  }

  /** Copies one range; never rejects (its first error goes to `#fail`). */
  async #copyRange(copy: RangeCopy, reading: AbortSignal, flushing: AbortSignal): Promise<void> {
    const window = new InFlightWindow({
      maxRequests: this.#o.chunksInFlight ?? DEFAULT_BACKFILL_CHUNKS_IN_FLIGHT,
      maxBytes: Number.MAX_SAFE_INTEGER,
    });
    // The writes out (each removes itself once settled: a range of a billion documents holds a few, not all).
    const writes = new Set<Promise<void>>();
    let mark = copy.start;
    try {
      for (;;) {
        // A slot first: at most `chunksInFlight` chunks of this range are held at once, read or written.
        await window.acquire(0, reading);
        let sent = false;
        try {
          const chunk = await this.#read(copy.range, mark.lastId, reading, flushing);
          if (!chunk) break;
          mark = { lastId: chunk.lastId, copied: mark.copied + chunk.documents, done: false };
          const ticket = copy.watermark.issue(mark);
          const { documents } = chunk;
          const write = chunk
            .write(flushing)
            .then(
              () => {
                copy.watermark.done(ticket);
                this.#acknowledged(documents);
              },
              (error: unknown) => {
                copy.watermark.fail(ticket);
                this.#fail(error);
              },
            )
            .finally(() => {
              window.release(0);
              writes.delete(write);
            });
          writes.add(write);
          sent = true;
        } finally {
          if (!sent) window.release(0);
        }
        if (reading.aborted) break;
      }
      // Done once every chunk before is acknowledged (never, if one failed).
      if (!reading.aborted) copy.watermark.mark({ ...mark, done: true });
    } catch (error) {
      // A stop, or another range's failure, ends the reading: not an error of this range.
      if (!reading.aborted) this.#fail(error);
    }
    await Promise.all([...writes]);
    this.#requestSave();
  }

  #fail(error: unknown): void {
    this.#failure ??= { error };
    this.#stopReading.abort(error);
  }

  #acknowledged(documents: number): void {
    this.#copied += documents;
    const shown = this.#shown();
    this.#o.onCopied?.(documents, shown);
    this.#requestSave();
    this.#logProgress(shown);
  }

  /** The progress as it may be saved: every range at the end of its acknowledged prefix. */
  #current(): BackfillProgress {
    const ranges = this.#copies.map((copy): BackfillRangeProgress => ({
      ...copy.range,
      ...(copy.watermark.position ?? copy.start),
    }));
    return {
      ...this.#progress,
      lastId: undefined,
      ranges,
      copied: ranges.reduce((sum, range) => sum + range.copied, 0),
      done: false,
    };
  }

  #requestSave(): void {
    this.#saver.request();
  }

  async #save(): Promise<void> {
    const progress = this.#current();
    await this.#o.checkpoints.saveBackfill(
      progress,
      within(this.#flushing, DEFAULT_CHECKPOINT_SAVE_TIMEOUT_MS),
    );
  }

  /** Where the copy stands for people: copied, the estimate, percent, this run's rate and the time left. */
  #shown(): BackfillShown {
    const estimated = this.#progress.estimated;
    return {
      copied: this.#copied,
      estimated,
      ...estimateBackfill({
        copied: this.#copied,
        estimated,
        elapsedSeconds: (this.#clock.now() - this.#startedAt) / 1_000,
        copiedAtStart: this.#copiedAtStart,
      }),
    };
  }

  #logProgress(shown: BackfillShown): void {
    const now = this.#clock.now();
    if (now - this.#loggedAt < (this.#o.logIntervalMs ?? DEFAULT_BACKFILL_LOG_INTERVAL_MS)) return;
    this.#loggedAt = now;
    this.#o.log.info(
      {
        copied: shown.copied,
        estimated: shown.estimated,
        percent: shown.percent === undefined ? undefined : Math.round(shown.percent * 10) / 10,
        docsPerSecond: shown.rate === undefined ? undefined : Math.round(shown.rate),
        etaSeconds: shown.etaSeconds,
        // Named as in `status --json`: a copy past its estimate says here how much is left.
        rangesDone: this.#copies.filter((copy) => copy.watermark.position?.done === true).length,
        ranges: this.#copies.length,
      },
      'backfill progress',
    );
  }
}
