import { createHash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { type MappingSettings } from './settings.js';
import { dispositionOf, SettingsError, errorMessage } from '../errors.js';
import { type ColumnSpec } from '../schema/types.js';
import {
  type Lease,
  type LeaseStore,
  type MappingState,
  type MappingStatus,
  type SettingsStore,
} from './ports.js';

/** What a running mapping can tell its supervisor. */
export interface MappingHooks {
  report(status: MappingStatus): void;
  /**
   * The mapping is writing these columns to its settings (inferred or evolved): that write must not restart
   * it, and a restart after a failure starts from them (not from a new inference over a new sample).
   */
  columnsSaved(columns: readonly ColumnSpec[]): void;
  /** The fencing token of this instance's lease on the mapping: every write of its checkpoint carries it. */
  readonly fence?: number;
}

/** Runs one mapping until `signal` aborts (resolve) or it fails (reject). */
export type MappingRunner = (
  settings: MappingSettings,
  signal: AbortSignal,
  hooks: MappingHooks,
) => Promise<void>;

/**
 * Where the supervisor writes its lines: a message, then context fields. A failure is passed as the thrown
 * value under `err`, not as its message: the logger writes its type, message, stack and our errors' code and
 * disposition, which an operator needs to tell a bug from an outage.
 */
export interface SupervisorLog {
  info(message: string, context?: Record<string, unknown>): void;
  warn(message: string, context?: Record<string, unknown>): void;
  error(message: string, context?: Record<string, unknown>): void;
}

export interface SupervisorOptions {
  readonly store: SettingsStore;
  /**
   * Validates one settings document; throws a SettingsError naming the fields at fault. Injected (the
   * config parser in the daemon) so the core does not depend on config/.
   */
  readonly parseSettings: (document: Readonly<Record<string, unknown>>) => MappingSettings;
  readonly runMapping: MappingRunner;
  readonly log: SupervisorLog;
  /** Delay before restarting a mapping after its `failures`-th consecutive failure; undefined: do not restart. */
  readonly restartDelayMs?: (failures: number, error: unknown) => number | undefined;
  readonly onStatus?: (id: string, status: MappingStatus) => void;
  /** The mapping's settings document is gone, or another instance owns it now: forget it (its metrics). */
  readonly onRemoved?: (id: string) => void;
  /**
   * Shares the mappings with the other running instances: this one runs only the mappings whose lease it
   * holds, about its fair share of them. Without it, every mapping runs here.
   */
  readonly leases?: LeaseStore;
  /** Pause between lease renewals and rebalancing; default a third of the lease TTL. */
  readonly leaseTickMs?: number;
  /** Told of every lease round once it is over, failed ones included (with leases only). */
  readonly onLeaseRound?: (round: LeaseRound) => void;
  /**
   * Told of every rebalancing once it is over, failed ones included, with the seconds it took: it runs beside
   * the lease rounds, and a long one (a wedged handover) holds up every takeover of this instance.
   */
  readonly onRebalance?: (seconds: number) => void;
  /** A mapping still stopping after this long is wedged: `health()` says so (default DEFAULT_STOP_DEADLINE_MS). */
  readonly stopDeadlineMs?: number;
}

/** One tick of the lease loop, as measured. */
export interface LeaseRound {
  /**
   * Seconds the heartbeat and the renewals took (to the error, for a failed round): a round that nears the
   * lease TTL lets leases expire. The rebalancing runs beside the rounds and is not counted.
   */
  readonly seconds: number;
  /** Leases this instance holds after the round. */
  readonly held: number;
}

/** The status a mapping handed over to another instance leaves in its settings document. */
export const HANDED_OVER: MappingStatus = {
  state: 'stopped',
  message: 'handed over to another instance (rebalancing)',
};

/** The status a mapping whose lease was lost leaves, unless its new owner wrote first. */
export const LEASE_LOST: MappingStatus = { state: 'stopped', message: 'lease lost' };

/** Whether the process still works: false when a mapping is wedged, with a short text per wedged mapping. */
export interface Health {
  readonly healthy: boolean;
  readonly detail: Readonly<Record<string, string>>;
}

/**
 * States that do not hold readiness back: running, or waiting for new settings (`failed`; `invalid` ones do
 * not run at all). Restarting the pod cannot fix those, and not being ready would stall every rollout.
 */
const READY_STATES: ReadonlySet<MappingState> = new Set(['backfilling', 'streaming', 'dryrun', 'failed']);

/**
 * A stop ends the write in hand, saves the checkpoint and closes the writers. The BigQuery waits have their
 * own bounds, the longest an insertAll request given up after 60 s; a stop still running after twice that
 * waits for something that will not come (a MongoDB connection that went silent, a bug), and only a restart
 * of the process frees it: reconciling, which waits for the stop, is held up meanwhile.
 */
export const DEFAULT_STOP_DEADLINE_MS = 120_000;

const RETRY_BASE_MS = 1_000;
/** Leases a rebalancing asks for in one call (a bound on the size of one command, not on the share). */
const MAX_TAKES_AT_ONCE = 500;
const RETRY_MAX_MS = 60_000;

/**
 * Restart policy by disposition: a retryable failure restarts with exponential backoff from 1 s up to a
 * minute; every other one (invalid configuration or names, permissions, a lost history with
 * `on_history_lost: fail`) waits for the settings to change. (A fenced-out mapping never gets here.)
 */
export function defaultRestartDelayMs(failures: number, error: unknown): number | undefined {
  const disposition = dispositionOf(error);
  switch (disposition) {
    case 'retryable':
      return Math.min(RETRY_MAX_MS, RETRY_BASE_MS * 2 ** Math.min(failures - 1, 16));
    case 'fatal':
    case 'config-invalid':
    case 'history-lost':
    case 'fenced-out':
      return undefined;
    default:
      return disposition satisfies never;
  }
}

function hashOf(value: unknown): string {
  return createHash('sha256')
    .update(JSON.stringify(value ?? null))
    .digest('hex')
    .slice(0, 16);
}

interface Running {
  readonly settings: MappingSettings;
  readonly lease: Lease | undefined;
  /** Configuration key plus the hash of the columns as last seen or saved by the mapping itself. */
  key: string;
  ownColumns: string | undefined;
  state: MappingState;
  /**
   * The status to write once it stopped, when it stops for a reason the mapping cannot see itself (its
   * lease was lost): otherwise its settings document would go on saying `streaming`.
   */
  farewell: MappingStatus | undefined;
  readonly controller: AbortController;
  readonly done: Promise<void>;
}

/**
 * Keeps the running mappings in line with the settings documents: starts new ones, stops removed ones,
 * restarts exactly the mapping whose configuration changed, and never restarts anything because of the
 * service's own writes (`columns`, `lastChangeId`, `lastFailure`, `status`). An invalid settings document
 * gets a precise `lastFailure` and the state `invalid`; the other mappings go on.
 */
export class Supervisor {
  readonly #o: SupervisorOptions;
  readonly #running = new Map<string, Running>();
  readonly #invalid = new Map<string, string>();
  /** Valid mappings as last listed, whether or not they run here. */
  readonly #desired = new Map<string, { settings: MappingSettings; key: string }>();
  /** Leases this instance holds (with leases only). */
  readonly #held = new Map<string, Lease>();
  /** Mappings being stopped, and since when (ms). */
  readonly #stopping = new Map<Running, { id: string; since: number }>();
  /** Serialises reconciling and rebalancing, which both start and stop mappings. */
  #exclusive: Promise<unknown> = Promise.resolve();
  #listed = false;
  /** A first round of renewing and taking leases is over (with leases only). */
  #leasedOnce = false;
  /** Lease rounds whose heartbeat answered. */
  #leaseRounds = 0;
  /** The rebalancing under way, if any (with leases only). */
  #rebalancing: Promise<void> | undefined;

  constructor(options: SupervisorOptions) {
    this.#o = options;
  }

  /** Runs until `signal` aborts; then stops every mapping (each flushes and checkpoints) and returns. */
  async run(signal: AbortSignal): Promise<void> {
    let leasing: Promise<void> = Promise.resolve();
    try {
      await this.#o.store.ensure(signal);
      while (!signal.aborted) {
        const entries = await this.#o.store.list(signal);
        await this.#serially(() => this.#reconcile(entries));
        if (!this.#listed && this.#o.leases) leasing = this.#leaseLoop(this.#o.leases, signal);
        this.#listed = true;
        await this.#o.store.waitForChange(signal).catch((error: unknown) => {
          if (!signal.aborted) throw error;
        });
      }
    } catch (error) {
      if (!signal.aborted) throw error;
    } finally {
      await leasing;
      await Promise.all([...this.#running.keys()].map((id) => this.#stop(id)));
      await this.#releaseAll();
    }
  }

  /** Runs `task` after the ones before it: reconciling and rebalancing never interleave. */
  #serially(task: () => Promise<void>): Promise<void> {
    const next = this.#exclusive.then(task);
    this.#exclusive = next.catch(() => undefined);
    return next;
  }

  /**
   * Every tick: beat and renew the leases held, both at once (a lease found taken stops its mapping), then
   * have the rebalancing run beside the next ticks: it takes free or expired leases up to this instance's
   * fair share (mappings divided by live instances, rounded up), or gives up the ones beyond it when other
   * instances joined. The renewals never wait for it: a rebalancing that stops mappings (each one's last
   * flush) or takes many leases on a loaded server once made renewals come later than the TTL, and the other
   * instance took leases that were never meant to move. An instance whose first heartbeat finds others alive
   * takes nothing in that round: instances started together then count each other before they take their
   * shares, instead of the first one taking everything and handing most of it over a tick later.
   */
  async #leaseLoop(leases: LeaseStore, signal: AbortSignal): Promise<void> {
    const tickMs = this.#o.leaseTickMs ?? Math.max(100, Math.floor(leases.ttlMs / 3));
    while (!signal.aborted) {
      const started = performance.now();
      try {
        // Both settle before the next round: a heartbeat failing at once must not leave this round's renewal
        // running beside the next one (two renewals landing out of order would move expiries backwards).
        const [beat, renewal] = await Promise.allSettled([
          leases.heartbeat(signal),
          this.#renew(leases, signal),
        ]);
        if (beat.status === 'rejected') throw beat.reason;
        if (renewal.status === 'rejected') throw renewal.reason;
        const live = beat.value;
        const mayTake = this.#leaseRounds > 0 || live <= 1;
        this.#leaseRounds++;
        this.#rebalanceSoon(leases, live, mayTake, signal);
      } catch (error) {
        if (isAborted(signal)) break;
        this.#o.log.warn('could not renew or take leases; trying again', { err: error });
      }
      const seconds = (performance.now() - started) / 1_000;
      this.#o.onLeaseRound?.({ seconds, held: this.#held.size });
      // At a steady pace: the next round is due a tick after this one started.
      await sleepUnlessAborted(Math.max(0, tickMs - seconds * 1_000), signal);
    }
    await this.#rebalancing;
  }

  /** Starts a rebalancing unless one is under way (the next tick starts the next one). */
  #rebalanceSoon(leases: LeaseStore, live: number, mayTake: boolean, signal: AbortSignal): void {
    if (this.#rebalancing !== undefined) return;
    let started = 0;
    this.#rebalancing = this.#serially(() => {
      started = performance.now();
      return this.#rebalance(leases, live, mayTake, signal);
    })
      .then(() => {
        if (mayTake) this.#leasedOnce = true;
      })
      .catch((error: unknown) => {
        if (isAborted(signal)) return;
        this.#o.log.warn('could not take or hand over leases; trying again', { err: error });
      })
      .finally(() => {
        this.#rebalancing = undefined;
        if (started > 0) this.#o.onRebalance?.((performance.now() - started) / 1_000);
      });
  }

  /**
   * Renews every held lease in one call (one round trip). Not serialised with the rest: a slow stop
   * elsewhere must not let the other leases expire.
   */
  async #renew(leases: LeaseStore, signal: AbortSignal): Promise<void> {
    const asked = [...this.#held];
    if (asked.length === 0) return;
    const kept = await leases.renewAll(
      asked.map(([, lease]) => lease),
      signal,
    );
    for (const [id, lease] of asked) {
      if (kept.has(id)) continue;
      // Released meanwhile (its settings went away): not lost.
      if (this.#held.get(id) !== lease) continue;
      this.#held.delete(id);
      this.#o.log.warn('lease lost to another instance; stopping this mapping here', {
        mapping: id,
        fencingToken: lease.token,
      });
      const running = this.#running.get(id);
      if (!running) continue;
      running.farewell = LEASE_LOST;
      running.controller.abort();
    }
  }

  /**
   * `mayTake`: whether this round may take leases (not in a first round that found other instances). Stops,
   * handovers go out together (one slow mapping does not hold up the others), and leases are taken in one
   * call (a few round trips, not a couple per lease).
   */
  async #rebalance(leases: LeaseStore, live: number, mayTake: boolean, signal: AbortSignal): Promise<void> {
    // Mappings whose lease was lost (or whose settings went away) stop here.
    const lost = [...this.#running.keys()].filter((id) => !this.#held.has(id));
    await Promise.all(
      lost.map(async (id) => {
        await this.#stop(id);
        this.#o.onRemoved?.(id);
      }),
    );
    const wanted = [...this.#desired.keys()].sort();
    const fairShare = Math.ceil(wanted.length / Math.max(1, live));
    // The ones kept are those of the databases this instance holds most of (their streams are shared).
    const surplus = this.#byDatabase([...this.#held.keys()].sort()).slice(fairShare);
    await Promise.all(
      surplus.map(async (id) => {
        this.#o.log.info('handing this mapping over to another instance (rebalancing)', { mapping: id });
        // The status is written before the release: no new owner can have written yet.
        await this.#stop(id, HANDED_OVER);
        await this.#release(id);
        this.#o.onRemoved?.(id);
      }),
    );
    if (!mayTake) return;
    // A mapping still running here (its lease just lost, its run not yet stopped) is not taken again before
    // the next round: two runs of one mapping would write at once.
    const stopping = new Set([...this.#stopping.values()].map(({ id }) => id));
    const candidates = this.#byDatabase(
      shuffled(wanted.filter((w) => !this.#held.has(w) && !this.#running.has(w) && !stopping.has(w))),
    );
    while (candidates.length > 0 && !signal.aborted) {
      const need = Math.min(fairShare - this.#held.size, MAX_TAKES_AT_ONCE);
      if (need <= 0) break;
      const asked = candidates.splice(0, need);
      const floors = await this.#o.store.fencesOf(asked, signal);
      const taken = await leases.tryAcquireAll(
        asked.map((id) => ({ mappingId: id, floor: floors.get(id) })),
        signal,
      );
      for (const lease of taken) await this.#took(lease);
    }
  }

  /** Starts the mapping of a lease just taken, or gives the lease back when its settings went away. */
  async #took(lease: Lease): Promise<void> {
    const id = lease.mappingId;
    this.#held.set(id, lease);
    const desired = this.#desired.get(id);
    if (!desired) {
      await this.#release(id);
      return;
    }
    this.#o.log.info('took the lease of this mapping', { mapping: id, fencingToken: lease.token });
    this.#start(id, desired.settings, desired.key);
  }

  /**
   * `ids` grouped by source database, in a stable sort: first the databases this instance holds the most
   * mappings of, then the others in the order their first mapping comes in `ids`. Taking or keeping whole
   * databases keeps the number of database streams (one per database and instance) low.
   */
  #byDatabase(ids: readonly string[]): string[] {
    const databaseOf = (id: string) => this.#desired.get(id)?.settings.mongoDatabase ?? '';
    const heldIn = new Map<string, number>();
    for (const id of this.#held.keys()) heldIn.set(databaseOf(id), (heldIn.get(databaseOf(id)) ?? 0) + 1);
    const firstSeen = new Map<string, number>();
    for (const [index, id] of ids.entries())
      if (!firstSeen.has(databaseOf(id))) firstSeen.set(databaseOf(id), index);
    const rank = (id: string) =>
      [-(heldIn.get(databaseOf(id)) ?? 0), firstSeen.get(databaseOf(id)) ?? 0] as const;
    return ids
      .map((id, index) => ({ id, index, rank: rank(id) }))
      .sort((a, b) => a.rank[0] - b.rank[0] || a.rank[1] - b.rank[1] || a.index - b.index)
      .map(({ id }) => id);
  }

  async #release(id: string): Promise<void> {
    const lease = this.#held.get(id);
    if (!lease || !this.#o.leases) return;
    this.#held.delete(id);
    await this.#o.leases.release(lease).catch((error: unknown) => {
      this.#o.log.warn('could not release the lease; it expires by itself', {
        mapping: id,
        err: error,
      });
    });
  }

  async #releaseAll(): Promise<void> {
    const leases = this.#o.leases;
    if (!leases) return;
    await Promise.all([...this.#held.keys()].map((id) => this.#release(id)));
    await leases.leave().catch(() => undefined);
  }

  /** Ready once the settings were read and every mapping is in one of READY_STATES. */
  ready(): { ready: boolean; detail: Record<string, string> } {
    const detail: Record<string, string> = {};
    for (const [id, r] of this.#running) detail[id] = r.state;
    for (const [id] of this.#invalid) detail[id] = 'invalid';
    const running = [...this.#running.values()];
    // With leases, the first round of taking them must be over: before it, nothing runs here yet.
    const settled = this.#listed && (this.#o.leases === undefined || this.#leasedOnce);
    const ready = settled && running.every((r) => READY_STATES.has(r.state));
    return { ready, detail };
  }

  /**
   * Unhealthy while a mapping's stop has taken longer than the stop deadline: the liveness probe then has the
   * process restarted, the one way out of a wait that never ends. An outage of MongoDB or BigQuery does not
   * count: the mappings go on retrying, and stop promptly when asked.
   */
  health(): Health {
    const deadlineMs = this.#stopDeadlineMs();
    const now = Date.now();
    const detail: Record<string, string> = {};
    for (const { id, since } of this.#stopping.values()) {
      if (now - since <= deadlineMs) continue;
      detail[id] =
        `stopping for ${String(Math.floor((now - since) / 1_000))} s, over the ${String(deadlineMs / 1_000)} s bound`;
    }
    return { healthy: Object.keys(detail).length === 0, detail };
  }

  #stopDeadlineMs(): number {
    return this.#o.stopDeadlineMs ?? DEFAULT_STOP_DEADLINE_MS;
  }

  states(): ReadonlyMap<string, MappingState> {
    return new Map([...this.#running].map(([id, r]) => [id, r.state]));
  }

  async #reconcile(
    entries: readonly { id: string; document: Readonly<Record<string, unknown>> }[],
  ): Promise<void> {
    const seen = new Set<string>();
    for (const { id, document } of entries) {
      seen.add(id);
      let settings: MappingSettings;
      try {
        settings = this.#o.parseSettings(document);
      } catch (error) {
        if (!(error instanceof SettingsError)) throw error;
        this.#desired.delete(id);
        await this.#stop(id);
        await this.#release(id);
        const message = `invalid settings: ${error.issues.join('; ')}`;
        if (this.#invalid.get(id) !== message) {
          this.#invalid.set(id, message);
          this.#o.log.warn('settings document is invalid; this mapping does not run', {
            mapping: id,
            issues: error.issues,
          });
          this.#o.onStatus?.(id, { state: 'invalid', message });
          await this.#o.store.reportFailure(id, message);
          await this.#o.store.reportStatus(id, { state: 'invalid', message });
        }
        continue;
      }
      this.#invalid.delete(id);
      const key = `${settings.configurationKey}:${hashOf(document.columns)}`;
      this.#desired.set(id, { settings, key });
      for (const warning of settings.warnings) this.#o.log.warn(warning, { mapping: id });
      const columnsHash = hashOf(document.columns);
      const running = this.#running.get(id);
      if (running) {
        if (running.key === key) continue;
        if (
          running.settings.configurationKey === settings.configurationKey &&
          columnsHash === running.ownColumns
        ) {
          // The mapping's own write of its columns: take note, do not restart.
          running.key = key;
          continue;
        }
        this.#o.log.info('settings of this mapping changed; restarting it', { mapping: id });
        await this.#stop(id);
      }
      // With leases, a mapping starts here once this instance holds its lease (see #rebalance).
      if (!this.#o.leases || this.#held.has(id)) this.#start(id, settings, key);
    }
    for (const id of [...this.#desired.keys()]) if (!seen.has(id)) this.#desired.delete(id);
    for (const id of [...this.#running.keys()]) {
      if (!seen.has(id)) {
        this.#o.log.info('settings document removed; stopping this mapping', { mapping: id });
        await this.#stop(id);
        await this.#release(id);
        this.#o.onRemoved?.(id);
      }
    }
    for (const id of [...this.#invalid.keys()]) {
      if (seen.has(id)) continue;
      this.#invalid.delete(id);
      this.#o.onRemoved?.(id);
    }
  }

  /** `id` is the settings store's id of the document (the one status and failures are written under). */
  #start(id: string, stored: MappingSettings, key: string): void {
    // The store's id is the one its writes understand (it differs from the parsed one only on id clashes).
    let settings = stored.id === id ? stored : Object.freeze({ ...stored, id });
    const controller = new AbortController();
    const lease = this.#held.get(id);
    const fence = lease?.token;
    const entry: Running = {
      settings,
      lease,
      key,
      ownColumns: undefined,
      state: 'starting',
      farewell: undefined,
      controller,
      done: Promise.resolve(),
    };
    const statusWriter = new StatusWriter((status) =>
      this.#o.store.reportStatus(id, status, fence).catch((error: unknown) => {
        if (dispositionOf(error) === 'fenced-out') {
          this.#o.log.warn('fenced out by a newer owner; stopping this mapping here', { mapping: id });
          this.#fencedOut(id, entry);
          return;
        }
        this.#o.log.warn('could not write the mapping status', { mapping: id, err: error });
      }),
    );
    const report = (status: MappingStatus) => {
      entry.state = status.state;
      this.#o.onStatus?.(id, status);
      statusWriter.report(status);
    };
    const hooks: MappingHooks = {
      report,
      columnsSaved: (columns) => {
        entry.ownColumns = hashOf(columns);
        // The table now has these columns (and their types): a run restarted after a failure must map rows
        // with them. The origin stays: inferred columns written back still evolve by default.
        settings = Object.freeze({ ...settings, columns });
      },
      ...(fence !== undefined && { fence }),
    };
    const loop = async () => {
      const signal = controller.signal;
      let failures = 0;
      while (!signal.aborted) {
        try {
          report({ state: 'starting' });
          await this.#o.runMapping(settings, signal, hooks);
          if (!isAborted(signal)) report({ state: 'stopped' });
          return;
        } catch (error) {
          if (dispositionOf(error) === 'fenced-out') {
            // Also on the way out after the lease was lost: the refused write is worth a line.
            this.#o.log.warn(
              'write refused: a newer owner fenced this instance out; stopping this mapping here',
              {
                mapping: id,
                err: error,
              },
            );
            this.#fencedOut(id, entry);
            return;
          }
          if (isAborted(signal)) return;
          failures++;
          const message = errorMessage(error);
          const delay = (this.#o.restartDelayMs ?? defaultRestartDelayMs)(failures, error);
          this.#o.log.error('mapping failed', { mapping: id, err: error, failures, restartInMs: delay });
          await this.#o.store.reportFailure(id, message, fence).catch((reportError: unknown) => {
            this.#o.log.warn('could not write lastFailure', {
              mapping: id,
              err: reportError,
            });
          });
          if (delay === undefined) {
            report({ state: 'failed', message });
            return;
          }
          report({ state: 'retrying', message });
          await sleepUnlessAborted(delay, signal);
        }
      }
    };
    // A stopped mapping is done once its last status is written (before its lease is released).
    const done = loop().finally(() => statusWriter.settled());
    Object.assign(entry, { done });
    this.#running.set(id, entry);
  }

  /**
   * A write of the mapping was refused for a newer fencing token: stop it, and give its lease up. After a
   * real takeover the release changes nothing (the lease is another instance's); but the newer token may
   * also come from a settings document replaced by one carrying another's `status.fence`, and then the
   * mapping would stay stopped under a lease this instance keeps renewing. Released, it is taken again with
   * a token above every stored one.
   */
  #fencedOut(id: string, entry: Running): void {
    entry.controller.abort();
    if (entry.lease !== undefined && this.#held.get(id) === entry.lease) void this.#release(id);
  }

  /**
   * Stops the mapping and waits for it (its final flush and last status write); then writes `farewell` (or
   * the one its entry was given) as its status, under the fencing token it ran with.
   */
  async #stop(id: string, farewell?: MappingStatus): Promise<void> {
    const running = this.#running.get(id);
    if (!running) return;
    this.#running.delete(id);
    this.#stopping.set(running, { id, since: Date.now() });
    const overdue = setTimeout(() => {
      this.#o.log.error('mapping did not stop within the bound; /healthz reports the process unhealthy', {
        mapping: id,
        stopDeadlineMs: this.#stopDeadlineMs(),
      });
    }, this.#stopDeadlineMs());
    try {
      running.controller.abort();
      await running.done;
    } finally {
      clearTimeout(overdue);
      this.#stopping.delete(running);
    }
    const last = farewell ?? running.farewell;
    if (last) await this.#writeFarewell(id, running, last);
  }

  /**
   * The last status of a mapping that no longer runs here. With the fencing token it ran with: after a lost
   * lease the new owner's newer token refuses it once that owner wrote, and the new owner's status stands.
   * The metrics are not told: the mapping's series are dropped (`onRemoved`) as it leaves.
   */
  async #writeFarewell(id: string, running: Running, status: MappingStatus): Promise<void> {
    try {
      await this.#o.store.reportStatus(id, status, running.lease?.token);
    } catch (error) {
      if (dispositionOf(error) === 'fenced-out') {
        this.#o.log.info('the new owner already wrote the status of this mapping; leaving it', {
          mapping: id,
        });
        return;
      }
      this.#o.log.warn('could not write the mapping status', { mapping: id, err: error });
    }
  }
}

/**
 * Writes one mapping's status reports one at a time, in the order they were made. Reports are not awaited
 * by the mapping, and two updates in flight at once may be applied in either order: a `backfilling` report
 * landing after `streaming` left the settings document saying `backfilling` for good. A report made while a
 * write is under way waits for it; several waiting ones are merged into one write (the newest state and
 * message, with the counters the newest does not give carried over from the others).
 */
export class StatusWriter {
  readonly #write: (status: MappingStatus) => Promise<void>;
  #waiting: MappingStatus | undefined;
  #writing: Promise<void> | undefined;

  /** `write` must not reject: it handles its own failures. */
  constructor(write: (status: MappingStatus) => Promise<void>) {
    this.#write = write;
  }

  report(status: MappingStatus): void {
    const { message: _replaced, ...carried } = this.#waiting ?? status;
    this.#waiting = { ...carried, ...status };
    this.#writing ??= this.#drain();
  }

  /** Resolves when every report made so far is written. */
  async settled(): Promise<void> {
    await this.#writing;
  }

  async #drain(): Promise<void> {
    try {
      for (let next = this.#waiting; next !== undefined; next = this.#waiting) {
        this.#waiting = undefined;
        await this.#write(next);
      }
    } finally {
      this.#writing = undefined;
    }
  }
}

function isAborted(signal: AbortSignal): boolean {
  return signal.aborted;
}

/** Waits `ms`, or less when `signal` aborts (an abort here is the normal way out, not an error). */
async function sleepUnlessAborted(ms: number, signal: AbortSignal): Promise<void> {
  try {
    await sleep(ms, undefined, { signal });
  } catch (error) {
    if (!signal.aborted) throw error;
  }
}

/** A copy in random order: instances starting together then try different mappings first. */
function shuffled<T>(items: readonly T[]): T[] {
  const copy = [...items];
  for (let i = copy.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [copy[i], copy[j]] = [copy[j] as T, copy[i] as T];
  }
  return copy;
}
