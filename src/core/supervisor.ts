import { createHash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseMappingSettings, type MappingSettings } from '../config/settings.js';
import { ArchiverError, BigQueryError, ConfigError, IdentifierError, SettingsError } from '../errors.js';
import { type MappingState, type MappingStatus, type SettingsStore } from './ports.js';

/** What a running mapping can tell its supervisor. */
export interface MappingHooks {
  report(status: MappingStatus): void;
  /** The mapping wrote these columns to its settings (inferred or evolved): that write must not restart it. */
  columnsSaved(columns: readonly unknown[]): void;
}

/** Runs one mapping until `signal` aborts (resolve) or it fails (reject). */
export type MappingRunner = (
  settings: MappingSettings,
  signal: AbortSignal,
  hooks: MappingHooks,
) => Promise<void>;

export interface SupervisorLog {
  info(message: string, context?: Record<string, unknown>): void;
  warn(message: string, context?: Record<string, unknown>): void;
  error(message: string, context?: Record<string, unknown>): void;
}

export interface SupervisorOptions {
  readonly store: SettingsStore;
  readonly runMapping: MappingRunner;
  readonly log: SupervisorLog;
  /** Delay before restarting a mapping after its `failures`-th consecutive failure; undefined: do not restart. */
  readonly restartDelayMs?: (failures: number, error: unknown) => number | undefined;
  readonly onStatus?: (id: string, status: MappingStatus) => void;
}

const RETRY_BASE_MS = 1_000;
const RETRY_MAX_MS = 60_000;

/**
 * Restart policy by error class: configuration problems (invalid names, permissions, a lost history with
 * `on_history_lost: fail`) wait for the settings to change; everything else is retried with exponential
 * backoff from 1 s up to a minute.
 */
export function defaultRestartDelayMs(failures: number, error: unknown): number | undefined {
  if (error instanceof ConfigError || error instanceof IdentifierError || error instanceof SettingsError)
    return undefined;
  if (error instanceof BigQueryError && error.failureClass === 'fatal') return undefined;
  if (error instanceof ArchiverError && error.code === 'HISTORY_LOST') return undefined;
  return Math.min(RETRY_MAX_MS, RETRY_BASE_MS * 2 ** Math.min(failures - 1, 16));
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function hashOf(value: unknown): string {
  return createHash('sha256')
    .update(JSON.stringify(value ?? null))
    .digest('hex')
    .slice(0, 16);
}

interface Running {
  readonly settings: MappingSettings;
  /** Configuration key plus the hash of the columns as last seen or saved by the mapping itself. */
  key: string;
  ownColumns: string | undefined;
  state: MappingState;
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
  #listed = false;

  constructor(options: SupervisorOptions) {
    this.#o = options;
  }

  /** Runs until `signal` aborts; then stops every mapping (each flushes and checkpoints) and returns. */
  async run(signal: AbortSignal): Promise<void> {
    try {
      await this.#o.store.ensure(signal);
      while (!signal.aborted) {
        const entries = await this.#o.store.list(signal);
        await this.#reconcile(entries);
        this.#listed = true;
        await this.#o.store.waitForChange(signal).catch((error: unknown) => {
          if (!signal.aborted) throw error;
        });
      }
    } catch (error) {
      if (!signal.aborted) throw error;
    } finally {
      await Promise.all([...this.#running.keys()].map((id) => this.#stop(id)));
    }
  }

  /** Ready once the settings were read and every mapping is backfilling, streaming or in dry-run. */
  ready(): { ready: boolean; detail: Record<string, string> } {
    const detail: Record<string, string> = {};
    for (const [id, r] of this.#running) detail[id] = r.state;
    for (const [id] of this.#invalid) detail[id] = 'invalid';
    const running = [...this.#running.values()];
    const ready =
      this.#listed && running.every((r) => ['backfilling', 'streaming', 'dryrun'].includes(r.state));
    return { ready, detail };
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
        settings = parseMappingSettings(document);
      } catch (error) {
        if (!(error instanceof SettingsError)) throw error;
        await this.#stop(id);
        const message = `invalid settings: ${error.issues.join('; ')}`;
        if (this.#invalid.get(id) !== message) {
          this.#invalid.set(id, message);
          this.#o.log.warn('settings document is invalid; this mapping does not run', {
            mapping: id,
            issues: error.issues,
          });
          await this.#o.store.reportFailure(id, message);
          await this.#o.store.reportStatus(id, { state: 'invalid', message });
        }
        continue;
      }
      this.#invalid.delete(id);
      for (const warning of settings.warnings) this.#o.log.warn(warning, { mapping: id });
      const columnsHash = hashOf(document.columns);
      const running = this.#running.get(id);
      const key = `${settings.configurationKey}:${columnsHash}`;
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
      this.#start(id, settings, key);
    }
    for (const id of [...this.#running.keys()]) {
      if (!seen.has(id)) {
        this.#o.log.info('settings document removed; stopping this mapping', { mapping: id });
        await this.#stop(id);
      }
    }
    for (const id of [...this.#invalid.keys()]) if (!seen.has(id)) this.#invalid.delete(id);
  }

  /** `id` is the settings store's id of the document (the one status and failures are written under). */
  #start(id: string, stored: MappingSettings, key: string): void {
    // The store's id is the one its writes understand (it differs from the parsed one only on id clashes).
    const settings = stored.id === id ? stored : Object.freeze({ ...stored, id });
    const controller = new AbortController();
    const entry: Running = {
      settings,
      key,
      ownColumns: undefined,
      state: 'starting',
      controller,
      done: Promise.resolve(),
    };
    const report = (status: MappingStatus) => {
      entry.state = status.state;
      this.#o.onStatus?.(id, status);
      this.#o.store.reportStatus(id, status).catch((error: unknown) => {
        this.#o.log.warn('could not write the mapping status', { mapping: id, error: errorMessage(error) });
      });
    };
    const hooks: MappingHooks = {
      report,
      columnsSaved: (columns) => {
        entry.ownColumns = hashOf(columns);
      },
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
          if (isAborted(signal)) return;
          failures++;
          const message = errorMessage(error);
          const delay = (this.#o.restartDelayMs ?? defaultRestartDelayMs)(failures, error);
          this.#o.log.error('mapping failed', { mapping: id, error: message, failures, restartInMs: delay });
          await this.#o.store.reportFailure(id, message).catch((reportError: unknown) => {
            this.#o.log.warn('could not write lastFailure', {
              mapping: id,
              error: errorMessage(reportError),
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
    Object.assign(entry, { done: loop() });
    this.#running.set(id, entry);
  }

  async #stop(id: string): Promise<void> {
    const running = this.#running.get(id);
    if (!running) return;
    this.#running.delete(id);
    running.controller.abort();
    await running.done;
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
