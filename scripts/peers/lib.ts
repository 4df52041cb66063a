import { mkdirSync } from 'node:fs';
import { peersCacheRoot, peersRunRoot } from './paths.js';
import {
  assertPrerequisites,
  killProcessGroupNow,
  reapStalePeers,
  startWatchdog,
  tailFile,
} from './process.js';
import { type PeerContext, type PeerDefinition, type StartedPeer } from './types.js';

export function peerContext(
  log: (message: string) => void = (m) => process.stderr.write(`[peers] ${m}\n`),
): PeerContext {
  const cacheDir = peersCacheRoot();
  const runDir = peersRunRoot();
  mkdirSync(cacheDir, { recursive: true });
  mkdirSync(runDir, { recursive: true });
  return { cacheDir, runDir, log };
}

export async function installPeers(peers: readonly PeerDefinition[], ctx: PeerContext): Promise<void> {
  for (const peer of peers) assertPrerequisites(peer.name, peer.prerequisites);
  for (const peer of peers) await peer.install(ctx);
}

export interface RunningPeers {
  readonly env: Readonly<Record<string, string>>;
  readonly peers: readonly StartedPeer[];
  /** The last lines of every peer's log, for a failure report. */
  logTails(lines?: number): string;
  stop(): Promise<void>;
  /** Leaves every peer running after this process exits; `peers stop` in the same run folder stops them. */
  keep(): void;
}

const live = new Set<StartedPeer>();
let exitHookInstalled = false;

/** Starts the peers (installing first if needed); every one of them is killed when this process exits. */
export async function startPeers(peers: readonly PeerDefinition[], ctx: PeerContext): Promise<RunningPeers> {
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    // Last resort when the runner dies abruptly: no awaiting is possible in an exit handler.
    process.once('exit', () => {
      for (const p of live) killProcessGroupNow(p.pid);
    });
  }
  await reapStalePeers(ctx.runDir, ctx.log);
  startWatchdog(ctx.runDir);
  await installPeers(peers, ctx);
  const started: StartedPeer[] = [];
  const stop = async () => {
    await Promise.all(
      started.map(async (p) => {
        await p.stop();
        live.delete(p);
      }),
    );
  };
  try {
    await Promise.all(
      peers.map(async (peer) => {
        const t0 = performance.now();
        const s = await peer.start(ctx);
        started.push(s);
        live.add(s);
        ctx.log(
          `${peer.name} ${peer.version} ready in ${Math.round(performance.now() - t0)} ms (pid ${s.pid})`,
        );
      }),
    );
  } catch (error) {
    await stop();
    throw error;
  }
  return {
    env: Object.assign({}, ...started.map((s) => s.env)) as Record<string, string>,
    peers: started,
    logTails: (lines = 60) =>
      started
        .map((s) => `----- ${s.logFile} (last ${lines} lines) -----\n${tailFile(s.logFile, lines)}`)
        .join('\n'),
    stop,
    keep: () => {
      for (const p of started) {
        p.keep();
        live.delete(p);
      }
    },
  };
}
