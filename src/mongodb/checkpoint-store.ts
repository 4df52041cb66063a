import { randomUUID } from 'node:crypto';
import { deserialize, EJSON, serialize } from 'bson';
import { Timestamp, type Collection, type Document } from 'mongodb';
import { type ClusterTime, type Position } from '../core/model.js';
import {
  type BackfillProgress,
  type BackfillCheckpointStore,
  type BackfillRangeProgress,
  type Checkpoint,
  type IdRange,
} from '../core/ports.js';
import { REPAIR_REASONS, type RepairReason, type RepairRequest } from '../core/verify-model.js';
import { FencedOutError } from '../errors.js';
import { BSON_DECODE_OPTIONS, isDocument } from '../base/bson-kind.js';
import { within } from '../core/deadline.js';
import { DEFAULT_MONGO_OPERATION_TIMEOUT_MS, withSignal } from './bounded.js';
import { codeOf, MONGO_CODES, mongoBoundary } from './error-mapping.js';
import { toClusterTime } from './change-event.js';
import { fencedSet, fencedUpdate, tokenValue } from './fence.js';

const DUPLICATE_KEY = MONGO_CODES.DuplicateKey;

function timestamp(time: ClusterTime): Timestamp {
  return new Timestamp({ t: time.t, i: time.i });
}

function readBackfill(value: unknown): BackfillProgress | undefined {
  if (!isDocument(value) || value.snapshotStart === undefined) return undefined;
  const ranges = Array.isArray(value.ranges) ? value.ranges.flatMap(readRange) : undefined;
  return {
    snapshotStart: toClusterTime(value.snapshotStart),
    lastId: typeof value.lastId === 'string' ? value.lastId : undefined,
    copied: typeof value.copied === 'number' ? value.copied : 0,
    done: value.done === true,
    ...(ranges && { ranges }),
    ...(typeof value.estimated === 'number' && { estimated: value.estimated }),
  };
}

function optionalString(value: unknown): string | undefined {
  return typeof value === 'string' ? value : undefined;
}

function readRange(value: unknown): BackfillRangeProgress[] {
  if (!isDocument(value)) return [];
  return [
    {
      after: optionalString(value.after),
      upTo: optionalString(value.upTo),
      lastId: optionalString(value.lastId),
      copied: typeof value.copied === 'number' ? value.copied : 0,
      done: value.done === true,
    },
  ];
}

function writeBackfill(backfill: BackfillProgress): Document {
  return {
    snapshotStart: timestamp(backfill.snapshotStart),
    lastId: backfill.lastId ?? null,
    copied: backfill.copied,
    done: backfill.done,
    ...(backfill.ranges && {
      ranges: backfill.ranges.map((range) => ({
        after: range.after ?? null,
        upTo: range.upTo ?? null,
        lastId: range.lastId ?? null,
        copied: range.copied,
        done: range.done,
      })),
    }),
    ...(backfill.estimated !== undefined && { estimated: backfill.estimated }),
  };
}

function readPosition(value: unknown): Position | undefined {
  if (!isDocument(value) || typeof value.token !== 'string' || value.clusterTime === undefined) {
    return undefined;
  }
  return {
    token: value.token,
    clusterTime: toClusterTime(value.clusterTime),
    ...(value.invalidate === true && { invalidate: true as const }),
    ...(value.shared === true && { shared: true as const }),
  };
}

function writePosition(position: Position): Document {
  return {
    token: position.token,
    clusterTime: timestamp(position.clusterTime),
    ...(position.invalidate && { invalidate: true }),
    ...(position.shared && { shared: true }),
  };
}

function readDate(value: unknown): Date | undefined {
  return value instanceof Date && !Number.isNaN(value.getTime()) ? value : undefined;
}

/** The later of two optional dates. */
function latest(a: Date | undefined, b: Date | undefined): Date | undefined {
  if (!a) return b;
  if (!b) return a;
  return a.getTime() >= b.getTime() ? a : b;
}

/** A document `_id` as it is kept in a checkpoint: canonical Extended JSON, exact for every BSON type. */
export function encodeId(id: unknown): string {
  return EJSON.stringify({ id }, { relaxed: false });
}

/** Back to the value the driver would hand over for that id (numbers promoted as usual). */
export function decodeId(text: string): unknown {
  const parsed = EJSON.parse(text, { relaxed: false }) as Document;
  return deserialize(serialize(parsed), BSON_DECODE_OPTIONS).id as unknown;
}

/** The collection of checkpoints next to a settings collection (like its `_leases`). */
export function checkpointsCollectionName(settingsCollection: string): string {
  return `${settingsCollection}_checkpoints`;
}

/**
 * Asks for a resync of the mapping whose settings document has `_id` `settingsId`, where no edit of the
 * settings document can take the request back: the mapping honours the latest request it has not served yet.
 */
export async function recordResyncRequest(
  checkpoints: Collection,
  settingsId: unknown,
  at: Date,
): Promise<void> {
  // Unfenced: it never touches the position, and `$max` keeps the latest request whoever writes last.
  await checkpoints.updateOne(
    { _id: settingsId } as Document,
    { $max: { resyncRequestedAt: at } },
    { upsert: true },
  );
}

/**
 * Asks for a repair of some `_id` ranges of the mapping whose settings document has `_id` `settingsId`, kept
 * in its checkpoint document where no edit of the settings document can take it back: the request stays
 * there until a repair that served it removes it by the random id returned (not by its time: two requests
 * of the same millisecond, one recorded after the repair began, are told apart).
 */
export async function recordRepairRequest(
  checkpoints: Collection,
  settingsId: unknown,
  request: Omit<RepairRequest, 'id'>,
): Promise<string> {
  const id = randomUUID();
  // Unfenced like a resync request: it never touches the position, and `$push` loses no concurrent request.
  await checkpoints.updateOne(
    { _id: settingsId } as Document,
    {
      $push: {
        repairRequests: {
          id,
          ranges: request.ranges.map(writeIdRange),
          reason: request.reason,
          requestedAt: request.requestedAt,
        },
      },
    } as Document,
    { upsert: true },
  );
  return id;
}

/** What a verification found, as `status` shows it (the checkpoint's `lastVerification`). */
export interface VerificationRecord {
  readonly finishedAt: Date;
  readonly rangesChecked: number;
  readonly rangesDiffering: number;
  readonly missing: number;
  readonly extra: number;
  readonly differing: number;
  readonly bytesScanned: number;
}

/**
 * Keeps what the last verification of a mapping found with its checkpoint, for `status` and for the
 * background verifier's interval across restarts. Unfenced: it is a report, never read as progress.
 */
export async function recordVerification(
  checkpoints: Collection,
  settingsId: unknown,
  record: VerificationRecord,
): Promise<void> {
  await checkpoints.updateOne(
    { _id: settingsId } as Document,
    { $set: { lastVerification: { ...record } } },
    { upsert: true },
  );
}

/** A repair under way: what it serves, its snapshot start, its copy and its delete pass (see runRepair). */
export interface RepairProgress {
  /** The newest request it serves. */
  readonly through: Date;
  /**
   * The id of every request it serves, removed when it is done: by identity, not by time, so a request
   * recorded meanwhile (in the same millisecond, or earlier by another host's clock) is not taken for served.
   */
  readonly requests: readonly string[];
  readonly reason: RepairReason;
  /**
   * The ranges as requested, which the delete passes run over: the copy's may end at the greatest `_id`
   * (beginRepair), while the view may hold ids past it that MongoDB does not have.
   */
  readonly ranges: readonly IdRange[];
  /** The copy of the requested ranges; its `snapshotStart` is the `_seq` of every row the repair writes. */
  readonly backfill: BackfillProgress;
  /** Per range of `backfill.ranges` (same order): its delete pass is done. */
  readonly deletesDone: readonly boolean[];
  /** Delete rows written so far. */
  readonly deletes: number;
}

/** What a finished repair wrote (kept as the checkpoint's `lastRepair`, shown by `status`). */
export interface RepairResult {
  readonly through: Date;
  readonly reason: RepairReason;
  readonly finishedAt: Date;
  readonly ranges: number;
  /** Current documents written as backfill rows. */
  readonly documents: number;
  /** Delete rows written for ids the view had and MongoDB no longer has. */
  readonly deletes: number;
}

/** The repair state of a mapping's checkpoint document. */
export interface RepairState {
  /** Requests not served yet (a repair under way serves those in its `requests`), oldest first. */
  readonly pending: readonly RepairRequest[];
  readonly progress: RepairProgress | undefined;
  readonly last: RepairResult | undefined;
  /** The newest request a finished repair served. */
  readonly servedAt: Date | undefined;
  /**
   * With `on_history_lost: repair`: when the stream's history was lost and restarted at the current time;
   * the whole collection is owed a verification (and its differing ranges a repair) until it is cleared.
   */
  readonly historyLostAt: Date | undefined;
}

function writeIdRange(range: IdRange): Document {
  return { after: range.after ?? null, upTo: range.upTo ?? null };
}

function readIdRange(value: unknown): IdRange[] {
  if (!isDocument(value)) return [];
  return [{ after: optionalString(value.after), upTo: optionalString(value.upTo) }];
}

function readReason(value: unknown): RepairReason {
  return REPAIR_REASONS.find((r) => r === value) ?? 'verify';
}

function readRepairRequest(value: unknown): RepairRequest[] {
  if (!isDocument(value)) return [];
  const requestedAt = readDate(value.requestedAt);
  const id = optionalString(value.id);
  if (!requestedAt || id === undefined || !Array.isArray(value.ranges)) return [];
  return [{ id, ranges: value.ranges.flatMap(readIdRange), reason: readReason(value.reason), requestedAt }];
}

function readRepairProgress(value: unknown): RepairProgress | undefined {
  if (!isDocument(value)) return undefined;
  const through = readDate(value.through);
  const backfill = readBackfill(value.backfill);
  if (!through || !backfill) return undefined;
  const done = Array.isArray(value.deletesDone) ? value.deletesDone.map((d) => d === true) : [];
  const requests = Array.isArray(value.requests)
    ? value.requests.filter((id): id is string => typeof id === 'string')
    : [];
  // A progress saved before `ranges` was kept: its delete passes run over the copy's ranges.
  const ranges = Array.isArray(value.ranges)
    ? value.ranges.flatMap(readIdRange)
    : (backfill.ranges ?? []).map((range) => ({ after: range.after, upTo: range.upTo }));
  return {
    through,
    requests,
    reason: readReason(value.reason),
    ranges,
    backfill,
    deletesDone: done,
    deletes: typeof value.deletes === 'number' ? value.deletes : 0,
  };
}

function readRepairResult(value: unknown): RepairResult | undefined {
  if (!isDocument(value)) return undefined;
  const through = readDate(value.through);
  const finishedAt = readDate(value.finishedAt);
  if (!through || !finishedAt) return undefined;
  const count = (v: unknown): number => (typeof v === 'number' ? v : 0);
  return {
    through,
    reason: readReason(value.reason),
    finishedAt,
    ranges: count(value.ranges),
    documents: count(value.documents),
    deletes: count(value.deletes),
  };
}

/** The repair state kept in a checkpoint document (`null`: none yet). */
export function readRepairState(doc: Document | null): RepairState {
  const servedAt = readDate(doc?.repairServedAt);
  const requests = Array.isArray(doc?.repairRequests) ? doc.repairRequests.flatMap(readRepairRequest) : [];
  return {
    // A served request is removed: whatever is left is owed.
    pending: [...requests].sort((a, b) => a.requestedAt.getTime() - b.requestedAt.getTime()),
    progress: readRepairProgress(doc?.repair),
    last: readRepairResult(doc?.lastRepair),
    servedAt,
    historyLostAt: readDate(doc?.historyLostAt),
  };
}

/** What one mapping's checkpoint document holds (see MongoCheckpointStore). */
interface StoredState {
  readonly scope: string | undefined;
  readonly position: Position | undefined;
  readonly backfill: BackfillProgress | undefined;
  /** The current checkpoint began with a resync request: its backfill is owed whatever the settings say. */
  readonly resync: boolean;
  /** The latest resync request known (from `resync`, or copied from the settings document). */
  readonly resyncRequestedAt: Date | undefined;
  /** The latest request already served: a request up to this time starts nothing. */
  readonly resyncServedAt: Date | undefined;
}

function readState(doc: Document | null): StoredState {
  return {
    scope: typeof doc?.scope === 'string' ? doc.scope : undefined,
    position: readPosition(doc?.position),
    backfill: readBackfill(doc?.backfill),
    resync: doc?.resync === true,
    resyncRequestedAt: readDate(doc?.resyncRequestedAt),
    resyncServedAt: readDate(doc?.resyncServedAt),
  };
}

/**
 * The saved stream position of the mapping whose settings document has `_id` `settingsId`, read without any
 * write (`load` may clear a checkpoint of another scope): what `verify` waits on to pass a time it read at.
 */
export async function readSavedPosition(
  checkpoints: Collection,
  settingsId: unknown,
  stop: AbortSignal,
): Promise<Position | undefined> {
  return mongoBoundary(async () => {
    stop.throwIfAborted();
    const signal = within(stop, DEFAULT_MONGO_OPERATION_TIMEOUT_MS);
    const doc = await checkpoints.findOne({ _id: settingsId } as Document, {
      projection: { position: 1 },
      signal,
    });
    return readPosition(doc?.position);
  });
}

export interface MongoCheckpointStoreOptions {
  /** The checkpoints collection (see checkpointsCollectionName). */
  readonly checkpoints: Collection;
  /** The settings collection: it still receives `lastChangeId`, and held the previous release's checkpoints. */
  readonly settings: Collection;
  /** The settings document's `_id` as stored: the checkpoint document's `_id`. */
  readonly settingsId: unknown;
  /**
   * What the checkpoint is about (source collection and target table): a checkpoint of another scope (the
   * settings now point elsewhere) is cleared, so the new target starts afresh.
   */
  readonly scope: string;
  /** `resync_requested_at` of the settings document (ISO 8601), if any. */
  readonly resyncRequestedAt?: string | undefined;
  /** The fencing token of this instance's lease on the mapping (see LeaseStore); undefined without leases. */
  readonly fence?: number;
}

/**
 * Keeps a mapping's checkpoint in a collection of its own, one document per mapping (`_id` = the settings
 * document's `_id`): scope, position, backfill progress, resync state and fencing token. Editing the settings
 * document, even replacing it wholesale, cannot erase any of them. The settings document still receives
 * `lastChangeId` (the resume token, as the original service kept it) and `status.lastCheckpointAt` with
 * every save but an idle one (no rows written since the save before); these are copies, never read back.
 *
 * Every write carries the owner's fencing token and is refused (FencedOutError) once a newer owner wrote:
 * a paused instance cannot move the checkpoint back. A checkpoint of another scope, or older than a resync
 * request not yet served, is cleared in one write as it is loaded, so nothing of it leaks into the new one.
 */
export class MongoCheckpointStore implements BackfillCheckpointStore {
  readonly #o: MongoCheckpointStoreOptions;

  constructor(options: MongoCheckpointStoreOptions) {
    this.#o = options;
  }

  load(stop: AbortSignal): Promise<Checkpoint> {
    return mongoBoundary(() => this.#load(stop));
  }

  async #load(stop: AbortSignal): Promise<Checkpoint> {
    stop.throwIfAborted();
    const signal = within(stop, DEFAULT_MONGO_OPERATION_TIMEOUT_MS);
    const stored = readState(
      await this.#o.checkpoints.findOne({ _id: this.#o.settingsId } as Document, { signal }),
    );
    const state = stored.scope === undefined ? await this.#upgrade(stored, signal) : stored;
    const settingsRequest =
      this.#o.resyncRequestedAt === undefined ? undefined : new Date(this.#o.resyncRequestedAt);
    const requested = latest(state.resyncRequestedAt, settingsRequest);
    const pending =
      requested !== undefined &&
      (state.resyncServedAt === undefined || requested.getTime() > state.resyncServedAt.getTime());
    if (state.scope === this.#o.scope && !pending) {
      return {
        position: state.position,
        ...(state.backfill && { backfill: state.backfill }),
        ...(state.resync && { resync: true }),
      };
    }
    // A new scope, or a resync: start afresh, clearing the old position and backfill in the same write.
    const max: Document = {};
    if (requested) max.resyncRequestedAt = requested;
    if (pending) max.resyncServedAt = requested;
    await this.#write(
      {
        $set: { scope: this.#o.scope, resync: pending },
        // A repair under way belonged to the old target or is made moot by the resync's full copy; so are the
        // repairs asked for and a verification owed after a lost history (left, they would verify and repair
        // mid-copy). A first load (no scope yet) keeps requests recorded before it.
        $unset: {
          position: '',
          backfill: '',
          repair: '',
          ...((pending || state.scope !== undefined) && { repairRequests: '', historyLostAt: '' }),
        },
        ...(Object.keys(max).length > 0 && { $max: max }),
      },
      signal,
    );
    await this.#copyToSettings(undefined, signal);
    return { position: undefined, ...(pending && { resync: true }) };
  }

  /**
   * A checkpoint with backfill progress is the whole checkpoint (position included: undefined clears it),
   * so a new backfill never inherits the position of what came before; one without moves the position only.
   * An `idle` one is written here only, not copied into the settings document.
   */
  save(checkpoint: Checkpoint, stop: AbortSignal): Promise<void> {
    return mongoBoundary(() => this.#save(checkpoint, stop));
  }

  async #save(checkpoint: Checkpoint, stop: AbortSignal): Promise<void> {
    stop.throwIfAborted();
    const signal = within(stop, DEFAULT_MONGO_OPERATION_TIMEOUT_MS);
    const { position, backfill } = checkpoint;
    if (backfill) {
      await this.#write(
        {
          $set: { backfill: writeBackfill(backfill), ...(position && { position: writePosition(position) }) },
          ...(!position && { $unset: { position: '' } }),
        },
        signal,
      );
      await this.#copyToSettings(position, signal);
    } else if (position) {
      await this.#write({ $set: { position: writePosition(position) } }, signal);
      // The settings document is watched: a copy on every idle save would wake every reader of it, and
      // its `lastChangeId` is the position saved with the last rows written.
      if (!checkpoint.idle) await this.#copyToSettings(position, signal);
    }
  }

  /** Only the backfill's progress: the position the stream saves concurrently is left alone. */
  saveBackfill(progress: BackfillProgress, stop: AbortSignal): Promise<void> {
    return mongoBoundary(() => this.#saveBackfill(progress, stop));
  }

  async #saveBackfill(progress: BackfillProgress, stop: AbortSignal): Promise<void> {
    stop.throwIfAborted();
    const signal = within(stop, DEFAULT_MONGO_OPERATION_TIMEOUT_MS);
    await this.#write({ $set: { backfill: writeBackfill(progress) } }, signal);
    await this.#copyToSettings('unchanged', signal);
  }

  /** The repair requests not served yet, the repair under way and the last one finished. */
  loadRepair(stop: AbortSignal): Promise<RepairState> {
    return mongoBoundary(async () => {
      stop.throwIfAborted();
      const signal = within(stop, DEFAULT_MONGO_OPERATION_TIMEOUT_MS);
      const doc = await this.#o.checkpoints.findOne({ _id: this.#o.settingsId } as Document, {
        projection: { repairRequests: 1, repair: 1, lastRepair: 1, repairServedAt: 1, historyLostAt: 1 },
        signal,
      });
      return readRepairState(doc);
    });
  }

  /** Records a repair request of this mapping (see recordRepairRequest); returns its id. */
  requestRepair(request: Omit<RepairRequest, 'id'>, stop: AbortSignal): Promise<string> {
    return mongoBoundary(async () => {
      stop.throwIfAborted();
      return recordRepairRequest(this.#o.checkpoints, this.#o.settingsId, request);
    });
  }

  /**
   * The stream's history was lost at `at` and the stream restarts at the current time (`on_history_lost:
   * repair`): saved before the new position, so that the verification it owes survives a restart.
   */
  markHistoryLost(at: Date, stop: AbortSignal): Promise<void> {
    return mongoBoundary(async () => {
      stop.throwIfAborted();
      const signal = within(stop, DEFAULT_MONGO_OPERATION_TIMEOUT_MS);
      await this.#write({ $max: { historyLostAt: at } }, signal);
    });
  }

  /** The verification owed since the history lost at `at` recorded its repair request. */
  historyLostVerified(at: Date, stop: AbortSignal): Promise<void> {
    return mongoBoundary(async () => {
      stop.throwIfAborted();
      const signal = within(stop, DEFAULT_MONGO_OPERATION_TIMEOUT_MS);
      // Only that loss: a newer one (a later restart lost its history again) still owes its verification.
      const { checkpoints, settingsId } = this.#o;
      await checkpoints.updateOne(
        { _id: settingsId, historyLostAt: { $lte: at } } as Document,
        { $unset: { historyLostAt: '' } },
        withSignal({ upsert: false }, signal),
      );
    });
  }

  /** The progress of the repair under way (fenced; the position and the backfill are left alone). */
  saveRepair(progress: RepairProgress, stop: AbortSignal): Promise<void> {
    return mongoBoundary(async () => {
      stop.throwIfAborted();
      const signal = within(stop, DEFAULT_MONGO_OPERATION_TIMEOUT_MS);
      await this.#write(
        {
          $set: {
            repair: {
              through: progress.through,
              requests: [...progress.requests],
              reason: progress.reason,
              ranges: progress.ranges.map(writeIdRange),
              backfill: writeBackfill(progress.backfill),
              deletesDone: [...progress.deletesDone],
              deletes: progress.deletes,
            },
          },
        },
        signal,
      );
    });
  }

  /**
   * The repair is done: the requests it served (by id) are removed, the progress cleared, and `result` kept
   * as `lastRepair` for `status`, in one write.
   */
  repairServed(result: RepairResult, requests: readonly string[], stop: AbortSignal): Promise<void> {
    return mongoBoundary(async () => {
      stop.throwIfAborted();
      const signal = within(stop, DEFAULT_MONGO_OPERATION_TIMEOUT_MS);
      await this.#write(
        {
          $set: { lastRepair: { ...result } },
          $unset: { repair: '' },
          $max: { repairServedAt: result.through },
          $pull: { repairRequests: { id: { $in: [...requests] } } },
        },
        signal,
      );
    });
  }

  /**
   * The previous release kept the checkpoint in the settings document (`lastChangeId`, `status.checkpoint`);
   * read once, when this collection has none, written here and removed there (`lastChangeId` stays, as
   * the copy it now is), so an upgrade resumes where it was.
   */
  async #upgrade(stored: StoredState, signal: AbortSignal): Promise<StoredState> {
    signal.throwIfAborted();
    const doc = await this.#o.settings.findOne({ _id: this.#o.settingsId } as Document, {
      projection: { lastChangeId: 1, status: 1 },
      signal,
    });
    const status: unknown = doc?.status;
    const saved = isDocument(status) && isDocument(status.checkpoint) ? status.checkpoint : undefined;
    // That release's scope string: source and target, and the resync request its backfill belonged to.
    const legacyScope =
      this.#o.scope +
      (this.#o.resyncRequestedAt === undefined ? '' : ` @ resync ${this.#o.resyncRequestedAt}`);
    if (!saved) return stored;
    if ((saved.scope ?? '') !== legacyScope) {
      // Of another target: that release would not have resumed from it either.
      await this.#dropLegacy(signal);
      return stored;
    }
    const token: unknown = doc?.lastChangeId;
    const data = isDocument(token) ? token._data : undefined;
    const position =
      typeof data === 'string' && saved.clusterTime !== undefined
        ? { token: data, clusterTime: toClusterTime(saved.clusterTime) }
        : undefined;
    const backfill = readBackfill(saved.backfill);
    const request = this.#o.resyncRequestedAt === undefined ? undefined : new Date(this.#o.resyncRequestedAt);
    const upgraded: StoredState = {
      scope: this.#o.scope,
      position,
      backfill,
      resync: request !== undefined,
      resyncRequestedAt: latest(stored.resyncRequestedAt, request),
      resyncServedAt: request,
    };
    await this.#write(
      {
        $set: {
          scope: this.#o.scope,
          resync: upgraded.resync,
          ...(position && { position: writePosition(position) }),
          ...(backfill && { backfill: writeBackfill(backfill) }),
          ...(request && { resyncServedAt: request }),
        },
        ...(request && { $max: { resyncRequestedAt: request } }),
      },
      signal,
    );
    await this.#dropLegacy(signal);
    return upgraded;
  }

  /** Read once: a checkpoint document deleted later must start afresh, not from this old copy. */
  async #dropLegacy(signal: AbortSignal): Promise<void> {
    const { settings, settingsId, fence } = this.#o;
    await fencedUpdate(
      settings,
      settingsId,
      fence,
      {
        $unset: { 'status.checkpoint': '' },
        ...(fence !== undefined && { $set: fencedSet({}, fence) }),
      },
      signal,
    );
  }

  /** A fenced upsert of the checkpoint document; FencedOutError once a newer owner wrote. */
  async #write(update: Document, signal: AbortSignal): Promise<void> {
    const { checkpoints, settingsId, fence } = this.#o;
    // Every write is about this store's scope: a position is never saved without the scope it belongs to.
    const set: Document = {
      ...(update.$set as Document | undefined),
      scope: this.#o.scope,
      updatedAt: new Date(),
    };
    if (fence !== undefined) set.fence = fence;
    const full: Document = { ...update, $set: set };
    const filter: Document =
      fence === undefined
        ? { _id: settingsId }
        : { _id: settingsId, $or: [{ fence: { $exists: false } }, { fence: { $lte: fence } }] };
    for (let attempt = 1; ; attempt++) {
      try {
        await checkpoints.updateOne(filter, full, withSignal({ upsert: true }, signal));
        return;
      } catch (error) {
        // The filter did not match an existing document, so the upsert tried to insert it again: either a
        // newer owner's token is there, or another writer (a resync request) created it just now.
        if (codeOf(error) !== DUPLICATE_KEY || fence === undefined) throw error;
        const current = await checkpoints.findOne({ _id: settingsId } as Document, {
          projection: { fence: 1 },
          signal,
        });
        const newer = tokenValue(current?.fence);
        if (newer !== undefined && newer > fence) {
          throw new FencedOutError(
            `another instance owns this mapping now (fencing token ${newer} is newer than ours, ${fence}); this instance stops it`,
            { cause: error },
          );
        }
        if (attempt >= 3) throw error;
      }
    }
  }

  /**
   * The compatibility copy in the settings document: `lastChangeId` (removed when there is no position; left
   * as it is for `unchanged`, a save of backfill progress only).
   */
  async #copyToSettings(position: Position | undefined | 'unchanged', signal: AbortSignal): Promise<void> {
    const { settings, settingsId, fence } = this.#o;
    const set: Document = { 'status.lastCheckpointAt': new Date() };
    if (typeof position === 'object') set.lastChangeId = { _data: position.token };
    await fencedUpdate(
      settings,
      settingsId,
      fence,
      {
        $set: fencedSet(set, fence),
        ...(position === undefined && { $unset: { lastChangeId: '' } }),
      },
      signal,
    );
  }
}
