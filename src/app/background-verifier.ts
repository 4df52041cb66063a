import { setTimeout as sleep } from 'node:timers/promises';
import { SYSTEM_CLOCK, type Clock, type IdRange, type MappingState } from '../core/ports.js';
import { type MappingSettings } from '../core/settings.js';
import { type MappingVerifier, type VerifyReport } from '../core/verify-model.js';
import { type Logger } from '../observability/logger.js';
import { type Metrics, type VerifyRunSummary } from '../observability/metrics.js';

/** How often the background verifier looks for a mapping whose verification is due. */
export const DEFAULT_BACKGROUND_VERIFY_TICK_MS = 30_000;

/** A mapping as the background verifier sees it: its current settings and when it was last verified. */
export interface VerifyCandidate {
  readonly settings: MappingSettings;
  /** When its last verification finished (kept with its checkpoint, so a restart does not run it early). */
  readonly lastVerifiedAt: Date | undefined;
  /**
   * A repair of the mapping is pending or running (or a verification is owed after a lost history): no new
   * request then, since each restarts the mapping and would interrupt it, and the ranges are being repaired.
   */
  readonly repairOwed?: boolean;
}

export interface BackgroundVerifierOptions {
  /** The mappings this daemon runs now, by id, and their state (`Supervisor.states()`). */
  readonly states: () => ReadonlyMap<string, MappingState>;
  /** Every valid mapping's current settings, read from its settings document each time (see `verify`). */
  readonly candidates: (signal: AbortSignal) => Promise<readonly VerifyCandidate[]>;
  readonly verifier: (settings: MappingSettings) => MappingVerifier;
  /** Keeps what a run found where `status` reads it. */
  readonly record: (settings: MappingSettings, report: VerifyReport, signal: AbortSignal) => Promise<void>;
  /** Asks for a repair of `ranges` (reason `background`). */
  readonly requestRepair: (
    settings: MappingSettings,
    ranges: readonly IdRange[],
    signal: AbortSignal,
  ) => Promise<void>;
  readonly log: Logger;
  readonly metrics?: Metrics;
  readonly clock?: Clock;
  readonly tickMs?: number;
}

/** The `mba_verify_*` figures of a report. */
export function verificationSummary(report: VerifyReport): VerifyRunSummary {
  return {
    rangesChecked: report.rangesChecked,
    rangesDiffering: report.differingRanges.length,
    missing: report.missing.count,
    extra: report.extra.count,
    differing: report.differing.count,
    bytesScanned: report.bytesScanned,
    finishedAt: report.finishedAt,
  };
}

/**
 * Verifies, in the background, the mappings whose settings document has `verify` and that stream on this
 * daemon (a mapping still copying its collection, or owned by another instance, is left alone): each at
 * its interval, a share of its ranges per run (the verifier takes them in turn, so that runs cover all),
 * and one verification at a time per daemon, so that verification never competes with itself for MongoDB
 * reads and BigQuery slots. Each run sets the `mba_verify_*` metrics and is recorded for `status`; with
 * `repair: true` the ranges it found differing are repaired.
 */
export class BackgroundVerifier {
  readonly #o: BackgroundVerifierOptions;
  readonly #clock: Clock;
  /** When a run of a mapping last ended in this process, failed runs included (they wait an interval too). */
  readonly #attempted = new Map<string, number>();
  /**
   * One verifier per mapping, kept while its configuration and columns stay the same: a verifier takes its
   * share of the ranges in turn from where its previous run stopped, so a new one each run would start over.
   */
  readonly #verifiers = new Map<string, { readonly key: string; readonly verifier: MappingVerifier }>();
  /**
   * Per mapping, the ranges (rangeKey) this verifier asked to repair: a range that still differs once its
   * repair was served holds differences a repair cannot fix (a dead-lettered document, an id the view spells
   * otherwise), reported rather than repaired again. Forgotten when a run finds the range equal or does not
   * check it (with a share below 1), so that a later difference there is repaired; in memory only, so a
   * restart repairs such a range once more.
   */
  readonly #repaired = new Map<string, ReadonlySet<string>>();

  constructor(options: BackgroundVerifierOptions) {
    this.#o = options;
    this.#clock = options.clock ?? SYSTEM_CLOCK;
  }

  /** Looks every `tickMs` until `signal` aborts. */
  async run(signal: AbortSignal): Promise<void> {
    for (;;) {
      try {
        await this.tick(signal);
      } catch (error) {
        if (signal.aborted) return;
        this.#o.log.warn({ err: error }, 'background verifier: could not read the mappings; trying again');
      }
      try {
        await sleep(this.#o.tickMs ?? DEFAULT_BACKGROUND_VERIFY_TICK_MS, undefined, { signal });
      } catch {
        // Aborted: the daemon stops.
        return;
      }
    }
  }

  /** One look: verifies, one after the other, every mapping due now. Returns how many were verified. */
  async tick(signal: AbortSignal): Promise<number> {
    const states = this.#o.states();
    const candidates = await this.#o.candidates(signal);
    let verified = 0;
    for (const candidate of candidates) {
      signal.throwIfAborted();
      const { settings } = candidate;
      const verify = settings.verify;
      if (!verify || states.get(settings.id) !== 'streaming') continue;
      const last = Math.max(
        candidate.lastVerifiedAt?.getTime() ?? Number.NEGATIVE_INFINITY,
        this.#attempted.get(settings.id) ?? Number.NEGATIVE_INFINITY,
      );
      if (this.#clock.now() - last < verify.intervalMinutes * 60_000) continue;
      await this.#verify(settings, verify.share, verify.repair && candidate.repairOwed !== true, signal);
      verified++;
    }
    return verified;
  }

  #verifierOf(settings: MappingSettings): MappingVerifier {
    // What a verifier is built from: not the whole configuration, whose key a repair request changes too.
    const key = JSON.stringify([
      settings.mongoDatabase,
      settings.mongoCollection,
      settings.bigqueryDataset ?? null,
      settings.bigqueryTable,
      settings.captureUnmapped,
      settings.columns ?? null,
    ]);
    const kept = this.#verifiers.get(settings.id);
    if (kept?.key === key) return kept.verifier;
    const verifier = this.#o.verifier(settings);
    this.#verifiers.set(settings.id, { key, verifier });
    return verifier;
  }

  /** Asks for a repair of the differing ranges, but not again of those a repair did not fix. */
  async #repair(settings: MappingSettings, report: VerifyReport, signal: AbortSignal): Promise<void> {
    const log = this.#o.log;
    const before = this.#repaired.get(settings.id) ?? new Set<string>();
    const unfixed = report.differingRanges.filter((range) => before.has(rangeKey(range)));
    const ranges = report.differingRanges.filter((range) => !before.has(rangeKey(range)));
    // Until the request is recorded, only the ranges already asked for count as asked for.
    this.#repaired.set(settings.id, new Set(unfixed.map(rangeKey)));
    if (unfixed.length > 0) {
      log.warn(
        {
          mapping: settings.id,
          ranges: unfixed,
          missing: report.missing,
          extra: report.extra,
          differing: report.differing,
        },
        'background verification: differences a repair did not fix; reported, not repaired again',
      );
    }
    if (ranges.length === 0) return;
    await this.#o.requestRepair(settings, ranges, signal);
    this.#repaired.set(settings.id, new Set(report.differingRanges.map(rangeKey)));
    log.info({ mapping: settings.id, ranges: ranges.length }, 'background verification: repair requested');
  }

  async #verify(settings: MappingSettings, share: number, repair: boolean, signal: AbortSignal) {
    const log = this.#o.log;
    try {
      const report = await this.#verifierOf(settings).verify({ share }, signal);
      this.#o.metrics?.verified(settings.id, verificationSummary(report));
      await this.#o.record(settings, report, signal);
      const differing = report.differingRanges.length;
      log.info(
        {
          mapping: settings.id,
          rangesChecked: report.rangesChecked,
          rangesDiffering: differing,
          missing: report.missing.count,
          extra: report.extra.count,
          differing: report.differing.count,
          bytesScanned: report.bytesScanned,
        },
        differing === 0
          ? 'background verification: no difference'
          : 'background verification found differences',
      );
      if (repair) await this.#repair(settings, report, signal);
    } catch (error) {
      if (signal.aborted) throw error;
      // Deliberately not fatal: the mapping streams on; the next run comes after the interval.
      log.warn(
        { mapping: settings.id, err: error },
        'background verification failed; trying again after the interval',
      );
    } finally {
      this.#attempted.set(settings.id, this.#clock.now());
    }
  }
}

/** A range as a key (its bounds are canonical Extended JSON, so equal ranges have equal keys). */
function rangeKey(range: IdRange): string {
  return JSON.stringify([range.after ?? null, range.upTo ?? null]);
}
