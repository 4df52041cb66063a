import { type Document, type MongoClient } from 'mongodb';
import { errorMessage } from '../errors.js';
import {
  compareClusterTime,
  comparePositions,
  sharedPosition,
  type ClusterTime,
  type Position,
} from '../core/model.js';
import {
  type ChangeCursor,
  type PullShape,
  type RawChange,
  type RawChangeBatch,
  type SharedStreamSource,
  type StreamStart,
} from '../core/ports.js';
import {
  elementFinder,
  embeddedDocument,
  readTopLevelFields,
  stringValue,
  type BsonElement,
} from './bson-fields.js';
import { clusterTimeFromToken, toClusterTime } from './change-event.js';
import { currentClusterTime, tokenData, type MongoChangeSourceOptions } from './change-source.js';
import { codeOf, MONGO_CODES, mongoBoundary, toMongoError } from './error-mapping.js';
import { helloOf, RawChangeStreams } from './raw-change-source.js';

/** Changes of the whole database, which concern every collection of it: they pass any collection filter. */
const DATABASE_WIDE = ['dropDatabase', 'invalidate'] as const;

/**
 * The server-side filter of a database-level stream read for `collections` of `database`: their changes, a
 * rename onto one of them (a collection-level stream of the target sees it too, and is invalidated by it),
 * and the database-wide changes.
 */
export function databaseStreamMatch(database: string, collections: readonly string[]): Document {
  return {
    $or: [
      { 'ns.coll': { $in: [...collections] } },
      { operationType: 'rename', 'to.db': database, 'to.coll': { $in: [...collections] } },
      { operationType: { $in: [...DATABASE_WIDE] } },
    ],
  };
}

/**
 * The change stream of a whole source database, read as BSON bytes (CHANGE_STREAM_SCOPE `database`): one
 * server-side cursor for the mappings of all its collections, filtered on the server to theirs. It is the
 * raw cursor of MongoRawChangeSource on another target (`aggregate: 1` on the database), with the same
 * pipeline, start points and resume rules; it resumes from its own post-batch token, which the server moves
 * past the changes the filter leaves out.
 */
export class MongoDatabaseStreamSource implements SharedStreamSource<RawChangeBatch> {
  readonly #streams: RawChangeStreams;

  constructor(
    private readonly client: MongoClient,
    private readonly database: string,
    options: MongoChangeSourceOptions = {},
  ) {
    this.#streams = new RawChangeStreams(client, database, { kind: 'database' }, options);
  }

  /**
   * Why the server refuses this database's stream (see databaseStreamRefusal), or undefined when it opens
   * one: a cursor is opened at the current cluster time, read once without waiting, and closed. Any other
   * failure is thrown (and retried as usual by the caller).
   */
  async refusal(signal: AbortSignal): Promise<string | undefined> {
    const probe = new RawChangeStreams(this.client, this.database, { kind: 'database' }, { maxAwaitMs: 0 });
    try {
      const start: StreamStart = {
        kind: 'startAt',
        clusterTime: await currentClusterTime(this.client, signal),
      };
      const cursor = await probe.open(start, databaseStreamMatch(this.database, []), signal);
      try {
        await cursor.next(1, signal);
      } finally {
        await cursor.close();
      }
      return undefined;
    } catch (error) {
      const refusal = databaseStreamRefusal(error);
      if (refusal === undefined) throw toMongoError(error);
      return refusal;
    }
  }

  open(
    start: StreamStart,
    collections: readonly string[],
    signal: AbortSignal,
  ): Promise<ChangeCursor<RawChangeBatch>> {
    return mongoBoundary(async () => {
      // An empty `$in` would keep the database-wide changes only: a stream for nobody.
      if (collections.length === 0)
        throw new Error('a database-level change stream needs collections to read');
      return this.#streams.open(start, databaseStreamMatch(this.database, collections), signal);
    });
  }
}

/** What routing a change needs, read from its bytes. */
interface Route {
  readonly operationType: string | undefined;
  /** `ns.coll`: the collection changed (renamed from, for a rename); absent for database-wide changes. */
  readonly collection: string | undefined;
  /** `to.coll` of a rename within the database. */
  readonly renamedTo: string | undefined;
}

const ROUTE_FIELDS = elementFinder(['operationType', 'ns', 'to'] as const);
const NAMESPACE_FIELDS = elementFinder(['db', 'coll'] as const);

/** A namespace (`ns`, `to`) of a change: `db` and `coll`, each undefined when absent. */
function namespaceOf(
  fragment: Uint8Array,
  element: BsonElement | undefined,
): { readonly db: string | undefined; readonly coll: string | undefined } {
  const embedded = element && embeddedDocument(fragment, element);
  if (embedded === undefined) return { db: undefined, coll: undefined };
  const { db, coll } = NAMESPACE_FIELDS(embedded);
  return { db: db && stringValue(embedded, db), coll: coll && stringValue(embedded, coll) };
}

/**
 * Where a change goes, from its first fragment with an `operationType` (of a split event, the first
 * fragment holds `operationType` and `ns`; the others only what did not fit). Only the routing fields are
 * read, found by their names' bytes: the walk skips over the rest by size.
 */
function routeOf(change: RawChange): Route {
  for (const fragment of change) {
    const fields = ROUTE_FIELDS(fragment);
    const operationType = fields.operationType && stringValue(fragment, fields.operationType);
    if (operationType === undefined) continue;
    const ns = namespaceOf(fragment, fields.ns);
    const to = operationType === 'rename' ? namespaceOf(fragment, fields.to) : undefined;
    return {
      operationType,
      collection: ns.coll,
      renamedTo: to?.db !== undefined && to.db === ns.db ? to.coll : undefined,
    };
  }
  return { operationType: undefined, collection: undefined, renamedTo: undefined };
}

/** Where a change stands in the stream: its last fragment's token, its first fragment's cluster time. */
function positionOfChange(change: RawChange): Position | undefined {
  const first = change[0];
  const last = change.at(-1);
  if (first === undefined || last === undefined) return undefined;
  const token = tokenData(readTopLevelFields(last, ['_id'])._id);
  if (token === undefined) return undefined;
  const time: unknown = readTopLevelFields(first, ['clusterTime']).clusterTime;
  // mongo-java-server's invalidate has no cluster time; its token carries one.
  const clusterTime: ClusterTime | undefined =
    time === undefined ? clusterTimeFromToken(token) : toClusterTime(time);
  return clusterTime && { token, clusterTime };
}

/**
 * The position of one collection's part of a pull: the pull's, as a resume point any stream accepts (see
 * Position's `shared`) unless the pull ended with this collection's own change, whose token its own stream
 * resumes after as well.
 */
function partPosition(pull: RawChangeBatch, changes: readonly RawChange[]): Position | undefined {
  const position = pull.position;
  if (position === undefined) return undefined;
  const last = changes.at(-1);
  const own = last === undefined ? undefined : positionOfChange(last);
  return own?.token.toUpperCase() === position.token.toUpperCase() ? position : sharedPosition(position);
}

/** MongoDB's KeyString resume tokens (hex, `82` and the cluster time first): they compare in stream order. */
const KEYSTRING_TOKEN = /^82[0-9a-fA-F]+$/;

/**
 * Whether `change` comes after `position`; in doubt (a change whose position cannot be read, the same
 * cluster time with tokens that are not both KeyStrings) it does: a change kept twice is written twice and
 * the views keep one row per `_seq`, a change dropped is lost.
 */
function comesAfter(change: RawChange, position: Position): boolean {
  const own = positionOfChange(change);
  if (own === undefined) return true;
  const byTime = compareClusterTime(own.clusterTime, position.clusterTime);
  if (byTime !== 0) return byTime > 0;
  if (own.token.toUpperCase() === position.token.toUpperCase()) return false;
  if (!KEYSTRING_TOKEN.test(own.token) || !KEYSTRING_TOKEN.test(position.token)) return true;
  return comparePositions(own, position) > 0;
}

/**
 * The fan-out's view of raw pulls (PullShape of RawChangeBatch): each change is routed by `ns.coll` read
 * from its bytes, nothing else of it decoded. A database-wide change (`dropDatabase`, or the `invalidate`
 * that follows it on a database-level stream) goes to every collection; a `rename` to the collection renamed
 * from, and to the one renamed onto when it is read too (its own stream would end there as well). A `drop`
 * of a collection carries its `ns.coll` like any change of it (on a database-level stream no `invalidate`
 * follows it).
 */
export const rawPullShape: PullShape<RawChangeBatch> = {
  split(pull, collections) {
    const parts = new Map<string, RawChange[]>();
    const add = (collection: string, change: RawChange): void => {
      const part = parts.get(collection);
      if (part) part.push(change);
      else parts.set(collection, [change]);
    };
    for (const change of pull.changes) {
      const route = routeOf(change);
      if (DATABASE_WIDE.some((type) => type === route.operationType)) {
        for (const collection of collections) add(collection, change);
        continue;
      }
      if (route.collection !== undefined && collections.has(route.collection)) add(route.collection, change);
      if (
        route.renamedTo !== undefined &&
        route.renamedTo !== route.collection &&
        collections.has(route.renamedTo)
      ) {
        add(route.renamedTo, change);
      }
    }
    return new Map(
      [...parts].map(([collection, changes]) => [
        collection,
        { changes, position: partPosition(pull, changes) },
      ]),
    );
  },
  after(pull, position) {
    return {
      changes: pull.changes.filter((change) => comesAfter(change, position)),
      position: pull.position,
    };
  },
  empty(position) {
    return { changes: [], position };
  },
  position(pull) {
    return pull.position;
  },
  count(pull) {
    return pull.changes.length;
  },
};

/** The oldest wire version with database-level change streams (MongoDB 4.0). */
const DATABASE_STREAMS_WIRE_VERSION = 7;

/**
 * Why this deployment cannot open database-level change streams, or undefined when it can: MongoDB opens
 * them on replica sets and sharded clusters (`hello` reports `setName`, or `msg: 'isdbgrid'`) from 4.0. A
 * server that reports neither (a standalone; mongo-java-server, whose database-level `watch()` accepts the
 * command and then silently reports nothing) gets per-collection streams.
 */
export async function databaseStreamsUnavailable(
  client: MongoClient,
  signal: AbortSignal,
): Promise<string | undefined> {
  const hello = await helloOf(client, signal);
  const replicated = typeof hello.setName === 'string' || hello.msg === 'isdbgrid';
  if (!replicated) {
    return 'the server reports neither a replica set (setName) nor mongos: it cannot be trusted with a database-level change stream';
  }
  const wireVersion = typeof hello.maxWireVersion === 'number' ? hello.maxWireVersion : 0;
  if (wireVersion < DATABASE_STREAMS_WIRE_VERSION) {
    return `the server's wire version ${String(wireVersion)} is older than MongoDB 4.0, which brought database-level change streams`;
  }
  return undefined;
}

/**
 * Server codes with which a database-level stream is refused where a collection-level one may still be
 * allowed: a user granted `changeStream` on some collections only (Unauthorized), a server or proxy that
 * does not support the command on a whole database (CommandNotFound 59, IllegalOperation 20,
 * CommandNotSupported 115, and 40573, "$changeStream is only supported on replica sets").
 */
const REFUSED_CODES: ReadonlySet<number> = new Set([MONGO_CODES.Unauthorized, 20, 59, 115, 40_573]);

/**
 * Why opening a database-level stream failed in a way per-collection streams may get past (a refusal: see
 * REFUSED_CODES), or undefined for any other failure (which is retried as usual). Reads the driver's error,
 * or the cause our boundary kept.
 */
export function databaseStreamRefusal(error: unknown): string | undefined {
  const cause: unknown = error instanceof Error && error.cause !== undefined ? error.cause : error;
  const code = codeOf(cause) ?? codeOf(error);
  if (code === undefined || !REFUSED_CODES.has(code)) return undefined;
  return `the server refused a database-level change stream (code ${String(code)}: ${errorMessage(cause)})`;
}
