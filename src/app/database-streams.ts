import { type MongoClient } from 'mongodb';
import { FanOut, type FanOutBounds } from '../core/fan-out.js';
import { type ChangeSource, type RawChangeBatch, type SharedStreamSource } from '../core/ports.js';
import { type ChangeStreamScope } from '../core/settings.js';
import {
  databaseStreamRefusal,
  databaseStreamsUnavailable,
  rawPullShape,
} from '../mongodb/database-stream.js';
import { rawChangeStreamsUnavailable } from '../mongodb/raw-change-source.js';
import { supervisorLog, type Logger } from '../observability/logger.js';

/** How the daemon reads change streams (CHANGE_STREAM_SCOPE and what the deployment allows), and why. */
export interface StreamScopeChoice {
  readonly scope: ChangeStreamScope;
  readonly reason: string;
}

/**
 * Decides once, at start, whether mappings share one change stream per source database: CHANGE_STREAM_SCOPE
 * `database` asks for it; it is read raw (so not where raw streams cannot be: mongos, a load balancer, a
 * secondary read preference, see rawChangeStreamsUnavailable) and needs a replica set or sharded cluster
 * from MongoDB 4.0 (see databaseStreamsUnavailable). Otherwise every mapping reads its own stream.
 */
export async function chooseStreamScope(
  mongo: MongoClient,
  configured: ChangeStreamScope,
  signal: AbortSignal,
): Promise<StreamScopeChoice> {
  if (configured === 'collection') {
    return { scope: 'collection', reason: 'CHANGE_STREAM_SCOPE is collection' };
  }
  const raw = await rawChangeStreamsUnavailable(mongo, signal);
  if (raw !== undefined) {
    return {
      scope: 'collection',
      reason: `a database-level stream is read raw, which it cannot be here: ${raw}`,
    };
  }
  const database = await databaseStreamsUnavailable(mongo, signal);
  if (database !== undefined) return { scope: 'collection', reason: database };
  return { scope: 'database', reason: 'one change stream per source database, shared by its mappings' };
}

/** A database's shared stream, which can tell whether the server refuses it (MongoDatabaseStreamSource). */
export interface ProbedStreamSource extends SharedStreamSource<RawChangeBatch> {
  /** Why the server refuses this database's stream, or undefined when it opens one. */
  refusal(signal: AbortSignal): Promise<string | undefined>;
}

export interface DatabaseStreamsOptions {
  /** Whether mappings share their database's stream at all (see chooseStreamScope). */
  readonly scope: ChangeStreamScope;
  /** The shared stream of one database (MongoDatabaseStreamSource in the daemon). */
  readonly sharedSource: (database: string) => ProbedStreamSource;
  readonly logger: Logger;
  /** The daemon's stop: a probe under way ends with it. */
  readonly signal: AbortSignal;
  readonly bounds?: FanOutBounds;
}

/**
 * The daemon's registry of shared change streams: one FanOut per source database, made when the first
 * mapping of that database asks for its source. The first time, the server is asked once whether it opens
 * the database's stream; where it refuses (the user may read some collections only, say), that database's
 * mappings read their own streams, as with CHANGE_STREAM_SCOPE `collection`, and the log says so once, with
 * the reason. A probe that fails otherwise (the network) is asked again by the next mapping.
 */
/** A database whose stream the server refused: its mappings read their own streams. */
const REFUSED: Promise<undefined> = Promise.resolve(undefined);

export class DatabaseStreams {
  readonly #options: DatabaseStreamsOptions;
  readonly #databases = new Map<string, Promise<FanOut<RawChangeBatch> | undefined>>();

  constructor(options: DatabaseStreamsOptions) {
    this.#options = options;
  }

  /** Whether a mapping may read a shared stream (it still may not, where its database's is refused). */
  get shared(): boolean {
    return this.#options.scope === 'database';
  }

  /**
   * The source a mapping of `database`.`collection` reads: its share of the database's stream (`own` is its
   * collection's own raw stream, read until it catches up), or undefined when it reads `own` alone.
   */
  async source(
    database: string,
    collection: string,
    own: ChangeSource<RawChangeBatch>,
  ): Promise<ChangeSource<RawChangeBatch> | undefined> {
    if (!this.shared) return undefined;
    const fanOut = await this.#fanOut(database);
    return fanOut?.source(collection, own);
  }

  #fanOut(database: string): Promise<FanOut<RawChangeBatch> | undefined> {
    let made = this.#databases.get(database);
    if (made === undefined) {
      made = this.#make(database);
      this.#databases.set(database, made);
      // A probe that failed is asked again by the next mapping (a refusal is an answer, kept).
      made.catch(() => {
        if (this.#databases.get(database) === made) this.#databases.delete(database);
      });
    }
    return made;
  }

  async #make(database: string): Promise<FanOut<RawChangeBatch> | undefined> {
    const { logger, signal, bounds } = this.#options;
    const shared = this.#options.sharedSource(database);
    const refusal = await shared.refusal(signal);
    if (refusal !== undefined) {
      logger.warn(
        { database, reason: refusal },
        'the mappings of this database read one change stream each: the server refused a database-level one',
      );
      return undefined;
    }
    // Refused later (a privilege revoked while the daemon runs): the mappings it failed restart, and from then
    // on read their own streams instead of failing on the shared one again and again.
    const watched: SharedStreamSource<RawChangeBatch> = {
      open: (start, collections, s) =>
        shared.open(start, collections, s).catch((error: unknown) => {
          const reason = databaseStreamRefusal(error);
          if (reason !== undefined && this.#databases.get(database) !== REFUSED) {
            this.#databases.set(database, REFUSED);
            logger.warn(
              { database, reason },
              'the mappings of this database read one change stream each from now on: the server refused the database-level one',
            );
          }
          throw error;
        }),
    };
    return new FanOut({
      shared: watched,
      shape: rawPullShape,
      log: supervisorLog(logger.child({ database })),
      ...bounds,
    });
  }
}

/** The raw stream a mapping reads, and whether it is its share of its database's stream. */
export interface RawStreamChoice {
  readonly source: ChangeSource<RawChangeBatch>;
  readonly shared: boolean;
}

export interface RawStreamOptions {
  /** The daemon's shared streams; undefined: none (every mapping reads its own stream). */
  readonly streams: DatabaseStreams | undefined;
  readonly database: string;
  readonly collection: string;
  /** The collection's own raw stream; undefined where change streams are not read raw. */
  readonly own: ChangeSource<RawChangeBatch> | undefined;
  /** Whether `own` is read when no shared stream is (worker threads prepare raw pulls). */
  readonly ownAlone: boolean;
  /** Wraps what the mapping reads (tests put a short oplog window in front of it). */
  readonly decorate?: ((source: ChangeSource<RawChangeBatch>) => ChangeSource<RawChangeBatch>) | undefined;
}

/**
 * What a mapping's stream loop reads raw: its share of its database's stream where the daemon shares them
 * and the server allows it; else its own raw stream, when worker threads prepare it; else undefined (the
 * mapping reads its own stream decoded). The decoration applies to whatever is read.
 */
export async function chooseRawStream(options: RawStreamOptions): Promise<RawStreamChoice | undefined> {
  const { own, decorate } = options;
  if (own === undefined) return undefined;
  const shared = await options.streams?.source(options.database, options.collection, own);
  const source = shared ?? (options.ownAlone ? own : undefined);
  if (source === undefined) return undefined;
  return { source: decorate?.(source) ?? source, shared: shared !== undefined };
}
