import { setTimeout as sleep } from 'node:timers/promises';
import { EJSON } from 'bson';
import {
  type ChangeStream,
  type Collection,
  type Db,
  type Document,
  type MongoClient,
  type UpdateOptions,
} from 'mongodb';
import {
  DEFAULT_SETTINGS_COLLECTION,
  DEFAULT_SETTINGS_DATABASE,
  DEFAULT_SETTINGS_POLL_MS,
  INFERRED_COLUMNS_FIELD,
  SERVICE_WRITTEN_FIELDS,
  settingsIdString,
} from '../core/settings.js';
import { type MappingStatus, type SettingsEntry, type SettingsStore } from '../core/ports.js';
import { ConfigError, FencedOutError } from '../errors.js';
import { bsonKind, isDocument } from '../base/bson-kind.js';
import { within } from '../core/deadline.js';
import { DEFAULT_MONGO_OPERATION_TIMEOUT_MS, withSignal } from './bounded.js';
import { classifyMongoError, codeOf, MONGO_CODES, mongoBoundary } from './error-mapping.js';
import { checkpointsCollectionName } from './checkpoint-store.js';
import { fencedSet, fencedUpdate, storedFence, tokenValue } from './fence.js';
import { columnsHash } from '../schema/column-spec.js';
import { type ColumnsOrigin, type ColumnSpec } from '../schema/types.js';

/** MongoDB refuses change streams on these databases (error 73): settings kept there are only polled. */
const UNWATCHABLE_DATABASES: ReadonlySet<string> = new Set(['admin', 'local', 'config']);

const STATUS_FIELDS = [
  'lastCheckpointAt',
  'eventsRead',
  'rowsWritten',
  'deadLettered',
  'backfillCopied',
  'backfillEstimated',
  'backfillRate',
  'backfillEtaSeconds',
  'message',
] as const satisfies readonly (keyof MappingStatus)[];

/** `$set` of `status.x` when `status` is not a document ("Cannot create field 'x' in element ..."). */
const PATH_NOT_VIABLE = MONGO_CODES.PathNotViable;

/** Pause between pulls of an idle settings stream (some servers ignore maxAwaitTimeMS and answer at once). */
const WATCH_IDLE_MS = 250;
const WATCH_MAX_AWAIT_MS = 1_000;

/**
 * Whether a change event on the settings collection may change a mapping's configuration. Updates whose
 * `updateDescription` names only the service's own fields (`columns`, `lastChangeId`, `lastFailure`,
 * `status`) cannot; everything else may, including updates from servers that send no `updateDescription`
 * (mongo-java-server): the supervisor compares configuration keys anyway.
 */
export function isConfigurationChange(event: Readonly<Document>): boolean {
  if (event.operationType !== 'update') return true;
  const description: unknown = event.updateDescription;
  if (!isDocument(description) || !isDocument(description.updatedFields)) return true;
  const removed = listOf(description.removedFields);
  const truncated = listOf(description.truncatedArrays);
  if (!removed || !truncated) return true;
  const paths = [
    ...Object.keys(description.updatedFields),
    ...removed,
    ...truncated.map((entry) => (isDocument(entry) ? entry.field : undefined)),
  ];
  return paths.some(
    (path) => typeof path !== 'string' || !SERVICE_WRITTEN_FIELDS.has(path.split('.', 1)[0] ?? ''),
  );
}

/** An array as a list of unknowns; absent counts as empty; anything else is undefined. */
function listOf(value: unknown): readonly unknown[] | undefined {
  if (value === undefined) return [];
  return Array.isArray(value) ? (value as readonly unknown[]) : undefined;
}

export interface MongoSettingsStoreOptions {
  /** Database of the settings collection (default `config`; a normal database is recommended). */
  readonly database?: string;
  /** Default `bigquery_archiver_settings`. */
  readonly collection?: string;
  /** The longest `waitForChange` waits (default 10 s): the settings are re-read at least this often. */
  readonly pollMs?: number;
  /** Bounds each read of the settings and each write of status, failure or columns (see `within`). */
  readonly operationTimeoutMs?: number;
}

interface OpenStream {
  readonly changes: ChangeStream<Document, Document>;
  readonly signal: AbortSignal;
  readonly onAbort: () => void;
}

/**
 * The settings collection in MongoDB. The supervisor polls it (`waitForChange` returns at least every
 * `pollMs`); where the database allows change streams (not `admin`, `local` or `config`, where MongoDB
 * refuses them with error 73), a change stream on the collection wakes it sooner when a configuration field
 * changes. If that stream cannot be opened or fails, the store polls only, from then on.
 *
 * Ids: each `list` remembers which stored `_id` every id string stands for, so the service's writes reach
 * the right document even where two `_id`s read alike (the string "65a1…" and the ObjectId 65a1…).
 */
export class MongoSettingsStore implements SettingsStore {
  /** The settings collection (for the checkpoint store, which still writes `lastChangeId` there). */
  readonly collection: Collection;
  /** The mappings' checkpoints, next to the settings (see MongoCheckpointStore). */
  readonly checkpoints: Collection;
  readonly #db: Db;
  readonly #pollMs: number;
  readonly #operationTimeoutMs: number;
  readonly #watchable: boolean;
  #ids = new Map<string, unknown>();
  #stream: OpenStream | undefined;
  #watchFailed = false;
  #watching = false;

  constructor(client: MongoClient, options: MongoSettingsStoreOptions = {}) {
    const database = options.database ?? DEFAULT_SETTINGS_DATABASE;
    this.#db = client.db(database);
    const collection = options.collection ?? DEFAULT_SETTINGS_COLLECTION;
    this.collection = this.#db.collection(collection);
    this.checkpoints = this.#db.collection(checkpointsCollectionName(collection));
    this.#pollMs = options.pollMs ?? DEFAULT_SETTINGS_POLL_MS;
    this.#operationTimeoutMs = options.operationTimeoutMs ?? DEFAULT_MONGO_OPERATION_TIMEOUT_MS;
    this.#watchable = !UNWATCHABLE_DATABASES.has(database);
  }

  /** True while a change stream on the settings collection is open and healthy. */
  get watching(): boolean {
    return this.#watching;
  }

  /** Creates the settings and the checkpoints collections where they do not exist. */
  ensure(signal: AbortSignal): Promise<void> {
    return mongoBoundary(() => this.#ensure(signal));
  }

  async #ensure(signal: AbortSignal): Promise<void> {
    await this.#ensureCollection(this.collection, 'settings', signal);
    await this.#ensureCollection(this.checkpoints, 'checkpoints', signal);
  }

  async #ensureCollection(collection: Collection, what: string, signal: AbortSignal): Promise<void> {
    signal.throwIfAborted();
    const name = collection.collectionName;
    try {
      const existing = await this.#db.listCollections({ name }, { nameOnly: true }).toArray();
      // Checked again here: mongo-java-server ignores the filter.
      if (existing.some((c) => c.name === name)) return;
      await this.#db.createCollection(name);
    } catch (error) {
      // Another replica (or an operator) created it between our check and our create.
      if (codeOf(error) === MONGO_CODES.NamespaceExists) return;
      // Not allowed here, or no such name: SETTINGS_DATABASE is the configuration to change.
      if (classifyMongoError(error) === 'fatal') {
        throw new ConfigError(
          `cannot create the ${what} collection ${collection.namespace}: ${(error as Error).message}; ` +
            'create it beforehand or choose a settings database this user may write (SETTINGS_DATABASE)',
          { cause: error },
        );
      }
      throw error;
    }
  }

  list(stop: AbortSignal): Promise<readonly SettingsEntry[]> {
    return mongoBoundary(() => this.#list(stop));
  }

  async #list(stop: AbortSignal): Promise<readonly SettingsEntry[]> {
    stop.throwIfAborted();
    const signal = within(stop, this.#operationTimeoutMs);
    const entries = withIds(await this.collection.find({}, { signal }).sort({ _id: 1 }).toArray());
    this.#ids = new Map(entries.map(({ id, document }) => [id, document._id]));
    return entries.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }

  /**
   * Resolves after the poll interval, or sooner when the change stream reports a change that may touch a
   * configuration field. The stream stays open between calls (so nothing between two waits is missed) until
   * the signal of the call that opened it aborts. Rejects with the abort reason when `signal` aborts.
   */
  waitForChange(signal: AbortSignal): Promise<void> {
    return mongoBoundary(() => this.#waitForChange(signal));
  }

  async #waitForChange(signal: AbortSignal): Promise<void> {
    signal.throwIfAborted();
    const deadline = Date.now() + this.#pollMs;
    if (!this.#stream && this.#watchable && !this.#watchFailed) this.#openStream(signal);
    for (;;) {
      if (this.#stream && (await this.#pullConfigurationChange(this.#stream, deadline, signal))) return;
      const remaining = deadline - Date.now();
      if (remaining <= 0) return;
      await sleep(this.#stream ? Math.min(WATCH_IDLE_MS, remaining) : remaining, undefined, {
        signal,
      }).catch((error: unknown) => {
        signal.throwIfAborted();
        throw error;
      });
    }
  }

  /** Closes the settings change stream, if one is open (a later `waitForChange` opens a new one). */
  async close(): Promise<void> {
    const stream = this.#stream;
    if (!stream) return;
    this.#stream = undefined;
    this.#watching = false;
    stream.signal.removeEventListener('abort', stream.onAbort);
    await stream.changes.close().catch(ignoreCloseError);
  }

  reportFailure(id: string, message: string | null, fence?: number): Promise<void> {
    return mongoBoundary(() => this.#reportFailure(id, message, fence));
  }

  async #reportFailure(id: string, message: string | null, fence?: number): Promise<void> {
    await this.#update(
      within(undefined, this.#operationTimeoutMs),
      id,
      message === null
        ? {
            $unset: { lastFailure: '', lastFailureAt: '' },
            ...(fence !== undefined && { $set: fencedSet({}, fence) }),
          }
        : { $set: fencedSet({ lastFailure: message, lastFailureAt: new Date() }, fence) },
      fence,
    );
  }

  /**
   * Sets `status.state`, `status.updatedAt` and the given fields one by one, so what else lives under
   * `status` (the checkpoint store's `lastCheckpointAt`, counters not given now) stays.
   * A message belongs to the state it came with: without one, the previous message is removed.
   */
  reportStatus(id: string, status: MappingStatus, fence?: number): Promise<void> {
    return mongoBoundary(() => this.#reportStatus(id, status, fence));
  }

  async #reportStatus(id: string, status: MappingStatus, fence?: number): Promise<void> {
    const fields: Document = { state: status.state, updatedAt: new Date() };
    for (const key of STATUS_FIELDS) if (status[key] !== undefined) fields[key] = status[key];
    if (fence !== undefined) fields.fence = fence;
    const update: Document = {
      $set: Object.fromEntries(Object.entries(fields).map(([key, value]) => [`status.${key}`, value])),
      ...(status.message === undefined && { $unset: { 'status.message': '' } }),
    };
    const signal = within(undefined, this.#operationTimeoutMs);
    const documentId = await this.#resolve(id, signal);
    if (documentId === undefined) return;
    await this.#refuseIfFencedOut(documentId, fence, signal);
    try {
      await fencedUpdate(this.collection, documentId, fence, update, signal);
    } catch (error) {
      if (codeOf(error) !== PATH_NOT_VIABLE) throw error;
      // `status` holds something that is not a document (written by hand): it carries nothing of ours.
      const repaired = await this.collection.updateOne(
        { _id: documentId, status: { $not: { $type: 'object' } } } as Document,
        { $set: { status: fields } },
        withSignal<UpdateOptions>({}, signal),
      );
      if (repaired.matchedCount === 0) {
        await fencedUpdate(this.collection, documentId, fence, update, signal);
      }
    }
  }

  saveColumns(
    id: string,
    columns: readonly ColumnSpec[],
    fence?: number,
    origin: ColumnsOrigin = 'declared',
  ): Promise<void> {
    return mongoBoundary(() => this.#saveColumns(id, columns, fence, origin));
  }

  async #saveColumns(
    id: string,
    columns: readonly ColumnSpec[],
    fence?: number,
    origin: ColumnsOrigin = 'declared',
  ): Promise<void> {
    // One update: the columns and their fingerprint are never seen apart.
    const update: Document =
      origin === 'inferred'
        ? {
            $set: fencedSet({ columns: [...columns], [INFERRED_COLUMNS_FIELD]: columnsHash(columns) }, fence),
          }
        : { $set: fencedSet({ columns: [...columns] }, fence), $unset: { [INFERRED_COLUMNS_FIELD]: '' } };
    await this.#update(within(undefined, this.#operationTimeoutMs), id, update, fence);
  }

  /**
   * The newer of the token in the checkpoint document (where replacing the settings document cannot erase
   * it) and the one in the settings document's `status.fence`.
   */
  fenceOf(id: string, stop: AbortSignal): Promise<number | undefined> {
    return mongoBoundary(() => this.#fenceOf(id, stop));
  }

  async #fenceOf(id: string, stop: AbortSignal): Promise<number | undefined> {
    stop.throwIfAborted();
    const signal = within(stop, this.#operationTimeoutMs);
    const documentId = await this.#resolve(id, signal);
    if (documentId === undefined) return undefined;
    const [settings, checkpoint] = await Promise.all([
      this.collection.findOne({ _id: documentId } as Document, { projection: { status: 1 }, signal }),
      this.checkpoints.findOne({ _id: documentId } as Document, { projection: { fence: 1 }, signal }),
    ]);
    const tokens = [storedFence(settings), tokenValue(checkpoint?.fence)].filter((t) => t !== undefined);
    return tokens.length === 0 ? undefined : Math.max(...tokens);
  }

  fencesOf(ids: readonly string[], stop: AbortSignal): Promise<ReadonlyMap<string, number>> {
    return mongoBoundary(() => this.#fencesOf(ids, stop));
  }

  /** Two `find`s (the settings' `status.fence`, the checkpoints' `fence`) for every mapping asked about. */
  async #fencesOf(ids: readonly string[], stop: AbortSignal): Promise<ReadonlyMap<string, number>> {
    stop.throwIfAborted();
    const signal = within(stop, this.#operationTimeoutMs);
    const byKey = new Map<string, string>();
    const documentIds: unknown[] = [];
    for (const id of ids) {
      const documentId = await this.#resolve(id, signal);
      if (documentId === undefined) continue;
      byKey.set(idKey(documentId), id);
      documentIds.push(documentId);
    }
    const fences = new Map<string, number>();
    if (documentIds.length === 0) return fences;
    const [settings, checkpoints] = await Promise.all([
      this.collection
        .find({ _id: { $in: documentIds } } as Document, { projection: { status: 1 }, signal })
        .toArray(),
      this.checkpoints
        .find({ _id: { $in: documentIds } } as Document, { projection: { fence: 1 }, signal })
        .toArray(),
    ]);
    const note = (documentId: unknown, token: number | undefined) => {
      const id = byKey.get(idKey(documentId));
      if (id === undefined || token === undefined) return;
      fences.set(id, Math.max(token, fences.get(id) ?? token));
    };
    for (const doc of settings) note(doc._id, storedFence(doc));
    for (const doc of checkpoints) note(doc._id, tokenValue(doc.fence));
    return fences;
  }

  /** A write of the service's own fields; with `fence`, refused (FencedOutError) once a newer owner wrote. */
  async #update(signal: AbortSignal, id: string, update: Document, fence?: number): Promise<void> {
    const documentId = await this.#resolve(id, signal);
    if (documentId === undefined) return;
    await this.#refuseIfFencedOut(documentId, fence, signal);
    await fencedUpdate(this.collection, documentId, fence, update, signal);
  }

  /**
   * `status.fence` goes when the settings document is replaced wholesale; the checkpoint document keeps the
   * newest token. Checked first, so an older owner cannot write a stale state or stale columns into a
   * replaced document (the fenced update itself covers every other case).
   */
  async #refuseIfFencedOut(
    documentId: unknown,
    fence: number | undefined,
    signal: AbortSignal,
  ): Promise<void> {
    if (fence === undefined) return;
    const checkpoint = await this.checkpoints.findOne({ _id: documentId } as Document, {
      projection: { fence: 1 },
      signal,
    });
    const newer = tokenValue(checkpoint?.fence);
    if (newer !== undefined && newer > fence) {
      throw new FencedOutError(
        `another instance owns this mapping now (fencing token ${newer} is newer than ours, ${fence}); this instance stops it`,
      );
    }
  }

  /** The stored `_id` behind `id`; undefined when no such document exists (any more): nothing to write. */
  async #resolve(id: string, signal: AbortSignal): Promise<unknown> {
    if (this.#ids.has(id)) return this.#ids.get(id);
    const entries = withIds(
      await this.collection
        .find({}, { projection: { _id: 1 }, signal })
        .sort({ _id: 1 })
        .toArray(),
    );
    this.#ids = new Map(entries.map(({ id, document }) => [id, document._id]));
    return this.#ids.get(id);
  }

  #openStream(signal: AbortSignal): void {
    const changes = this.collection.watch<Document, Document>(
      // Only what `isConfigurationChange` reads; `_id` (the resume token) must stay.
      [{ $project: { operationType: 1, updateDescription: 1 } }],
      { batchSize: 100, maxAwaitTimeMS: WATCH_MAX_AWAIT_MS },
    );
    const onAbort = () => void this.close();
    signal.addEventListener('abort', onAbort, { once: true });
    this.#stream = { changes, signal, onAbort };
  }

  /** Drains what the stream has (until `deadline`); true when something may have changed a configuration. */
  async #pullConfigurationChange(
    stream: OpenStream,
    deadline: number,
    signal: AbortSignal,
  ): Promise<boolean> {
    try {
      for (;;) {
        const event = await stream.changes.tryNext();
        this.#watching = this.#stream === stream;
        if (event === null) return false;
        if (isConfigurationChange(event)) {
          // Whatever else is buffered is read by the `list` that follows.
          while (stream.changes.bufferedCount() > 0) await stream.changes.tryNext();
          if (event.operationType === 'invalidate') await this.close();
          return true;
        }
        if (Date.now() >= deadline) return false;
      }
    } catch {
      signal.throwIfAborted();
      if (this.#stream !== stream) return false;
      // Not a replica set, no privilege, or the stream broke: polling alone is enough; do not retry.
      this.#watchFailed = true;
      await this.close();
      return false;
    }
  }
}

/**
 * Id strings for documents read in `_id` order, ObjectIds first (so the outcome is stable and the usual
 * ObjectId keeps its hex): an id string already taken (the string "65a1…" next to the ObjectId 65a1…) falls
 * back to canonical Extended JSON.
 */
function withIds(documents: readonly Document[]): { id: string; document: Document }[] {
  const isObjectId = (document: Document) => bsonKind(document._id) === 'ObjectId';
  const ordered = [...documents.filter(isObjectId), ...documents.filter((d) => !isObjectId(d))];
  const taken = new Set<string>();
  return ordered.map((document) => {
    const plain = settingsIdString(document._id);
    const id = taken.has(plain) ? EJSON.stringify(document._id, { relaxed: false }) : plain;
    taken.add(id);
    return { id, document };
  });
}

/** Closing a stream whose cursor is already gone (server restarted, client closed) has nothing left to do. */
function ignoreCloseError(): void {
  // Deliberately swallowed: the stream is being discarded either way.
}

/** A settings document's `_id` as a map key: its canonical extended JSON (an ObjectId and a string differ). */
function idKey(documentId: unknown): string {
  return EJSON.stringify({ id: documentId }, { relaxed: false });
}
