import { readFileSync } from 'node:fs';
import { EJSON, serialize, Timestamp, type Document } from 'bson';
import { MongoClient, MongoNetworkError, MongoServerError } from 'mongodb';
import { describe, expect, it } from 'vitest';
import { type StreamStart } from '../../../src/core/ports.js';
import { HistoryLostError } from '../../../src/mongodb/change-source.js';
import { MongoDbError } from '../../../src/mongodb/error-mapping.js';
import {
  isResumableChangeStreamError,
  RawChangeCursor,
  rawChangeStreamsUnavailable,
  SplitStage,
} from '../../../src/mongodb/raw-change-source.js';
import {
  ScriptedCommands,
  serverReply,
  type ScriptedAnswer,
} from '../../support/fakes/change-stream-commands.js';

/** MongoDB 7.0's maxWireVersion. */
const WIRE_7_0 = 21;
const FROM_START: StreamStart = { kind: 'startAt', clusterTime: { t: 1_705_095_870, i: 0 } };

function fixture(name: string): Document {
  return EJSON.parse(readFileSync(new URL(`../../fixtures/change-events/${name}`, import.meta.url), 'utf8'), {
    relaxed: false,
  }) as Document;
}

/** Change events as MongoDB 7.0 sends them (test/fixtures/change-events/real-mongodb-7.json). */
const REAL = fixture('real-mongodb-7.json') as Record<'insert' | 'update' | 'replace' | 'delete', Document>;
const FRAGMENTS = (fixture('real-mongodb-7-split.json') as { fragments: Document[] }).fragments;

/** An event's BSON, as the cursor hands it over. */
function bytesOf(event: Document | undefined): Buffer {
  return Buffer.from(serialize(event ?? {}));
}

function tokenOf(event: Document | undefined): string {
  return (event?._id as { _data: string })._data;
}

/**
 * A high-water-mark token as MongoDB 7.0 sends it as the post-batch resume token of an empty batch: the
 * KeyString of the cluster time and no event.
 */
const HIGH_WATER_MARK = '8265A1B2D0000000012B0229296E04';

/** A server error as the driver makes it from the server's error reply. */
function serverError(
  code: number,
  codeName: string,
  errmsg: string,
  errorLabels?: string[],
): MongoServerError {
  return new MongoServerError({ ok: 0, code, codeName, errmsg, ...(errorLabels ? { errorLabels } : {}) });
}

function open(script: readonly ScriptedAnswer[], start: StreamStart = FROM_START, split = true) {
  const commands = new ScriptedCommands(script);
  const notices: string[] = [];
  const cursor = new RawChangeCursor(commands, start, {
    maxAwaitMs: 0,
    wireVersion: WIRE_7_0,
    split: new SplitStage(split, (reason) => notices.push(reason)),
  });
  return { commands, cursor, notices };
}

const signal = new AbortController().signal;

describe('the raw change stream cursor (issue 11, build 6)', () => {
  it('hands each event over as the bytes the server sent, and the post-batch token of an idle reply as the position', async () => {
    const { commands, cursor } = open([
      serverReply('first', [REAL.insert, REAL.update], { postBatchResumeToken: tokenOf(REAL.update) }),
      serverReply('next', [], { postBatchResumeToken: HIGH_WATER_MARK }),
    ]);
    const first = await cursor.next(100, signal);
    expect(first.changes).toEqual([[bytesOf(REAL.insert)], [bytesOf(REAL.update)]]);
    expect(first.position).toEqual({ token: tokenOf(REAL.update), clusterTime: { t: 1_705_095_876, i: 1 } });
    const idle = await cursor.next(100, signal);
    expect(idle.changes).toEqual([]);
    // The idle stream's position moves on with the cluster: checkpointing it keeps it inside the oplog.
    expect(idle.position).toEqual({ token: HIGH_WATER_MARK, clusterTime: { t: 1_705_095_888, i: 1 } });
    expect(commands.changeStreamStages()).toEqual([
      {
        fullDocument: 'updateLookup',
        startAtOperationTime: new Timestamp({ t: 1_705_095_870, i: 0 }),
      },
    ]);
    expect(commands.calls[0]).toMatchObject({
      pipeline: [
        { $changeStream: {} },
        { $project: { updateDescription: 0 } },
        { $changeStreamSplitLargeEvent: {} },
      ],
    });
    // The cursor id is an int64 beyond 2^53, sent back exactly; the getMore waits at most maxAwait.
    expect(commands.calls[1]).toEqual({
      name: 'getMore',
      id: 7_265_347_382_745_463_811n,
      batchSize: 1_000,
      maxTimeMS: 0,
    });
  });

  it('returns at most maxEvents changes a pull, the rest with the next, positioned on the last one handed over', async () => {
    const { cursor } = open([
      serverReply('first', [REAL.insert, REAL.update, REAL.delete], {
        postBatchResumeToken: tokenOf(REAL.delete),
      }),
    ]);
    const first = await cursor.next(2, signal);
    expect(first.changes).toHaveLength(2);
    expect(first.position?.token).toBe(tokenOf(REAL.update));
    const rest = await cursor.next(2, signal);
    expect(rest.changes).toEqual([[bytesOf(REAL.delete)]]);
    expect(rest.position?.token).toBe(tokenOf(REAL.delete));
  });

  it('resumes after an error the server labels ResumableChangeStreamError, from the last token, and goes on', async () => {
    const { commands, cursor } = open([
      serverReply('first', [REAL.insert], { postBatchResumeToken: tokenOf(REAL.insert), id: 11n }),
      serverError(91, 'ShutdownInProgress', 'The server is in quiesce mode and will shut down', [
        'ResumableChangeStreamError',
      ]),
      serverReply('first', [REAL.update], { postBatchResumeToken: tokenOf(REAL.update), id: 12n }),
    ]);
    expect((await cursor.next(100, signal)).changes).toHaveLength(1);
    const after = await cursor.next(100, signal);
    expect(after.changes).toEqual([[bytesOf(REAL.update)]]);
    expect(commands.calls.map((c) => c.name)).toEqual(['aggregate', 'getMore', 'killCursors', 'aggregate']);
    expect(commands.calls[2]).toEqual({ name: 'killCursors', id: 11n });
    expect(commands.changeStreamStages()[1]).toEqual({
      fullDocument: 'updateLookup',
      resumeAfter: { _data: tokenOf(REAL.insert) },
    });
  });

  it('resumes after a network error; a failure of the resume itself (its aggregate) is thrown', async () => {
    const { commands, cursor } = open([
      serverReply('first', [REAL.insert], { postBatchResumeToken: tokenOf(REAL.insert) }),
      new MongoNetworkError('connection 4 to 127.0.0.1:27017 closed'),
      new MongoNetworkError('connection 5 to 127.0.0.1:27017 closed'),
    ]);
    await cursor.next(100, signal);
    const failure = await cursor.next(100, signal).catch((error: unknown) => error);
    expect(failure).toBeInstanceOf(MongoDbError);
    expect(failure).toMatchObject({
      disposition: 'retryable',
      message: 'connection 5 to 127.0.0.1:27017 closed',
    });
    expect(commands.calls.map((c) => c.name)).toEqual(['aggregate', 'getMore', 'killCursors', 'aggregate']);
  });

  it('review: resumes again, as the driver does, whenever the resume before succeeded (a step-down, then a dropped connection)', async () => {
    const { commands, cursor } = open([
      serverReply('first', [REAL.insert], { postBatchResumeToken: tokenOf(REAL.insert) }),
      new MongoNetworkError('connection 4 to 127.0.0.1:27017 closed'),
      serverReply('first', [], { postBatchResumeToken: tokenOf(REAL.insert) }),
      new MongoNetworkError('connection 5 to 127.0.0.1:27017 closed'),
      serverReply('first', [REAL.update], { postBatchResumeToken: tokenOf(REAL.update) }),
    ]);
    await cursor.next(100, signal);
    const next = await cursor.next(100, signal);
    expect(next.changes).toHaveLength(1);
    expect(commands.calls.filter((c) => c.name === 'aggregate')).toHaveLength(3);
  });

  it('throws an error that is not resumable: one without the label on MongoDB 4.4+, or a fatal one', async () => {
    const unlabelled = open([
      serverReply('first', []),
      serverError(91, 'ShutdownInProgress', 'The server is in quiesce mode and will shut down'),
    ]);
    await expect(unlabelled.cursor.next(100, signal)).rejects.toBeInstanceOf(MongoDbError);
    expect(unlabelled.commands.calls.map((c) => c.name)).toEqual(['aggregate', 'getMore']);
    const fatal = open([serverError(13, 'Unauthorized', 'not authorized on bidding to execute command')]);
    await expect(fatal.cursor.next(100, signal)).rejects.toMatchObject({ disposition: 'fatal' });
    expect(fatal.commands.calls.map((c) => c.name)).toEqual(['aggregate']);
  });

  it('decides resumability as the driver does: labels from wire version 9, a list of codes before, network errors always', () => {
    const labelled = serverError(189, 'PrimarySteppedDown', 'stepped down', ['ResumableChangeStreamError']);
    const unlabelled = serverError(189, 'PrimarySteppedDown', 'stepped down');
    expect(isResumableChangeStreamError(labelled, 21)).toBe(true);
    expect(isResumableChangeStreamError(unlabelled, 21)).toBe(false);
    expect(isResumableChangeStreamError(unlabelled, 8)).toBe(true);
    expect(isResumableChangeStreamError(serverError(43, 'CursorNotFound', 'cursor id 1 not found'), 21)).toBe(
      true,
    );
    expect(isResumableChangeStreamError(serverError(286, 'ChangeStreamHistoryLost', 'gone'), 8)).toBe(false);
    expect(isResumableChangeStreamError(new MongoNetworkError('closed'), 21)).toBe(true);
    expect(isResumableChangeStreamError(new Error('closed'), 21)).toBe(false);
  });

  it('resumes after a socket error the driver passes on unwrapped (EPIPE: a getMore written to a connection the server ended)', () => {
    const epipe = Object.assign(new Error('This socket has been ended by the other party'), {
      code: 'EPIPE',
    });
    expect(isResumableChangeStreamError(epipe, 21)).toBe(true);
    expect(isResumableChangeStreamError(Object.assign(new Error('reset'), { code: 'ECONNRESET' }), 8)).toBe(
      true,
    );
  });

  it('holds the fragments of a split event across two getMores and hands them over together, positioned before it', async () => {
    const before = REAL.insert;
    const [one, two, three] = FRAGMENTS;
    const { cursor } = open([
      serverReply(
        'first',
        [before, one, two].filter((e) => e !== undefined),
        {
          postBatchResumeToken: tokenOf(two),
        },
      ),
      serverReply('next', three ? [three] : [], { postBatchResumeToken: tokenOf(three) }),
      serverReply('next', [REAL.update], { postBatchResumeToken: tokenOf(REAL.update) }),
    ]);
    const batch = await cursor.next(100, signal);
    expect(batch.changes).toEqual([[bytesOf(before)], FRAGMENTS.map((f) => bytesOf(f))]);
    // A fragment's token is no place to resume from once the looked-up document changed: the position
    // stays before the split event.
    expect(batch.position).toEqual({ token: tokenOf(before), clusterTime: { t: 1_705_095_875, i: 1 } });
    const next = await cursor.next(100, signal);
    expect(next.position?.token).toBe(tokenOf(REAL.update));
  });

  it('reads the split event again from the change before it when a resume from a fragment is refused (280)', async () => {
    const [one, two, three] = FRAGMENTS;
    const { commands, cursor } = open([
      serverReply(
        'first',
        [REAL.insert, one].filter((e) => e !== undefined),
        { id: 21n },
      ),
      new MongoNetworkError('connection 4 to 127.0.0.1:27017 closed'),
      serverError(280, 'ChangeStreamFatalError', 'cannot resume stream; the resume token was not found'),
      serverReply(
        'first',
        [one, two, three].filter((e) => e !== undefined),
        { id: 22n },
      ),
    ]);
    // The first pull ends with the change before the split event once the held fragment is dropped; the
    // next reads the whole split event, its first fragment once only.
    expect((await cursor.next(100, signal)).changes.map((c) => c.length)).toEqual([1]);
    const again = await cursor.next(100, signal);
    expect(again.changes).toEqual([FRAGMENTS.map((f) => bytesOf(f))]);
    expect(commands.changeStreamStages().slice(1)).toEqual([
      { fullDocument: 'updateLookup', resumeAfter: { _data: tokenOf(one) } },
      { fullDocument: 'updateLookup', resumeAfter: { _data: tokenOf(REAL.insert) } },
    ]);
  });

  it('continues from an invalidate token with startAfter when the server refuses resumeAfter from it', async () => {
    const invalidate = {
      token: '8265A1B2CB000000012B042C0100296E5A10045A1B2C3D4E5F60718293A4B5C6D7E8F904',
      clusterTime: { t: 1_705_095_883, i: 1 },
    };
    const { commands, cursor } = open(
      [
        serverError(
          260,
          'InvalidResumeToken',
          "Attempting to resume a change stream using 'resumeAfter' is not allowed from an invalidate notification.",
        ),
        serverReply('first', [REAL.insert], { postBatchResumeToken: tokenOf(REAL.insert) }),
      ],
      { kind: 'resumeAfter', position: invalidate },
    );
    const batch = await cursor.next(100, signal);
    expect(batch.changes).toEqual([[bytesOf(REAL.insert)]]);
    expect(commands.changeStreamStages()).toEqual([
      { fullDocument: 'updateLookup', resumeAfter: { _data: invalidate.token } },
      { fullDocument: 'updateLookup', startAfter: { _data: invalidate.token } },
    ]);
  });

  it('reports a position gone from the oplog as HistoryLostError', async () => {
    const { cursor } = open(
      [
        serverError(
          286,
          'ChangeStreamHistoryLost',
          'Resume of change stream was not possible, as the resume point may no longer be in the oplog.',
        ),
      ],
      {
        kind: 'resumeAfter',
        position: { token: tokenOf(REAL.insert), clusterTime: { t: 1_705_095_875, i: 1 } },
      },
    );
    await expect(cursor.next(100, signal)).rejects.toBeInstanceOf(HistoryLostError);
  });

  it('drops $changeStreamSplitLargeEvent when the server refuses it (40324), and says so once', async () => {
    const { commands, cursor, notices } = open([
      serverError(
        40_324,
        'UnrecognizedPipelineStage',
        "Unrecognized pipeline stage name: '$changeStreamSplitLargeEvent'",
      ),
      serverReply('first', [REAL.insert]),
    ]);
    expect((await cursor.next(100, signal)).changes).toHaveLength(1);
    expect(commands.calls.map((c) => (c.name === 'aggregate' ? c.pipeline.length : c.name))).toEqual([3, 2]);
    expect(notices).toEqual([
      "the server refused $changeStreamSplitLargeEvent (Unrecognized pipeline stage name: '$changeStreamSplitLargeEvent')",
    ]);
  });

  it('an abort interrupts a waiting getMore; the next pull reopens from what was handed over, losing nothing', async () => {
    const { commands, cursor } = open([
      serverReply('first', [REAL.insert], { postBatchResumeToken: tokenOf(REAL.insert), id: 31n }),
      'wait-for-abort',
      serverReply('first', [REAL.update], { id: 32n }),
    ]);
    await cursor.next(100, signal);
    const stop = new AbortController();
    const waiting = cursor.next(100, stop.signal);
    stop.abort();
    await expect(waiting).rejects.toThrow();
    const after = await cursor.next(100, signal);
    expect(after.changes).toEqual([[bytesOf(REAL.update)]]);
    expect(commands.calls.slice(2)).toEqual([
      { name: 'killCursors', id: 31n },
      expect.objectContaining({ name: 'aggregate' }),
    ]);
    expect(commands.changeStreamStages()[1]).toMatchObject({ resumeAfter: { _data: tokenOf(REAL.insert) } });
  });

  it('an abort while the rest of a split event is awaited hands over the changes before it; the next pull reads the event whole', async () => {
    const [one, two, three] = FRAGMENTS;
    const { commands, cursor } = open([
      serverReply(
        'first',
        [REAL.insert, one].filter((e) => e !== undefined),
        { id: 51n },
      ),
      'wait-for-abort',
      serverReply(
        'first',
        [two, three].filter((e) => e !== undefined),
        { id: 52n },
      ),
    ]);
    const stop = new AbortController();
    const pulling = cursor.next(100, stop.signal);
    await new Promise((resolve) => setTimeout(resolve, 10));
    stop.abort();
    const batch = await pulling;
    expect(batch.changes).toEqual([[bytesOf(REAL.insert)]]);
    expect(batch.position?.token).toBe(tokenOf(REAL.insert));
    const next = await cursor.next(100, signal);
    expect(next.changes).toEqual([FRAGMENTS.map((f) => bytesOf(f))]);
    expect(commands.changeStreamStages()[1]).toEqual({
      fullDocument: 'updateLookup',
      resumeAfter: { _data: tokenOf(one) },
    });
  });

  it('close kills the server cursor and ends the session', async () => {
    const { commands, cursor } = open([serverReply('first', [], { id: 41n })]);
    await cursor.next(100, signal);
    await cursor.close();
    expect(commands.calls.at(-1)).toEqual({ name: 'killCursors', id: 41n });
    expect(commands.ended).toBe(true);
  });
});

describe('rawChangeStreamsUnavailable', () => {
  const never = new AbortController().signal;
  /** A client that answers `hello` with `reply`, and has the options and read preference given. */
  const clientAnswering = (reply: Document, uri = 'mongodb://127.0.0.1:27017/'): MongoClient => {
    const client = new MongoClient(uri);
    Object.defineProperty(client, 'db', {
      value: () => ({ command: () => Promise.resolve(reply) }),
    });
    return client;
  };

  it('reads raw from a replica set primary, and says why not behind mongos, a load balancer or with a secondary read preference', async () => {
    expect(
      await rawChangeStreamsUnavailable(clientAnswering({ isWritablePrimary: true, setName: 'rs0' }), never),
    ).toBeUndefined();
    expect(await rawChangeStreamsUnavailable(clientAnswering({ msg: 'isdbgrid' }), never)).toMatch(/mongos/);
    expect(
      await rawChangeStreamsUnavailable(
        clientAnswering({ setName: 'rs0' }, 'mongodb://127.0.0.1:27017/?readPreference=secondaryPreferred'),
        never,
      ),
    ).toMatch(/secondaryPreferred/);
    expect(
      await rawChangeStreamsUnavailable(
        clientAnswering({ setName: 'rs0' }, 'mongodb://127.0.0.1:27017/?loadBalanced=true'),
        never,
      ),
    ).toMatch(/load balancer/);
  });
});
