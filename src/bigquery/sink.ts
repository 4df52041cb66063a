import { performance } from 'node:perf_hooks';
import { BigQueryError, errorMessage } from '../errors.js';
import {
  abortableSleep,
  backoffDelay,
  DEFAULT_BACKOFF,
  DEFAULT_SCHEMA_BACKOFF,
  retry,
  type BackoffPolicy,
} from '../core/backoff.js';
import { DEFAULT_BATCH_LIMITS, splitIntoBatches, type BatchLimits, type Sized } from '../core/batcher.js';
import { abortable } from '../core/deadline.js';
import { type HistoryRecord } from '../core/history-rows.js';
import { classifyBigQueryError } from './error-mapping.js';
import { type EncodedRow, type HistoryRow, type OutgoingRow, type TableWriter } from './writer.js';

/**
 * One row for the history table, with the source document for the dead-letter table should BigQuery refuse
 * it: a HistoryRecord, encoded (by `encoded`'s writer) when it was batched or else by the sink.
 */
export type SinkRecord = HistoryRecord;

/** A record on its way: encoded for the writer. */
type Encoded = HistoryRecord & { readonly encoded: EncodedRow };

export interface SinkResult {
  readonly written: number;
  readonly deadLettered: number;
  /** Why rows were dead-lettered, for `lastFailure` and logs (at most a few, deduplicated). */
  readonly reasons: readonly string[];
}

/** What the sink reports as BigQuery acknowledges rows, for metrics (the app layer adapts it). */
export interface SinkObserver {
  /**
   * BigQuery acknowledged one batch (a request's worth of rows, halves included when some were refused):
   * `rows` of it are in the history table, `bytes` their size as sent; it took `seconds`, retries included.
   */
  batchWritten(rows: number, bytes: number, seconds: number): void;
  /** `rows` went to the dead-letter table instead of the history table. */
  deadLettered(rows: number): void;
}

export interface BigQuerySinkOptions {
  readonly mappingId: string;
  readonly writer: TableWriter;
  /** Writer on `<table>_errors`. */
  readonly deadLetterWriter: TableWriter;
  /**
   * Called when BigQuery says the rows carry a column the table lacks: patch the table, call the writer's
   * updateSchema. The batch is then retried at once, and with `schemaBackoff` for as long as BigQuery keeps
   * refusing it for its schema (a new column reaches writes only after a delay). At most one call runs at a
   * time: batches written concurrently that fail for their schema meanwhile share it, and a batch sent before
   * a repair that has completed since retries without calling it again.
   */
  readonly onSchemaMismatch?: (reason: string) => Promise<void>;
  readonly limits?: BatchLimits;
  readonly backoff?: BackoffPolicy;
  /** How long rows refused for their schema wait after the repair (default DEFAULT_SCHEMA_BACKOFF). */
  readonly schemaBackoff?: BackoffPolicy;
  /**
   * Encodes a row not encoded at batching (default: the writer's `encode`); the destination encodes with
   * the writer current at the time.
   */
  readonly encode?: (row: HistoryRow) => EncodedRow;
  readonly onRetry?: (error: unknown, attempt: number, delayMs: number) => void;
  readonly observer?: SinkObserver;
  readonly now?: () => Date;
}

interface SendState {
  /** Rows in the history table, and their bytes. */
  written: number;
  bytes: number;
  readonly dead: { record: HistoryRecord; reason: string }[];
}

/**
 * A dead-letter row, as sent (its JSON in UTF-8, escaping included), is at most this large: its document is
 * cut to fit. The document is escaped twice on the way (as Extended JSON text, then as a string in the row),
 * so its character count says little about the row's size.
 */
export const MAX_DEAD_LETTER_ROW_BYTES = 1_000_000;
const MAX_REASONS = 5;
/**
 * Requests of one write out at once. A backfill chunk of 1,000 small documents is two requests, sent
 * together; a chunk of large documents (ten requests of 5 MB) is sent two at a time, so that what one write
 * holds on the wire and in memory stays bounded.
 */
export const REQUESTS_PER_WRITE = 2;

/**
 * Writes history rows: splits them into requests under BigQuery's limits, retries transient failures with
 * backoff (same rows, same `_event_id`s), patches the schema once on a missing column and then waits for
 * BigQuery to show it, isolates rows refused on their own merits and writes them to the dead-letter table
 * with their reason. Resolves only when every row is either in the
 * history table or in the dead-letter table; anything else rejects, so the caller never checkpoints past a
 * row that went nowhere.
 *
 * Several `write` calls may run at once (the stream loop keeps a window of batches in flight, and a backfill
 * may write through the same sink): each call keeps its own retries, halving and dead letters; only the
 * schema repair is shared (see `onSchemaMismatch`).
 */
export class BigQuerySink {
  readonly #o: BigQuerySinkOptions;
  readonly #limits: BatchLimits;
  /** Repairs completed so far: a batch sent at an older count was refused by a schema repaired since. */
  #schemaGeneration = 0;
  /** The repair under way, which every batch refused for its schema meanwhile waits for instead of repeating. */
  #repair: Promise<void> | undefined;

  constructor(options: BigQuerySinkOptions) {
    this.#o = options;
    this.#limits = options.limits ?? DEFAULT_BATCH_LIMITS;
  }

  async write(records: readonly SinkRecord[], signal?: AbortSignal): Promise<SinkResult> {
    const encode = this.#o.encode ?? ((row: HistoryRow) => this.#o.writer.encode(row));
    // The request limit is checked here only, on the sizes the rows were encoded at.
    const sized = records.map((record): Sized<Encoded> => {
      const item: Encoded =
        record.encoded === undefined
          ? {
              eventId: record.eventId,
              docId: record.docId,
              row: () => record.row(),
              document: () => record.document(),
              encoded: encode(record.row()),
            }
          : (record as Encoded);
      return { item, bytes: item.encoded.size };
    });
    const { batches, oversized } = splitIntoBatches(sized, this.#limits);
    const state: SendState = { written: 0, bytes: 0, dead: [] };
    for (const entry of oversized) {
      state.dead.push({
        record: entry.item,
        reason: `row of ${entry.bytes} bytes exceeds the ${this.#limits.maxRowBytes}-byte limit of a BigQuery request`,
      });
    }
    // The requests of one write (a backfill chunk is several) go out up to REQUESTS_PER_WRITE at a time:
    // BigQuery answers each on its own. The first failure stops the others (their retries and waits end at
    // once: the rows are sent again from the checkpoint anyway) and is the write's, once they have settled.
    const halt = new AbortController();
    const own = signal ? AbortSignal.any([signal, halt.signal]) : halt.signal;
    let failure: { readonly error: unknown } | undefined;
    let next = 0;
    const sender = async (): Promise<void> => {
      for (let batch = batches[next++]; batch !== undefined && !failure; batch = batches[next++]) {
        const started = performance.now();
        const tally: SendState = { written: 0, bytes: 0, dead: [] };
        try {
          await this.#send(batch, tally, own);
        } catch (error) {
          failure ??= { error };
          halt.abort(error);
          return;
        }
        this.#o.observer?.batchWritten(tally.written, tally.bytes, (performance.now() - started) / 1_000);
        state.written += tally.written;
        state.bytes += tally.bytes;
        state.dead.push(...tally.dead);
      }
    };
    await Promise.all(Array.from({ length: Math.min(REQUESTS_PER_WRITE, batches.length) }, sender));
    if (failure) throw failure.error;
    if (state.dead.length > 0) {
      await this.#deadLetter(state.dead, signal);
      this.#o.observer?.deadLettered(state.dead.length);
    }
    return {
      written: state.written,
      deadLettered: state.dead.length,
      reasons: [...new Set(state.dead.map((d) => d.reason))].slice(0, MAX_REASONS),
    };
  }

  async #append(rows: readonly OutgoingRow[], writer: TableWriter, signal?: AbortSignal) {
    return retry(
      () => writer.append(rows, signal),
      (error) => classifyBigQueryError(error) === 'retryable',
      {
        policy: this.#o.backoff ?? DEFAULT_BACKOFF,
        ...(signal && { signal }),
        ...(this.#o.onRetry && { onRetry: this.#o.onRetry }),
      },
    );
  }

  /**
   * Sends one batch until every row is in the history table or, refused on its own merits, in `state.dead`.
   * A `schema` failure (a column the table lacks, or one BigQuery does not show to writes yet) never
   * dead-letters: the schema is repaired once, then the same rows wait with backoff for BigQuery to catch up.
   */
  async #send(
    batch: readonly Sized<Encoded>[],
    state: SendState,
    signal?: AbortSignal,
    repaired = false,
  ): Promise<void> {
    let pending = batch;
    let schemaFailures = 0;
    let schemaRepaired = repaired;
    for (;;) {
      let outcome;
      const sentAt = this.#schemaGeneration;
      try {
        outcome = await this.#append(
          pending.map((e) => e.item),
          this.#o.writer,
          signal,
        );
      } catch (error) {
        const failure = classifyBigQueryError(error);
        if (failure === 'schema') {
          await this.#awaitSchema(error, schemaFailures++, schemaRepaired, sentAt, signal);
          schemaRepaired = true;
          continue;
        }
        if (failure !== 'poison') throw error;
        // The request as a whole was refused for its rows: halve it until the refused rows stand alone.
        if (pending.length > 1) {
          const middle = Math.ceil(pending.length / 2);
          await this.#send(pending.slice(0, middle), state, signal, schemaRepaired);
          await this.#send(pending.slice(middle), state, signal, schemaRepaired);
          return;
        }
        const [only] = pending;
        if (only) state.dead.push({ record: only.item, reason: errorMessage(error) });
        return;
      }
      const refused = new Map(outcome.rejected.map((r) => [r.index, r.reason]));
      const waiting: Sized<Encoded>[] = [];
      let waitReason: string | undefined;
      for (const [index, entry] of pending.entries()) {
        const reason = refused.get(index);
        if (reason === undefined) {
          state.written++;
          state.bytes += entry.bytes;
        } else if (classifyBigQueryError({ message: reason }) === 'schema') {
          waiting.push(entry);
          waitReason ??= reason;
        } else {
          state.dead.push({ record: entry.item, reason });
        }
      }
      if (waiting.length === 0) return;
      await this.#awaitSchema(
        new BigQueryError('schema', waitReason ?? 'schema mismatch'),
        schemaFailures++,
        schemaRepaired,
        sentAt,
        signal,
      );
      schemaRepaired = true;
      pending = waiting;
    }
  }

  /**
   * After the `failures`-th schema failure of a batch (0-based), sent at schema generation `sentAt`: the
   * first one repairs the schema (add what the table lacks, rebuild the writer) and retries at once; later
   * ones mean BigQuery has not propagated the table's new columns to writes yet (minutes, per Google), so
   * wait with backoff; when the wait is used up, fail as retryable so that the mapping restarts from its
   * checkpoint rather than lose the rows.
   */
  async #awaitSchema(
    error: unknown,
    failures: number,
    repaired: boolean,
    sentAt: number,
    signal?: AbortSignal,
  ): Promise<void> {
    if (failures === 0 && !repaired && this.#o.onSchemaMismatch) {
      await this.#repairSchema(this.#o.onSchemaMismatch, errorMessage(error), sentAt, signal);
      return;
    }
    const policy = this.#o.schemaBackoff ?? DEFAULT_SCHEMA_BACKOFF;
    if (failures >= policy.maxAttempts) {
      throw new BigQueryError(
        'retryable',
        `BigQuery still refuses the rows for their schema after the table's schema was repaired and ` +
          `${failures} retries: ${errorMessage(error)} (a new column reaches BigQuery's streaming writes only ` +
          `after a delay; nothing was dead-lettered, the write is retried from the checkpoint)`,
        { cause: error },
      );
    }
    const delay = backoffDelay(Math.max(0, failures - 1), policy);
    this.#o.onRetry?.(error, failures, delay);
    await abortableSleep(delay, signal);
  }

  /**
   * One repair for every batch refused for its schema at about the same time: the one under way is joined;
   * a batch sent before a repair that completed since needs none (the writer has the repaired schema), so
   * it retries at once. A failed repair fails every batch that waited for it.
   */
  async #repairSchema(
    repair: (reason: string) => Promise<void>,
    reason: string,
    sentAt: number,
    signal: AbortSignal | undefined,
  ): Promise<void> {
    if (this.#repair === undefined) {
      if (sentAt < this.#schemaGeneration) return;
      const running = repair(reason)
        .then(() => {
          this.#schemaGeneration++;
        })
        .finally(() => {
          this.#repair = undefined;
        });
      this.#repair = running;
    }
    // A caller that stops waiting leaves the repair running for the others.
    await abortable(this.#repair, signal);
  }

  async #deadLetter(
    dead: readonly { record: HistoryRecord; reason: string }[],
    signal?: AbortSignal,
  ): Promise<void> {
    const failedAt = (this.#o.now ?? (() => new Date()))().toISOString();
    const writer = this.#o.deadLetterWriter;
    const sizeOf = (row: DeadLetterRow) => writer.encode(row).size;
    // A row within this fits a request of its own under the same limits as the history writes.
    const budget = Math.min(MAX_DEAD_LETTER_ROW_BYTES, this.#limits.maxBytes, this.#limits.maxRowBytes);
    const rows = dead.map(({ record, reason }) =>
      fitDeadLetterRow(
        {
          mapping_id: this.#o.mappingId,
          event_id: record.eventId,
          _doc_id: record.docId,
          reason,
          document: record.document(),
          failed_at: failedAt,
        },
        budget,
        sizeOf,
      ),
    );
    const { batches, oversized } = splitIntoBatches(rows, this.#limits);
    const [tooLarge] = oversized;
    if (tooLarge) {
      // Only the ids are left uncut; they are never this large. Stop rather than drop the row.
      throw new BigQueryError(
        'fatal',
        `a dead-letter row of ${tooLarge.bytes} bytes (event ${tooLarge.item.event_id}) cannot be cut to fit a request`,
      );
    }
    for (const batch of batches) {
      // The dead-letter writer dedups on `event_id`, the same key as the history table.
      const outcome = await this.#append(
        batch.map(({ item }) => ({ encoded: writer.encode(item), row: () => item })),
        writer,
        signal,
      );
      if (outcome.rejected.length > 0) {
        // Never let a row vanish: if even the dead-letter table refuses it, stop and say so.
        throw new BigQueryError(
          'fatal',
          `the dead-letter table refused ${outcome.rejected.length} row(s): ${outcome.rejected[0]?.reason ?? ''}`,
        );
      }
    }
  }
}

/** A row of `<table>_errors` (a type literal, so that it is a HistoryRow for the writer). */
type DeadLetterRow = Readonly<{
  mapping_id: string;
  event_id: string;
  _doc_id: string | null;
  reason: string;
  document: string;
  failed_at: string;
}>;

/**
 * The row, with its text cut until it is at most `budget` bytes as `sizeOf` measures it: the document first
 * (kept as `{"truncated":true,"length":...,"head":...}`), then, should that not be enough, the reason and
 * the document id. Each keeps the longest head that fits.
 */
function fitDeadLetterRow(
  row: DeadLetterRow,
  budget: number,
  sizeOf: (row: DeadLetterRow) => number,
): Sized<DeadLetterRow> {
  let fitted: Sized<DeadLetterRow> = { item: row, bytes: sizeOf(row) };
  const cuts: readonly {
    text: string;
    escapings: number;
    cut: (base: DeadLetterRow, head: number) => DeadLetterRow;
  }[] = [
    {
      text: row.document,
      escapings: 2,
      cut: (base, head) => ({
        ...base,
        document: JSON.stringify({
          truncated: true,
          length: row.document.length,
          head: prefix(row.document, head),
        }),
      }),
    },
    {
      text: row.reason,
      escapings: 1,
      cut: (base, head) => ({ ...base, reason: `${prefix(row.reason, head)}… (cut)` }),
    },
    {
      text: row._doc_id ?? '',
      escapings: 1,
      cut: (base, head) => ({ ...base, _doc_id: row._doc_id === null ? null : prefix(row._doc_id, head) }),
    },
  ];
  for (const { text, escapings, cut } of cuts) {
    if (fitted.bytes <= budget) break;
    const base = fitted.item;
    const measured = (head: number): Sized<DeadLetterRow> => {
      const item = cut(base, head);
      return { item, bytes: sizeOf(item) };
    };
    const empty = measured(0);
    fitted = empty;
    if (empty.bytes >= budget) continue;
    // First guess: the head whose JSON escaping (done `escapings` times) fills the room left. It is exact for
    // the JSON rows insertAll sends; a writer measuring otherwise gets the bisection below.
    const guess = prefixWithin(text, budget - empty.bytes, escapings);
    const guessed = measured(guess);
    if (guessed.bytes <= budget) {
      fitted = guessed;
      continue;
    }
    let low = 1;
    let high = guess - 1;
    while (low <= high) {
      const middle = Math.floor((low + high) / 2);
      const candidate = measured(middle);
      if (candidate.bytes <= budget) {
        fitted = candidate;
        low = middle + 1;
      } else {
        high = middle - 1;
      }
    }
  }
  return fitted;
}

/**
 * How many UTF-16 units of `text`, from its start, take at most `room` bytes once escaped as a JSON string
 * `escapings` times (1 or 2) and encoded in UTF-8.
 */
function prefixWithin(text: string, room: number, escapings: number): number {
  let used = 0;
  let i = 0;
  while (i < text.length) {
    const unit = text.charCodeAt(i);
    const next = text.charCodeAt(i + 1);
    const pair = unit >= 0xd800 && unit <= 0xdbff && next >= 0xdc00 && next <= 0xdfff;
    const cost = pair ? 4 : escapedBytes(unit, escapings);
    if (used + cost > room) break;
    used += cost;
    i += pair ? 2 : 1;
  }
  return i;
}

/** Bytes of one UTF-16 unit (not part of a surrogate pair) escaped as JSON once or twice, in UTF-8. */
function escapedBytes(unit: number, escapings: number): number {
  const twice = escapings > 1;
  // `"` and `\` become `\"` / `\\`, then `\\\"` / `\\\\`.
  if (unit === 0x22 || unit === 0x5c) return twice ? 4 : 2;
  // \b \f \n \r \t: a two-character escape, whose backslash doubles the second time.
  if (unit === 0x08 || unit === 0x0c || unit === 0x0a || unit === 0x0d || unit === 0x09) return twice ? 3 : 2;
  // Other control characters and lone surrogates: `\u00XX`, then `\\u00XX`.
  if (unit < 0x20 || (unit >= 0xd800 && unit <= 0xdfff)) return twice ? 7 : 6;
  if (unit < 0x80) return 1;
  return unit < 0x800 ? 2 : 3;
}

/** The first `length` UTF-16 units of `text`, without splitting a surrogate pair. */
function prefix(text: string, length: number): string {
  const last = text.charCodeAt(length - 1);
  const end = length > 0 && last >= 0xd800 && last <= 0xdbff ? length - 1 : length;
  return text.slice(0, end);
}
