/** What a test peer needs from the machine before it can be installed. */
export interface Prerequisite {
  /** Command looked up on PATH (or an absolute path). */
  readonly command: string;
  /** Arguments printing a version, used to check the command really runs. */
  readonly versionArgs: readonly string[];
  /** One line telling a newcomer how to get it. */
  readonly hint: string;
}

export interface PeerContext {
  /** Download and build cache for this peer (outside the repository, survives runs). */
  readonly cacheDir: string;
  /** Per-run folder for logs and data; lives under `.peers/` in the repository (git-ignored). */
  readonly runDir: string;
  readonly log: (message: string) => void;
}

export interface StartedPeer {
  /** Environment variables handed to the tests (endpoints, project id...). */
  readonly env: Readonly<Record<string, string>>;
  readonly pid: number;
  readonly logFile: string;
  /** Stops the peer and every process it started; resolves when they are gone. */
  stop(): Promise<void>;
  /**
   * Leaves the peer running after this process exits (`demo --keep`): `peers stop`, or the next start in
   * the same run folder, stops it.
   */
  keep(): void;
}

export type PeerKind = 'mongodb' | 'bigquery';

export interface PeerDefinition {
  readonly name: string;
  readonly kind: PeerKind;
  readonly version: string;
  readonly prerequisites: readonly Prerequisite[];
  /** Idempotent: returns quickly when the pinned version is already in the cache. */
  install(ctx: PeerContext): Promise<void>;
  /** Starts on free loopback ports and resolves once the peer answers its health check. */
  start(ctx: PeerContext): Promise<StartedPeer>;
}
