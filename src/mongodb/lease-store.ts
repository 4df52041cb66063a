import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import {
  type BulkWriteOptions,
  type Collection,
  type DeleteOptions,
  type Document,
  type FindOneAndUpdateOptions,
  type InsertOneOptions,
  MongoBulkWriteError,
  MongoError,
  MongoNetworkError,
  type UpdateOptions,
  type WriteError,
} from 'mongodb';
import { DEFAULT_LEASE_TTL_MS } from '../core/settings.js';
import { type Lease, type LeaseStore } from '../core/ports.js';
import { within } from '../core/deadline.js';
import { withSignal } from './bounded.js';
import { tokenValue } from './fence.js';
import { codeOf, MONGO_CODES, mongoBoundary } from './error-mapping.js';

/** Records of instances dead for longer than this are deleted, so restarts do not pile them up. */
const DEAD_INSTANCE_RETENTION_MS = 60 * 60_000;
const DUPLICATE_KEY = MONGO_CODES.DuplicateKey;

/**
 * Codes of a primary that stepped down or is shutting down: the write did not happen there, and a new primary
 * takes it (the driver's retryable-write codes, `src/error.ts`, for servers that send no label).
 */
const STEP_DOWN_CODES: ReadonlySet<number> = new Set([
  MONGO_CODES.NotWritablePrimary,
  MONGO_CODES.LegacyNotPrimary,
  MONGO_CODES.NotPrimaryNoSecondaryOk,
  MONGO_CODES.NotPrimaryOrSecondary,
  MONGO_CODES.PrimarySteppedDown,
  MONGO_CODES.InterruptedDueToReplStateChange,
  MONGO_CODES.ShutdownInProgress,
  MONGO_CODES.InterruptedAtShutdown,
]);

/**
 * Whether the driver would retry `error` once were the write a retryable one: a network error, the server's
 * RetryableWriteError label, or a step-down code. An `updateMany` is not a retryable write for the driver, so
 * the lease round does that one retry itself.
 */
function isRetryableWriteError(error: unknown): boolean {
  if (error instanceof MongoNetworkError) return true;
  if (error instanceof MongoError && error.hasErrorLabel('RetryableWriteError')) return true;
  const code = codeOf(error);
  return code !== undefined && STEP_DOWN_CODES.has(code);
}

type Clock = () => number;

export interface MongoLeaseStoreOptions {
  readonly ttlMs?: number;
  /** This instance's name in the lease documents; unique per process (host, pid and a random part). */
  readonly owner?: string;
  readonly clock?: Clock;
}

/** A name for this process that no other process shares, readable in the lease documents. */
export function instanceName(): string {
  return `${hostname()}/${process.pid}/${randomBytes(3).toString('hex')}`;
}

const mappingKey = (mappingId: string) => `mapping:${mappingId}`;

function tokenOf(doc: Document | null): number | undefined {
  return tokenValue(doc?.token);
}

/**
 * Leases as documents of one collection (next to the settings): `{_id: "mapping:<id>", owner, token,
 * expiresAt}` per mapping, and `{_id: "instance:<name>", kind: "instance", expiresAt}` per live instance.
 * Taking a lease is one atomic update that matches only a free or expired lease and increments its token.
 * Expiry is by this process's clock: instances need clocks in step within a fraction of the TTL (NTP), and
 * even when they are not, fencing keeps the checkpoints safe; only a takeover comes early or late.
 */
export class MongoLeaseStore implements LeaseStore {
  readonly ttlMs: number;
  readonly owner: string;
  readonly #clock: Clock;

  constructor(
    private readonly collection: Collection,
    options: MongoLeaseStoreOptions = {},
  ) {
    this.ttlMs = options.ttlMs ?? DEFAULT_LEASE_TTL_MS;
    this.owner = options.owner ?? instanceName();
    this.#clock = options.clock ?? Date.now;
  }

  /**
   * Every operation of a lease is bounded by the TTL (see `within`): an answer that comes later is worth
   * nothing, the lease may have expired meanwhile, and the lease loop must go on to its next round.
   */
  #bounded(signal: AbortSignal | undefined): AbortSignal {
    return within(signal, this.ttlMs);
  }

  heartbeat(stop: AbortSignal): Promise<number> {
    return mongoBoundary(() => this.#heartbeat(stop));
  }

  /**
   * The three operations go out together, one round trip in all (in turn they were three, and on a busy
   * server each waits its turn): this instance's record, the clean-up of long-dead ones, and the count of
   * the other live instances, plus one for this one (so the count does not depend on the upsert's landing
   * first).
   */
  async #heartbeat(stop: AbortSignal): Promise<number> {
    stop.throwIfAborted();
    const signal = this.#bounded(stop);
    const now = this.#clock();
    const self = `instance:${this.owner}`;
    const [, , others] = await Promise.all([
      this.collection.updateOne(
        { _id: self } as Document,
        { $set: { kind: 'instance', owner: this.owner, expiresAt: new Date(now + this.ttlMs) } },
        withSignal({ upsert: true }, signal),
      ),
      this.collection.deleteMany(
        { kind: 'instance', expiresAt: { $lt: new Date(now - DEAD_INSTANCE_RETENTION_MS) } },
        withSignal<DeleteOptions>({}, signal),
      ),
      this.collection.countDocuments(
        { kind: 'instance', _id: { $ne: self }, expiresAt: { $gt: new Date(now) } } as Document,
        { signal },
      ),
    ]);
    return others + 1;
  }

  tryAcquire(mappingId: string, floor: number | undefined, stop: AbortSignal): Promise<Lease | undefined> {
    return mongoBoundary(() => this.#tryAcquire(mappingId, floor, stop));
  }

  async #tryAcquire(
    mappingId: string,
    floor: number | undefined,
    stop: AbortSignal,
  ): Promise<Lease | undefined> {
    stop.throwIfAborted();
    const signal = this.#bounded(stop);
    const now = this.#clock();
    const expiresAt = new Date(now + this.ttlMs);
    const taken = await this.collection.findOneAndUpdate(
      {
        _id: mappingKey(mappingId),
        $or: [{ owner: null }, { expiresAt: { $lte: new Date(now) } }],
      } as Document,
      {
        $set: { kind: 'mapping', owner: this.owner, expiresAt, acquiredAt: new Date(now) },
        $inc: { token: 1 },
      },
      withSignal<FindOneAndUpdateOptions>({ returnDocument: 'after' }, signal),
    );
    let token = tokenOf(taken);
    if (token === undefined) {
      try {
        token = (floor ?? 0) + 1;
        await this.collection.insertOne(
          {
            _id: mappingKey(mappingId),
            kind: 'mapping',
            owner: this.owner,
            token,
            expiresAt,
            acquiredAt: new Date(now),
          } as Document,
          withSignal<InsertOneOptions>({}, signal),
        );
      } catch (error) {
        // Someone holds it (the filter above did not match an existing, live lease).
        if (codeOf(error) === DUPLICATE_KEY) return undefined;
        throw error;
      }
    } else if (floor !== undefined && token <= floor) {
      // The leases were reset or lost while the settings kept a newer token: continue above it.
      const raised = floor + 1;
      const result = await this.collection.updateOne(
        { _id: mappingKey(mappingId), owner: this.owner, token } as Document,
        { $set: { token: raised } },
        withSignal<UpdateOptions>({}, signal),
      );
      if (result.matchedCount === 0) return undefined;
      token = raised;
    }
    return { mappingId, token };
  }

  tryAcquireAll(
    requests: readonly { readonly mappingId: string; readonly floor: number | undefined }[],
    stop: AbortSignal,
  ): Promise<readonly Lease[]> {
    return mongoBoundary(() => this.#tryAcquireAll(requests, stop));
  }

  /**
   * One `updateMany` takes every free or expired lease asked for, marking them with a mark of this call
   * (`takenBy`, for whoever reads the leases), and increments their tokens; one `find` tells which are ours
   * (no one else can take a lease within its TTL; one this process took in an earlier call that failed after
   * its update is ours too, not an orphan for a TTL) and which do not exist yet; one unordered `insertMany` creates
   * those, a duplicate key meaning another instance created it first. Only a lease whose token does not
   * exceed its floor (leases wiped while the settings kept newer tokens) costs an update of its own.
   */
  async #tryAcquireAll(
    requests: readonly { readonly mappingId: string; readonly floor: number | undefined }[],
    stop: AbortSignal,
  ): Promise<readonly Lease[]> {
    stop.throwIfAborted();
    if (requests.length === 0) return [];
    const signal = this.#bounded(stop);
    const now = this.#clock();
    const expiresAt = new Date(now + this.ttlMs);
    const mark = randomBytes(8).toString('hex');
    const keys = requests.map((r) => mappingKey(r.mappingId));
    await this.collection.updateMany(
      { _id: { $in: keys }, $or: [{ owner: null }, { expiresAt: { $lte: new Date(now) } }] } as Document,
      {
        $set: { kind: 'mapping', owner: this.owner, expiresAt, acquiredAt: new Date(now), takenBy: mark },
        $inc: { token: 1 },
      },
      withSignal<UpdateOptions>({}, signal),
    );
    const found = new Map(
      (
        await this.collection
          .find({ _id: { $in: keys } } as Document, {
            projection: { owner: 1, token: 1, takenBy: 1 },
            signal,
          })
          .toArray()
      ).map((doc) => [String(doc._id), doc]),
    );
    const taken: Lease[] = [];
    const absent: Document[] = [];
    for (const { mappingId, floor } of requests) {
      const doc = found.get(mappingKey(mappingId));
      if (doc === undefined) {
        absent.push({
          _id: mappingKey(mappingId),
          kind: 'mapping',
          owner: this.owner,
          token: (floor ?? 0) + 1,
          expiresAt,
          acquiredAt: new Date(now),
          takenBy: mark,
        });
        continue;
      }
      // Ours: taken by this call's update, or by an earlier call of this process that failed after its
      // update landed (the caller asks only for leases it does not hold, and the owner names this process).
      if (doc.owner !== this.owner) continue;
      const token = tokenOf(doc);
      if (token === undefined) continue;
      const raised = await this.#aboveFloor(mappingId, token, floor, signal);
      if (raised !== undefined) taken.push({ mappingId, token: raised });
    }
    if (absent.length > 0) {
      const inserted = await this.#insertNew(absent, signal);
      for (const doc of absent) {
        if (inserted.has(String(doc._id))) {
          taken.push({ mappingId: String(doc._id).slice('mapping:'.length), token: Number(doc.token) });
        }
      }
    }
    return taken;
  }

  /** The token of a lease just taken, raised above `floor` when it is not; undefined if lost meanwhile. */
  async #aboveFloor(
    mappingId: string,
    token: number,
    floor: number | undefined,
    signal: AbortSignal,
  ): Promise<number | undefined> {
    if (floor === undefined || token > floor) return token;
    const raised = floor + 1;
    const result = await this.collection.updateOne(
      { _id: mappingKey(mappingId), owner: this.owner, token } as Document,
      { $set: { token: raised } },
      withSignal<UpdateOptions>({}, signal),
    );
    return result.matchedCount === 0 ? undefined : raised;
  }

  /** Inserts new lease documents; returns the `_id`s inserted (a duplicate key: another instance was first). */
  async #insertNew(docs: readonly Document[], signal: AbortSignal): Promise<ReadonlySet<string>> {
    const all = new Set(docs.map((doc) => String(doc._id)));
    try {
      await this.collection.insertMany([...docs], withSignal<BulkWriteOptions>({ ordered: false }, signal));
      return all;
    } catch (error) {
      if (!(error instanceof MongoBulkWriteError)) throw error;
      const failures: readonly WriteError[] = Array.isArray(error.writeErrors)
        ? (error.writeErrors as WriteError[])
        : [error.writeErrors as WriteError];
      if (failures.some((failure) => failure.code !== DUPLICATE_KEY)) throw error;
      for (const failure of failures) all.delete(String(docs[failure.index]?._id));
      return all;
    }
  }

  renewAll(leases: readonly Lease[], stop: AbortSignal): Promise<ReadonlySet<string>> {
    return mongoBoundary(() => this.#renewAll(leases, stop));
  }

  /**
   * One `updateMany` over every lease, so a round costs one round trip whatever the number of leases (one
   * update per lease, in turn, took longer than the TTL with a few hundred). Only when it matched fewer than
   * asked does a `find` tell which: a lease still ours carries the expiry this round set, or a later one (the
   * update moves expiries forward only, so an older round landing late shortens nothing). The driver does not
   * retry an `updateMany` (the per-lease `updateOne` was a retryable write): the round is retried once here
   * on what the driver would have retried (`isRetryableWriteError`).
   */
  async #renewAll(leases: readonly Lease[], stop: AbortSignal): Promise<ReadonlySet<string>> {
    stop.throwIfAborted();
    if (leases.length === 0) return new Set();
    const signal = this.#bounded(stop);
    const expiresAt = new Date(this.#clock() + this.ttlMs);
    try {
      return await this.#renewRound(leases, expiresAt, signal);
    } catch (error) {
      // A step-down or a dropped connection during the round: once, at once, within the same TTL bound and
      // with the same expiry (the round is idempotent: a first attempt that did land is matched again).
      if (signal.aborted || !isRetryableWriteError(error)) throw error;
      return this.#renewRound(leases, expiresAt, signal);
    }
  }

  async #renewRound(
    leases: readonly Lease[],
    expiresAt: Date,
    signal: AbortSignal,
  ): Promise<ReadonlySet<string>> {
    // Forward only: a round that lands after a newer one (a retry, a slow server) does not shorten a lease.
    const result = await this.collection.updateMany(
      {
        $or: leases.map((lease) => ({
          _id: mappingKey(lease.mappingId),
          owner: this.owner,
          token: lease.token,
        })),
        expiresAt: { $lte: expiresAt },
      } as Document,
      { $set: { expiresAt } },
      withSignal<UpdateOptions>({}, signal),
    );
    if (result.matchedCount === leases.length) return new Set(leases.map((lease) => lease.mappingId));
    const renewed = await this.collection
      .find(
        {
          _id: { $in: leases.map((lease) => mappingKey(lease.mappingId)) },
          owner: this.owner,
          expiresAt: { $gte: expiresAt },
        } as Document,
        { projection: { _id: 1, token: 1 }, signal },
      )
      .toArray();
    const tokens = new Map(renewed.map((doc) => [String(doc._id), tokenOf(doc)]));
    return new Set(
      leases
        .filter((lease) => tokens.get(mappingKey(lease.mappingId)) === lease.token)
        .map((lease) => lease.mappingId),
    );
  }

  release(lease: Lease): Promise<void> {
    return mongoBoundary(() => this.#release(lease));
  }

  async #release(lease: Lease): Promise<void> {
    // The token stays: the next owner's is greater.
    await this.collection.updateOne(
      { _id: mappingKey(lease.mappingId), owner: this.owner, token: lease.token } as Document,
      { $set: { owner: null, expiresAt: new Date(0) } },
      withSignal<UpdateOptions>({}, this.#bounded(undefined)),
    );
  }

  leave(): Promise<void> {
    return mongoBoundary(() => this.#leave());
  }

  async #leave(): Promise<void> {
    await this.collection.deleteOne(
      { _id: `instance:${this.owner}` } as Document,
      withSignal<DeleteOptions>({}, this.#bounded(undefined)),
    );
  }

  /** Who holds what, for `status` and the tests: mapping id to owner and token. */
  holders(): Promise<Map<string, { owner: string | null; token: number; expiresAt: Date }>> {
    return mongoBoundary(() => this.#holders());
  }

  async #holders(): Promise<Map<string, { owner: string | null; token: number; expiresAt: Date }>> {
    const docs = await this.collection.find({ kind: 'mapping' }).toArray();
    const holders = new Map<string, { owner: string | null; token: number; expiresAt: Date }>();
    for (const doc of docs) {
      const id = String(doc._id).slice('mapping:'.length);
      const live = doc.expiresAt instanceof Date && doc.expiresAt.getTime() > this.#clock();
      holders.set(id, {
        owner: live && typeof doc.owner === 'string' ? doc.owner : null,
        token: tokenOf(doc) ?? 0,
        expiresAt: doc.expiresAt instanceof Date ? doc.expiresAt : new Date(0),
      });
    }
    return holders;
  }
}
