import { setTimeout as sleep } from 'node:timers/promises';
import { type MongoClient } from 'mongodb';
import { connectMongo, connectNamingMongo } from '../app/archiver.js';
import { type BootstrapConfig } from '../config/bootstrap.js';
import { settingsIdString } from '../core/settings.js';
import { ConfigError } from '../errors.js';
import { checkpointsCollectionName } from '../mongodb/checkpoint-store.js';
import { MongoLeaseStore } from '../mongodb/lease-store.js';
import {
  DEFAULT_OPLOG_HEADROOM_WARN_RATIO,
  windowSeconds,
  type OplogWindow,
} from '../core/oplog-headroom.js';
import { mongoOplogProbe, readOplogWindow } from '../mongodb/oplog-window.js';
import { EXIT, loadConfig, type GlobalOptions } from './common.js';
import {
  DEFAULT_TERMINAL_COLUMNS,
  mappingOverview,
  renderStatusTable,
  type EarlierCount,
  keepLagSamples,
  lagBaseline,
  type LagSample,
  type MappingOverview,
} from './status-view.js';

/** The source's oplog as `status` read it: the window, or why the server does not tell it. */
export type OplogWindowOverview =
  { readonly source: string; readonly windowSeconds: number } | { readonly unavailable: string };

/** A mapping's oplog lag at an earlier read of `--watch`, for the rate at which it grows. */
export interface EarlierLag {
  readonly lagSeconds: number;
  readonly atMs: number;
}

/** Seconds between two redraws of `status --watch` when no number is given. */
export const DEFAULT_WATCH_SECONDS = 2;

export interface StatusOptions extends GlobalOptions {
  /** One JSON document (a line per redraw with `watch`) instead of the table. */
  readonly json?: boolean;
  /** Redraw every so many seconds until interrupted; `true`: every DEFAULT_WATCH_SECONDS. */
  readonly watch?: boolean | string;
}

/** What `status --json` prints: where the settings are, when it was read, and every mapping. */
export interface StatusReport {
  /** `<SETTINGS_DATABASE>.<SETTINGS_COLLECTION>` */
  readonly settings: string;
  readonly generatedAt: string;
  readonly mappings: readonly MappingOverview[];
  /** The source's oplog window (the headroom of each mapping is in its `oplog`); absent when the read failed. */
  readonly oplogWindow?: OplogWindowOverview;
}

/** Where `status` writes: the table or the JSON, and whether it may clear the screen between redraws. */
export interface StatusOutput {
  write(text: string): void;
  /** A terminal: `--watch` clears it before each redraw. */
  readonly isTTY?: boolean;
  readonly columns?: number;
}

/**
 * Reads every mapping's settings document, checkpoint and lease holder, and makes the overview at `now`.
 * `earlier` holds the backfill counts of the previous read (`--watch`), for the rate between the two.
 */
export async function readStatus(
  mongo: MongoClient,
  config: Pick<BootstrapConfig, 'SETTINGS_DATABASE' | 'SETTINGS_COLLECTION'> &
    Partial<Pick<BootstrapConfig, 'OPLOG_HEADROOM_WARN_RATIO'>>,
  now: () => number = Date.now,
  earlier?: ReadonlyMap<string, EarlierCount>,
  earlierLags?: ReadonlyMap<string, EarlierLag>,
): Promise<StatusReport> {
  const db = mongo.db(config.SETTINGS_DATABASE);
  const [docs, checkpoints, holders, window] = await Promise.all([
    db.collection(config.SETTINGS_COLLECTION).find({}).toArray(),
    db.collection(checkpointsCollectionName(config.SETTINGS_COLLECTION)).find({}).toArray(),
    new MongoLeaseStore(db.collection(`${config.SETTINGS_COLLECTION}_leases`)).holders(),
    readWindowForStatus(mongo),
  ]);
  const warnRatio = config.OPLOG_HEADROOM_WARN_RATIO ?? DEFAULT_OPLOG_HEADROOM_WARN_RATIO;
  const byId = new Map(checkpoints.map((doc) => [settingsIdString(doc._id), doc]));
  const at = now();
  return {
    settings: `${config.SETTINGS_DATABASE}.${config.SETTINGS_COLLECTION}`,
    generatedAt: new Date(at).toISOString(),
    mappings: docs.map((settings) => {
      const id = settingsIdString(settings._id);
      const lag = earlierLags?.get(id);
      return mappingOverview(
        { settings, checkpoint: byId.get(id), holder: holders.get(id)?.owner },
        at,
        earlier?.get(id),
        window.window && { window: window.window, warnRatio, ...(lag && { earlier: lag }) },
      );
    }),
    ...(window.overview && { oplogWindow: window.overview }),
  };
}

/**
 * The source's oplog window for `status`, read once for every mapping as the daemon's guard reads it. A
 * failed read leaves the headroom out rather than failing `status`, which is most needed when things go wrong.
 */
async function readWindowForStatus(
  mongo: MongoClient,
): Promise<{ window?: OplogWindow; overview?: OplogWindowOverview }> {
  try {
    const reading = await readOplogWindow(mongoOplogProbe(mongo), new AbortController().signal);
    if (reading.kind === 'unavailable') return { overview: { unavailable: reading.message } };
    const { window } = reading;
    return { window, overview: { source: window.source, windowSeconds: windowSeconds(window) } };
  } catch {
    return {};
  }
}

/** The report as `status` prints it: the table, or one line of JSON. */
export function renderStatus(
  report: StatusReport,
  json: boolean,
  columns = DEFAULT_TERMINAL_COLUMNS,
): string {
  if (json) return `${JSON.stringify(report)}\n`;
  if (report.mappings.length === 0) return `no mappings in ${report.settings}\n`;
  return `${renderStatusTable(report.mappings, Date.parse(report.generatedAt), columns).join('\n')}\n`;
}

/** `--watch`'s interval in milliseconds; undefined without `--watch`. */
export function watchIntervalMs(watch: StatusOptions['watch']): number | undefined {
  if (watch === undefined || watch === false) return undefined;
  if (watch === true) return DEFAULT_WATCH_SECONDS * 1_000;
  const seconds = Number(watch);
  if (!Number.isFinite(seconds) || seconds < 0.5 || seconds > 3_600) {
    throw new ConfigError(`--watch: expected seconds between 0.5 and 3600, got ${JSON.stringify(watch)}`);
  }
  return Math.round(seconds * 1_000);
}

/**
 * Prints the status once, or with `--watch` every interval until `signal` aborts (the rate of a backfill
 * then comes from the change between two reads). Clears a terminal before each redraw; JSON is a line a read.
 */
export async function showStatus(
  config: BootstrapConfig,
  options: Pick<StatusOptions, 'json' | 'watch'>,
  out: StatusOutput,
  signal?: AbortSignal,
): Promise<number> {
  const interval = watchIntervalMs(options.watch);
  const json = options.json === true;
  const mongo = connectMongo(config);
  try {
    await connectNamingMongo(mongo, config.MONGO_CLIENT);
    let earlier: Map<string, EarlierCount> | undefined;
    // Each mapping's lag over the last minute or so: the rate is measured against lagBaseline, not the
    // previous redraw (see MIN_LAG_RATE_WINDOW_MS).
    let lagSamples = new Map<string, LagSample[]>();
    for (;;) {
      const nowMs = Date.now();
      const earlierLags = new Map(
        [...lagSamples].flatMap(([id, kept]) => {
          const base = lagBaseline(kept, nowMs);
          return base ? [[id, base] as const] : [];
        }),
      );
      const report = await readStatus(mongo, config, Date.now, earlier, earlierLags);
      let text = renderStatus(report, json, out.columns ?? DEFAULT_TERMINAL_COLUMNS);
      if (interval !== undefined && !json) {
        const title = `${report.settings} at ${report.generatedAt}, every ${String(interval / 1_000)}s (Ctrl-C to stop)\n`;
        text = `${out.isTTY === true ? '\x1b[H\x1b[2J' : '\n'}${title}${text}`;
      }
      out.write(text);
      if (interval === undefined || signal?.aborted === true) return EXIT.ok;
      const at = Date.parse(report.generatedAt);
      earlier = new Map(
        report.mappings.flatMap((m) =>
          m.backfill ? [[m.id, { copied: m.backfill.copied, at }] as const] : [],
        ),
      );
      lagSamples = new Map(
        report.mappings.flatMap((m) =>
          m.oplog
            ? [
                [
                  m.id,
                  keepLagSamples(lagSamples.get(m.id) ?? [], { lagSeconds: m.oplog.lagSeconds, atMs: at }),
                ] as const,
              ]
            : [],
        ),
      );
      try {
        await sleep(interval, undefined, signal ? { signal } : {});
      } catch {
        return EXIT.ok;
      }
    }
  } finally {
    await mongo.close();
  }
}

/**
 * `status`: one aligned row per mapping (state, lag, backfill progress, holder, last failure), or with
 * `--json` one JSON document; `--watch` redraws until Ctrl-C.
 */
export async function statusCommand(options: StatusOptions): Promise<number> {
  const config = loadConfig(options);
  watchIntervalMs(options.watch);
  const stop = new AbortController();
  const onSignal = () => {
    stop.abort();
  };
  process.once('SIGINT', onSignal);
  try {
    return await showStatus(
      config,
      options,
      {
        write: (text) => process.stdout.write(text),
        isTTY: process.stdout.isTTY,
        columns: process.stdout.columns,
      },
      stop.signal,
    );
  } finally {
    process.off('SIGINT', onSignal);
  }
}
