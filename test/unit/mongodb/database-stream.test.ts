import { readFileSync } from 'node:fs';
import { deserialize, EJSON, serialize, Timestamp, type Document } from 'bson';
import { MongoClient, MongoNetworkError, MongoServerError } from 'mongodb';
import { describe, expect, it } from 'vitest';
import { sharedPosition, type Position } from '../../../src/core/model.js';
import { type RawChange, type RawChangeBatch, type StreamStart } from '../../../src/core/ports.js';
import {
  databaseStreamMatch,
  databaseStreamRefusal,
  databaseStreamsUnavailable,
  MongoDatabaseStreamSource,
  rawPullShape,
} from '../../../src/mongodb/database-stream.js';
import { toMongoError } from '../../../src/mongodb/error-mapping.js';
import { RAW_BATCH_OPTIONS, RawChangeCursor, SplitStage } from '../../../src/mongodb/raw-change-source.js';
import { ScriptedCommands, serverReply } from '../../support/fakes/change-stream-commands.js';

/**
 * A database-level stream's events in the MongoDB 7.0 manual's shapes
 * (test/fixtures/change-events/real-mongodb-7-database.json): database `bidding`, `ad_cpta` and `ad_spend`
 * mapped, `audit_log` not.
 */
const EVENTS = EJSON.parse(
  readFileSync(new URL('../../fixtures/change-events/real-mongodb-7-database.json', import.meta.url), 'utf8'),
  { relaxed: false },
) as Record<string, Document> & Record<'transaction' | 'dropDatabase' | 'splitSpend', Document[]>;

function event(name: string): Document {
  const found = EVENTS[name];
  if (found === undefined || Array.isArray(found)) throw new Error(`no single event ${name} in the fixture`);
  return found;
}

/** A whole event as the raw cursor hands it over: its BSON, one fragment. */
function change(document: Document | undefined): RawChange {
  return [serialize(document ?? {})];
}

function tokenOf(document: Document | undefined): string {
  return (document?._id as { _data: string })._data;
}

function positionOf(document: Document | undefined): Position {
  const time = document?.clusterTime as Timestamp;
  return { token: tokenOf(document), clusterTime: { t: time.t, i: time.i } };
}

/** The post-batch token of a pull: a high-water mark after the last event of the fixture. */
const PULL_POSITION: Position = {
  token: '8265A1B4000000000A2B0229296E04',
  clusterTime: { t: 1_705_096_192, i: 10 },
};

function pullOf(...changes: RawChange[]): RawChangeBatch {
  return { changes, position: PULL_POSITION };
}

const MAPPED: ReadonlySet<string> = new Set(['ad_cpta', 'ad_spend']);

/** The parts of a split as plain arrays of the changes' bytes, by collection. */
function parts(split: ReadonlyMap<string, RawChangeBatch>): Record<string, readonly RawChange[]> {
  return Object.fromEntries([...split].map(([collection, part]) => [collection, part.changes]));
}

describe('rawPullShape: a database-level pull split by collection, read from the bytes (issue 12)', () => {
  it('gives each mapped collection its own changes in stream order, with the pull position, and leaves the others out', () => {
    const insertCpta = change(event('insertCpta'));
    const insertSpend = change(event('insertSpend'));
    const updateSpend = change(event('updateSpend'));
    const replaceCpta = change(event('replaceCpta'));
    const deleteSpend = change(event('deleteSpend'));
    const pull = pullOf(
      insertCpta,
      insertSpend,
      updateSpend,
      change(event('insertUnmapped')),
      replaceCpta,
      deleteSpend,
    );
    const split = rawPullShape.split(pull, MAPPED);
    expect(parts(split)).toEqual({
      ad_cpta: [insertCpta, replaceCpta],
      ad_spend: [insertSpend, updateSpend, deleteSpend],
    });
    // The pull's position, marked as a database stream's: a collection's own stream may not hold the change
    // it names, so it is resumed at its cluster time (see Position).
    expect([...split.values()].map((part) => part.position)).toEqual([
      sharedPosition(PULL_POSITION),
      sharedPosition(PULL_POSITION),
    ]);
    // A pull that ends with a collection's own change: that part keeps the token (its own stream holds it).
    const endsWithSpend = rawPullShape.split(
      { changes: [insertCpta, deleteSpend], position: positionOf(event('deleteSpend')) },
      MAPPED,
    );
    expect(endsWithSpend.get('ad_spend')?.position).toEqual(positionOf(event('deleteSpend')));
    expect(endsWithSpend.get('ad_cpta')?.position).toEqual(sharedPosition(positionOf(event('deleteSpend'))));
    // The very bytes the cursor handed over: nothing is decoded or copied.
    expect(split.get('ad_cpta')?.changes[0]).toBe(insertCpta);
    // A collection without a change in the pull gets no part.
    expect(parts(rawPullShape.split(pullOf(insertSpend), MAPPED))).toEqual({ ad_spend: [insertSpend] });
  });

  it('gives a drop to its collection alone (no invalidate follows it on a database-level stream)', () => {
    const drop = change(event('dropCpta'));
    const insert = change(event('insertSpend'));
    expect(parts(rawPullShape.split(pullOf(drop, insert), MAPPED))).toEqual({
      ad_cpta: [drop],
      ad_spend: [insert],
    });
  });

  it('gives a rename to the collection renamed from, and to a mapped one renamed onto within the database', () => {
    const renamed = change(event('renameSpend'));
    const onto = change(event('renameOntoCpta'));
    const elsewhere = change(event('renameToOtherDatabase'));
    expect(parts(rawPullShape.split(pullOf(renamed, onto, elsewhere), MAPPED))).toEqual({
      ad_spend: [renamed, elsewhere],
      // `to` names ad_cpta of another database in `elsewhere`: not this one's.
      ad_cpta: [onto],
    });
  });

  it('gives dropDatabase and the invalidate after it to every collection, a drop of each to its own', () => {
    const [dropCpta, dropSpend, dropDatabase, invalidate] = EVENTS.dropDatabase.map(change);
    const pull = pullOf(...EVENTS.dropDatabase.map(change));
    const everyone = new Set([...MAPPED, 'ad_empty']);
    expect(parts(rawPullShape.split(pull, everyone))).toEqual({
      ad_cpta: [dropCpta, dropDatabase, invalidate],
      ad_spend: [dropSpend, dropDatabase, invalidate],
      // A mapped collection that never existed still hears that its database is gone.
      ad_empty: [dropDatabase, invalidate],
    });
  });

  it('routes a split event by the namespace of its first fragment, its fragments kept together', () => {
    const split: RawChange = EVENTS.splitSpend.map((fragment) => serialize(fragment));
    const insert = change(event('insertCpta'));
    expect(parts(rawPullShape.split(pullOf(insert, split), MAPPED))).toEqual({
      ad_cpta: [insert],
      ad_spend: [split],
    });
  });

  it('after: keeps the changes after a position, by cluster time and then token', () => {
    const insertCpta = change(event('insertCpta'));
    const insertSpend = change(event('insertSpend'));
    const updateSpend = change(event('updateSpend'));
    const pull = pullOf(insertCpta, insertSpend, updateSpend);
    expect(rawPullShape.after(pull, positionOf(event('insertCpta')))).toEqual({
      changes: [insertSpend, updateSpend],
      position: PULL_POSITION,
    });
    expect(rawPullShape.after(pull, positionOf(event('updateSpend'))).changes).toEqual([]);
    // A post-batch high-water mark between two changes (after the first's cluster time, before the next's).
    const between: Position = {
      token: '8265A1B341000000022B0229296E04',
      clusterTime: { t: 1_705_096_001, i: 2 },
    };
    expect(rawPullShape.after(pull, between).changes).toEqual([updateSpend]);
    const earlier: Position = {
      token: '8265A1B0D8000000012B0229296E04',
      clusterTime: { t: 1_705_095_384, i: 1 },
    };
    expect(rawPullShape.after(pull, earlier).changes).toEqual(pull.changes);
  });

  it('after: orders the changes of one transaction (one cluster time) by their tokens', () => {
    const [first, second] = EVENTS.transaction;
    const pull = pullOf(change(first), change(second));
    expect(rawPullShape.after(pull, positionOf(first)).changes).toEqual([change(second)]);
    expect(rawPullShape.after(pull, positionOf(second)).changes).toEqual([]);
  });

  it('after: in doubt keeps the change (the same cluster time and a token that is not a KeyString)', () => {
    const [first, second] = EVENTS.transaction;
    const pull = pullOf(change(first), change(second));
    const time = positionOf(first).clusterTime;
    // mongo-java-server's tokens are the cluster time's 16 hex digits alone.
    const foreign: Position = { token: '65A1B6C600000002', clusterTime: time };
    expect(rawPullShape.after(pull, foreign).changes).toEqual(pull.changes);
  });

  it('after: places a split event by its first fragment’s cluster time and its last fragment’s token', () => {
    const split: RawChange = EVENTS.splitSpend.map((fragment) => serialize(fragment));
    const pull = pullOf(split);
    const [firstFragment, lastFragment] = EVENTS.splitSpend;
    const time = positionOf(firstFragment).clusterTime;
    expect(rawPullShape.after(pull, { token: tokenOf(lastFragment), clusterTime: time }).changes).toEqual([]);
    expect(rawPullShape.after(pull, { token: tokenOf(firstFragment), clusterTime: time }).changes).toEqual([
      split,
    ]);
  });

  it('empty, position and count', () => {
    expect(rawPullShape.empty(PULL_POSITION)).toEqual({ changes: [], position: PULL_POSITION });
    expect(rawPullShape.empty(undefined)).toEqual({ changes: [], position: undefined });
    const pull = pullOf(
      change(event('insertCpta')),
      EVENTS.splitSpend.map((fragment) => serialize(fragment)),
    );
    expect(rawPullShape.count(pull)).toBe(2);
    expect(rawPullShape.position(pull)).toBe(PULL_POSITION);
  });
});

const FROM_START: StreamStart = { kind: 'startAt', clusterTime: { t: 1_705_095_990, i: 0 } };

/** One command a fake client ran, with the database it ran on. */
interface Ran {
  readonly database: string;
  readonly command: Document;
}

/**
 * A client whose commands are answered from `answers` by command name (aggregate and getMore replies go
 * through BSON and come back as the driver's `db.command` hands them with RAW_BATCH_OPTIONS), and recorded.
 */
function fakeClient(answers: Readonly<Record<string, Answer | Answer[]>>): {
  client: MongoClient;
  ran: Ran[];
} {
  const client = new MongoClient('mongodb://127.0.0.1:27017/');
  const ran: Ran[] = [];
  Object.defineProperty(client, 'db', {
    value: (database: string) => ({
      command: (command: Document, options?: { fieldsAsRaw?: unknown }) => {
        ran.push({ database, command });
        const name = Object.keys(command)[0] ?? '';
        const answer = nextAnswer(answers[name]) ?? { ok: 1 };
        if (answer instanceof Error) return Promise.reject(answer);
        const reply =
          options?.fieldsAsRaw === undefined ? answer : deserialize(serialize(answer), RAW_BATCH_OPTIONS);
        return Promise.resolve(reply);
      },
    }),
  });
  return { client, ran };
}

type Answer = Document | Error;

/** A list answers one call each, its last item every call after; a single answer answers every call. */
function nextAnswer(scripted: Answer | Answer[] | undefined): Answer | undefined {
  if (!Array.isArray(scripted)) return scripted;
  const list: Answer[] = scripted;
  return list.length > 1 ? list.shift() : list[0];
}

/** `hello` of a MongoDB 7.0 replica set primary without sessions (so the fake needs none). */
const REPLICA_SET_HELLO = {
  isWritablePrimary: true,
  setName: 'rs0',
  maxWireVersion: 21,
  ok: 1,
  operationTime: new Timestamp({ t: 1_705_096_000, i: 1 }),
};
const BUILD_INFO_7 = { version: '7.0.2', versionArray: [7, 0, 2, 0], ok: 1 };

describe('MongoDatabaseStreamSource (issue 12)', () => {
  const signal = new AbortController().signal;

  it('runs the raw cursor on the database: aggregate 1, filtered to the collections, getMore and killCursors on $cmd.aggregate', async () => {
    const insert = event('insertCpta');
    const { client, ran } = fakeClient({
      buildInfo: BUILD_INFO_7,
      hello: REPLICA_SET_HELLO,
      aggregate: serverReply('first', [insert], { id: 31n, postBatchResumeToken: tokenOf(insert) }),
      getMore: serverReply('next', [], { id: 31n, postBatchResumeToken: PULL_POSITION.token }),
    });
    const source = new MongoDatabaseStreamSource(client, 'bidding', { maxAwaitMs: 0 });
    const cursor = await source.open(FROM_START, ['ad_cpta', 'ad_spend'], signal);
    const pulled = await cursor.next(100, signal);
    expect(pulled.changes).toEqual([change(insert)]);
    const idle = await cursor.next(100, signal);
    expect(idle.position?.token).toBe(PULL_POSITION.token);
    await cursor.close();
    const onDatabase = ran.filter((r) => r.database === 'bidding').map((r) => r.command);
    expect(onDatabase[0]).toEqual({
      aggregate: 1,
      pipeline: [
        {
          $changeStream: {
            fullDocument: 'updateLookup',
            startAtOperationTime: new Timestamp({ t: 1_705_095_990, i: 0 }),
          },
        },
        {
          $match: {
            $or: [
              { 'ns.coll': { $in: ['ad_cpta', 'ad_spend'] } },
              { operationType: 'rename', 'to.db': 'bidding', 'to.coll': { $in: ['ad_cpta', 'ad_spend'] } },
              { operationType: { $in: ['dropDatabase', 'invalidate'] } },
            ],
          },
        },
        { $project: { updateDescription: 0 } },
        { $changeStreamSplitLargeEvent: {} },
      ],
      cursor: { batchSize: 1_000 },
    });
    expect(onDatabase.slice(1)).toContainEqual({
      getMore: 31n,
      collection: '$cmd.aggregate',
      batchSize: 1_000,
      maxTimeMS: 0,
    });
    expect(onDatabase.at(-1)).toEqual({ killCursors: '$cmd.aggregate', cursors: [31n] });
  });

  it('resumes with the same filter: every aggregate it runs keeps only the mapped collections', async () => {
    const commands = new ScriptedCommands([
      new MongoNetworkError('connection reset'),
      serverReply('first', [event('insertSpend')]),
    ]);
    const match = databaseStreamMatch('bidding', ['ad_spend']);
    const cursor = new RawChangeCursor(commands, FROM_START, {
      maxAwaitMs: 0,
      wireVersion: 21,
      split: new SplitStage(false, () => undefined),
      match,
    });
    await cursor.next(100, signal);
    const pipelines = commands.calls.flatMap((call) => (call.name === 'aggregate' ? [call.pipeline] : []));
    expect(pipelines).toHaveLength(2);
    for (const pipeline of pipelines)
      expect(pipeline.slice(1)).toEqual([{ $match: match }, { $project: { updateDescription: 0 } }]);
  });

  it('goes on after dropDatabase: once the server closed the cursor at the invalidate, it continues startAfter it', async () => {
    const dropping = EVENTS.dropDatabase;
    const invalidate = dropping.at(-1);
    const recreated = event('insertUnmapped');
    const { client, ran } = fakeClient({
      buildInfo: BUILD_INFO_7,
      hello: REPLICA_SET_HELLO,
      aggregate: [
        // The server closes a change stream's cursor (id 0) with its invalidate.
        serverReply('first', dropping, {
          id: 0n,
          postBatchResumeToken: tokenOf(invalidate),
        }),
        serverReply('first', [recreated], { id: 32n, postBatchResumeToken: tokenOf(recreated) }),
      ],
    });
    const source = new MongoDatabaseStreamSource(client, 'bidding', { maxAwaitMs: 0 });
    const cursor = await source.open(FROM_START, ['ad_cpta', 'ad_spend', 'audit_log'], signal);
    expect((await cursor.next(100, signal)).changes).toHaveLength(4);
    expect((await cursor.next(100, signal)).changes).toEqual([change(recreated)]);
    const stages = ran
      .filter((r) => r.database === 'bidding' && r.command.aggregate === 1)
      .map((r) => (r.command.pipeline as { $changeStream: Document }[])[0]?.$changeStream);
    expect(stages).toEqual([
      { fullDocument: 'updateLookup', startAtOperationTime: new Timestamp({ t: 1_705_095_990, i: 0 }) },
      { fullDocument: 'updateLookup', startAfter: { _data: tokenOf(invalidate) } },
    ]);
    await cursor.close();
  });

  it('a collection’s raw stream stays idle after its invalidate (its reader ends there and opens anew)', async () => {
    const commands = new ScriptedCommands([
      serverReply('first', [event('dropCpta')], { id: 0n, postBatchResumeToken: tokenOf(event('dropCpta')) }),
    ]);
    const cursor = new RawChangeCursor(commands, FROM_START, {
      maxAwaitMs: 0,
      wireVersion: 21,
      split: new SplitStage(false, () => undefined),
    });
    expect((await cursor.next(100, signal)).changes).toHaveLength(1);
    expect((await cursor.next(100, signal)).changes).toEqual([]);
    expect(commands.calls.filter((call) => call.name === 'aggregate')).toHaveLength(1);
  });

  it('refuses to open for no collection (an empty filter would stream nothing but database drops)', async () => {
    const { client } = fakeClient({ buildInfo: BUILD_INFO_7, hello: REPLICA_SET_HELLO });
    await expect(
      new MongoDatabaseStreamSource(client, 'bidding').open(FROM_START, [], signal),
    ).rejects.toThrow(/needs collections/);
  });

  it('refusal: the reason when the server refuses the database stream (Unauthorized), undefined when it opens, other failures thrown', async () => {
    const unauthorized = new MongoServerError({
      ok: 0,
      code: 13,
      codeName: 'Unauthorized',
      errmsg: 'not authorized on bidding to execute command { aggregate: 1 }',
    });
    const refusing = fakeClient({
      buildInfo: BUILD_INFO_7,
      hello: REPLICA_SET_HELLO,
      aggregate: unauthorized,
    });
    expect(await new MongoDatabaseStreamSource(refusing.client, 'bidding').refusal(signal)).toMatch(
      /refused a database-level change stream \(code 13: not authorized on bidding/,
    );
    const opening = fakeClient({
      buildInfo: BUILD_INFO_7,
      hello: REPLICA_SET_HELLO,
      aggregate: serverReply('first', [], { id: 0n }),
    });
    expect(await new MongoDatabaseStreamSource(opening.client, 'bidding').refusal(signal)).toBeUndefined();
    const down = new MongoServerError({
      ok: 0,
      code: 91,
      codeName: 'ShutdownInProgress',
      errmsg: 'shutting down',
    });
    const failing = fakeClient({ buildInfo: BUILD_INFO_7, hello: REPLICA_SET_HELLO, aggregate: down });
    await expect(new MongoDatabaseStreamSource(failing.client, 'bidding').refusal(signal)).rejects.toThrow(
      /shutting down/,
    );
  });
});

describe('can this deployment open database-level streams (issue 12)', () => {
  const never = new AbortController().signal;
  const hello = (reply: Document) => fakeClient({ hello: reply }).client;

  it('yes on a replica set or behind mongos from MongoDB 4.0', async () => {
    expect(await databaseStreamsUnavailable(hello(REPLICA_SET_HELLO), never)).toBeUndefined();
    expect(
      await databaseStreamsUnavailable(hello({ msg: 'isdbgrid', maxWireVersion: 21 }), never),
    ).toBeUndefined();
    expect(
      await databaseStreamsUnavailable(hello({ setName: 'rs0', maxWireVersion: 7 }), never),
    ).toBeUndefined();
  });

  it('no, with the reason, on a server that is neither (mongo-java-server, a standalone) or older than 4.0', async () => {
    // mongo-java-server's hello: a writable primary with no setName (its db.watch() reports nothing).
    expect(
      await databaseStreamsUnavailable(hello({ isWritablePrimary: true, maxWireVersion: 8 }), never),
    ).toMatch(/neither a replica set/);
    expect(await databaseStreamsUnavailable(hello({ setName: 'rs0', maxWireVersion: 6 }), never)).toMatch(
      /older than MongoDB 4\.0/,
    );
  });

  it('databaseStreamRefusal names refusals (whether wrapped at our boundary or not) and nothing else', () => {
    const refused = new MongoServerError({
      ok: 0,
      code: 13,
      codeName: 'Unauthorized',
      errmsg: 'not authorized',
    });
    expect(databaseStreamRefusal(refused)).toMatch(/code 13: not authorized/);
    expect(databaseStreamRefusal(toMongoError(refused))).toMatch(/code 13: not authorized/);
    const unsupported = new MongoServerError({
      ok: 0,
      code: 115,
      codeName: 'CommandNotSupported',
      errmsg: 'no',
    });
    expect(databaseStreamRefusal(unsupported)).toMatch(/code 115/);
    const network = new MongoServerError({ ok: 0, code: 6, codeName: 'HostUnreachable', errmsg: 'gone' });
    expect(databaseStreamRefusal(network)).toBeUndefined();
    expect(databaseStreamRefusal(new Error('no code'))).toBeUndefined();
  });
});
