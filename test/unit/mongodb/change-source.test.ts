import { readFileSync } from 'node:fs';
import { EJSON, serialize, Timestamp, type Document } from 'bson';
import { describe, expect, it } from 'vitest';
import { changeRecord } from '../../../src/core/history-rows.js';
import { type ChangeStreamOptions, type Collection, MongoServerError } from 'mongodb';
import { type ChangeEvent, type Position } from '../../../src/core/model.js';
import { runStreamLoop } from '../../../src/core/stream-loop.js';
import { HistoryLostError, MongoChangeSource } from '../../../src/mongodb/change-source.js';
import { compileRowMapper } from '../../../src/transform/row-mapper.js';
import { bsonWithBytes } from '../../support/fakes/raw-bson.js';
import { FakeChangeCollection, fakeClient } from '../../support/fakes/change-stream.js';

const signal = new AbortController().signal;
const INVALID = new Uint8Array([0x61, 0xff, 0x62, 0xc3, 0x28]);

/** A change event as a replica set sends it (token: cluster time in hex, as the peers' tokens are). */
function insert(t: number, document: Document): Document {
  const token = t.toString(16).padStart(8, '0') + '00000001';
  return {
    _id: { _data: token },
    operationType: 'insert',
    clusterTime: new Timestamp({ t, i: 1 }),
    documentKey: { _id: document._id as unknown },
    fullDocument: document,
  };
}

function splitFixture(): Document[] {
  const text = readFileSync(
    new URL('../../fixtures/change-events/real-mongodb-7-split.json', import.meta.url),
    'utf8',
  );
  return (EJSON.parse(text, { relaxed: false }) as { fragments: Document[] }).fragments;
}

async function readAll(
  source: MongoChangeSource,
  pulls = 5,
): Promise<{ events: ChangeEvent[]; last: unknown }> {
  const cursor = await source.open({ kind: 'startAt', clusterTime: { t: 1, i: 0 } }, signal);
  const events: ChangeEvent[] = [];
  let last: unknown;
  for (let i = 0; i < pulls; i++) {
    const batch = await cursor.next(1_000, signal);
    events.push(...batch.events);
    if (batch.events.length > 0) last = batch.position;
  }
  await cursor.close();
  return { events, last };
}

describe('change events over 16 MB (issue 10 item 13)', () => {
  it('issue 10 item 13: the pipeline drops updateDescription and, on MongoDB 7.0, ends with $changeStreamSplitLargeEvent', async () => {
    const collection = new FakeChangeCollection([]);
    const source = new MongoChangeSource(fakeClient('7.0.4'), collection.asCollection(), { maxAwaitMs: 0 });
    await readAll(source, 1);
    expect(collection.watches[0]?.pipeline).toEqual([
      { $project: { updateDescription: 0 } },
      { $changeStreamSplitLargeEvent: {} },
    ]);
    expect(collection.watches[0]?.options).toMatchObject({ fullDocument: 'updateLookup' });
  });

  it('issue 10 item 13: the fragments of a split event are read as one change, checkpointed before it', async () => {
    const before = insert(1_702_567_500, { _id: 9, largeField: 'x' });
    const collection = new FakeChangeCollection([before, ...splitFixture()].map((e) => serialize(e)));
    const source = new MongoChangeSource(fakeClient('6.0.9'), collection.asCollection(), { maxAwaitMs: 0 });
    const { events, last } = await readAll(source);
    expect(events.map((e) => e.kind)).toEqual(['upsert', 'upsert']);
    const split = events[1];
    expect(split).toMatchObject({
      kind: 'upsert',
      operationType: 'update',
      documentId: 0,
      document: { _id: 0, largeField: 'bbbb' },
      clusterTime: { t: 1702567514, i: 1 },
      // The last fragment's token: resuming after it continues with the next event.
      token: '82657B1E5A000000012B042C0100296E5A10049C1E2F3A4B5C6D7E8F9A0B1C2D3E4F5A46645F69640029000008',
    });
    // The batch ends on the split event, yet the position handed out for the checkpoint is the whole
    // event before it: MongoDB resumes from a fragment only if the event splits the same way again.
    expect(last).toEqual({ token: '657b1e4c00000001', clusterTime: { t: 1702567500, i: 1 } });
  });

  it('issue 10 item 13: a resume from a fragment that the server refuses (280) reads the event again from the change before it', async () => {
    const before = insert(1_702_567_500, { _id: 9, largeField: 'x' });
    const fragments = splitFixture();
    const firstToken = (fragments[0]?._id as { _data: string })._data;
    const collection = new FakeChangeCollection(
      [before, ...fragments].map((e) => serialize(e)),
      {
        hasSplitStage: true,
        failAfter: { token: firstToken, code: 280 },
      },
    );
    const source = new MongoChangeSource(fakeClient('7.0.4'), collection.asCollection(), { maxAwaitMs: 0 });
    const { events } = await readAll(source);
    expect(events.map((e) => (e.kind === 'upsert' ? e.document._id : e.kind))).toEqual([9, 0]);
    expect(collection.watches.at(-1)?.options).toMatchObject({ resumeAfter: { _data: '657b1e4c00000001' } });
  });

  it('issue 10 item 13 (review finding 3): a split event read first after startAt never becomes the checkpoint; the next whole change does', async () => {
    const fragments = splitFixture();
    const after = insert(1_702_567_520, { _id: 9, largeField: 'y' });
    const collection = new FakeChangeCollection([...fragments, after].map((e) => serialize(e)));
    const source = new MongoChangeSource(fakeClient('7.0.4'), collection.asCollection(), { maxAwaitMs: 0 });
    const fragmentTokens = fragments.map(tokenOf);
    const saved: (string | undefined)[] = [];
    const written: unknown[] = [];
    const stop = new AbortController();
    const mapper = compileRowMapper([{ name: 'largeField', type: 'STRING' }]);
    // The first stream after a backfill starts at a cluster time; one row makes a batch due at once, as a
    // document over 16 MB does against the byte limit.
    await runStreamLoop(
      {
        source,
        sink: {
          write: (records) => {
            written.push(...records.map((r) => r.row()._event_id));
            return Promise.resolve({ written: records.length, deadLettered: 0 });
          },
        },
        checkpoints: {
          load: () => Promise.resolve({ position: undefined }),
          save: (checkpoint) => {
            saved.push(checkpoint.position?.token);
            // Read until the change after the split event is checkpointed (or a few saves, on old code).
            if (checkpoint.position?.token === tokenOf(after) || saved.length >= 3) stop.abort();
            return Promise.resolve();
          },
        },
        mapper: () => mapper,
        limits: { maxRows: 1, maxBytes: 1_000_000, maxRowBytes: 1_000_000, lingerMs: 60_000 },
        // The split event alone in its batch, as when the next change is not there yet.
        batchSize: 1,
      },
      { kind: 'startAt', clusterTime: { t: 1, i: 0 } },
      stop.signal,
    );
    expect(written).toEqual([fragmentTokens.at(-1), tokenOf(after)]);
    // A fragment's token is refused by MongoDB (280) once the looked-up document changed: never saved.
    expect(saved.filter((token) => token !== undefined && fragmentTokens.includes(token))).toEqual([]);
    expect(saved).toEqual([tokenOf(after)]);
  });

  it('issue 10 item 13 (review finding 3): stopped before the next change, nothing is saved and a restart reads the split event again under the same _event_id', async () => {
    const collection = new FakeChangeCollection(splitFixture().map((e) => serialize(e)));
    const source = new MongoChangeSource(fakeClient('7.0.4'), collection.asCollection(), { maxAwaitMs: 0 });
    const mapper = compileRowMapper([{ name: 'largeField', type: 'STRING' }]);
    const start = { kind: 'startAt', clusterTime: { t: 1, i: 0 } } as const;
    const run = async () => {
      const written: unknown[] = [];
      const saved: unknown[] = [];
      const stop = new AbortController();
      await runStreamLoop(
        {
          source,
          sink: {
            write: (records) => {
              written.push(...records.map((r) => r.row()._event_id));
              // Stopped (a restart) once the split event is written.
              stop.abort();
              return Promise.resolve({ written: records.length, deadLettered: 0 });
            },
          },
          checkpoints: {
            load: () => Promise.resolve({ position: undefined }),
            save: (checkpoint) => {
              saved.push(checkpoint.position);
              return Promise.resolve();
            },
          },
          mapper: () => mapper,
          limits: { maxRows: 1, maxBytes: 1_000_000, maxRowBytes: 1_000_000, lingerMs: 60_000 },
        },
        start,
        stop.signal,
      );
      return { written, saved };
    };
    const first = await run();
    expect(first.saved).toEqual([]);
    // Nothing saved: the restart starts where the first run did, and the row it writes again is the same.
    const second = await run();
    expect(second.written).toEqual(first.written);
    expect(first.written).toEqual([tokenOf(splitFixture().at(-1))]);
  });

  it('issue 10 item 13 (review finding 3): a checkpoint on a fragment (saved by an earlier version) that MongoDB refuses (280) is a lost history, as documented', async () => {
    const fragments = splitFixture();
    const lastFragment = tokenOf(fragments.at(-1));
    const collection = new FakeChangeCollection(
      fragments.map((e) => serialize(e)),
      { hasSplitStage: true, failAfter: { token: lastFragment, code: 280 } },
    );
    const source = new MongoChangeSource(fakeClient('7.0.4'), collection.asCollection(), { maxAwaitMs: 0 });
    const position: Position = { token: lastFragment, clusterTime: { t: 1_702_567_514, i: 1 } };
    const cursor = await source.open({ kind: 'resumeAfter', position }, signal);
    // No change before it is known to read from again: on_history_lost decides.
    await expect(cursor.next(10, signal)).rejects.toBeInstanceOf(HistoryLostError);
    await cursor.close();
  });

  it('issue 10 item 13: a server without the stage is named once in the log, by version or by its refusal', async () => {
    const notices: string[] = [];
    const old = new FakeChangeCollection([serialize(insert(5, { _id: 1 }))], { hasSplitStage: false });
    const byVersion = new MongoChangeSource(fakeClient('6.0.8'), old.asCollection(), {
      maxAwaitMs: 0,
      onNotice: (message) => notices.push(message),
    });
    expect((await readAll(byVersion)).events).toHaveLength(1);
    await readAll(byVersion);
    expect(old.watches.every((w) => w.pipeline.length === 1)).toBe(true);
    expect(notices).toHaveLength(1);
    expect(notices[0]).toMatch(/MongoDB 6\.0\.8 has no \$changeStreamSplitLargeEvent/);

    // An Atlas tier may report 7.0 and still refuse the stage (code 40324): read on without it.
    const refusing = new FakeChangeCollection([serialize(insert(5, { _id: 1 }))], { hasSplitStage: false });
    const byRefusal = new MongoChangeSource(fakeClient('7.0.2'), refusing.asCollection(), {
      maxAwaitMs: 0,
      onNotice: (message) => notices.push(message),
    });
    expect((await readAll(byRefusal)).events).toHaveLength(1);
    expect((await readAll(byRefusal)).events).toHaveLength(1);
    expect(refusing.watches.map((w) => w.pipeline.length)).toEqual([2, 1, 1]);
    expect(notices).toHaveLength(2);
    expect(notices[1]).toMatch(/refused \$changeStreamSplitLargeEvent/);
  });
});

describe('change events MongoDB stores with invalid UTF-8 (issue 10 item 12)', () => {
  it('issue 10 item 12: a change event with an invalid UTF-8 string is read from its bytes and the stream goes on', async () => {
    const bad = bsonWithBytes(insert(11, { _id: 2, name: '#####', n: 2 }), '#####', INVALID);
    const collection = new FakeChangeCollection([
      serialize(insert(10, { _id: 1, name: 'one', n: 1 })),
      bad,
      serialize(insert(12, { _id: 3, name: 'three', n: 3 })),
    ]);
    const source = new MongoChangeSource(fakeClient('7.0.4'), collection.asCollection(), { maxAwaitMs: 0 });
    const { events } = await readAll(source);
    expect(events.map((e) => e.kind === 'upsert' && e.document._id)).toEqual([1, 2, 3]);
    const mapper = compileRowMapper([
      { name: 'name', type: 'STRING' },
      { name: 'n', type: 'INTEGER' },
    ]);
    const rows = events.map((e) => (e.kind === 'upsert' ? changeRecord(mapper, e, new Date(0)).row() : {}));
    expect(rows.map((r) => r.n)).toEqual([1, 2, 3]);
    expect(rows[1]?.name).toBeNull();
    expect(JSON.parse(String(rows[1]?._unmapped))).toEqual({
      name: { $invalidUtf8: Buffer.from(INVALID).toString('base64') },
    });
    // The undecodable event was read once more as bytes, from just before it, with the same pipeline.
    expect(collection.aggregates).toHaveLength(1);
    expect(collection.aggregates[0]?.options).toMatchObject({ raw: true });
    expect(collection.aggregates[0]?.pipeline[0]).toEqual({
      $changeStream: { fullDocument: 'updateLookup', resumeAfter: { _data: '0000000a00000001' } },
    });
  });
});

const real = EJSON.parse(
  readFileSync(new URL('../../fixtures/change-events/real-mongodb-7.json', import.meta.url), 'utf8'),
  { relaxed: true },
) as Record<string, Document>;

/**
 * MongoDB's answer to `resumeAfter` with the token of an invalidate event (MongoDB 4.2 to 8.x,
 * document_source_change_stream.cpp): InvalidResumeToken, no error label. mongo-java-server never says it.
 */
const RESUME_AFTER_INVALIDATE = {
  ok: 0,
  errmsg:
    "Attempting to resume a change stream using 'resumeAfter' is not allowed from an invalidate notification",
  code: 260,
  codeName: 'InvalidResumeToken',
};

const tokenOf = (event: Document | undefined): string => String((event?._id as Document)._data);

/**
 * A collection whose change streams behave like real MongoDB's after a drop: `resumeAfter` the invalidate
 * token is refused, `startAfter` it continues with the re-created collection's changes.
 */
function droppedCollection(invalidateToken: string, after: readonly Document[]) {
  const opened: ChangeStreamOptions[] = [];
  const collection = {
    watch(_pipeline: Document[], options: ChangeStreamOptions) {
      opened.push(options);
      const refused = (options.resumeAfter as Document | undefined)?._data === invalidateToken;
      const events = refused ? [] : [...after];
      let last: unknown = options.startAfter ?? options.resumeAfter;
      return {
        tryNext() {
          if (refused) return Promise.reject(new MongoServerError(RESUME_AFTER_INVALIDATE));
          const next = events.shift() ?? null;
          if (next) last = next._id;
          return Promise.resolve(next);
        },
        bufferedCount: () => events.length,
        get resumeToken() {
          return last;
        },
        close: () => Promise.resolve(),
      };
    },
  };
  return { collection: collection as unknown as Collection, opened };
}

describe('change source after a drop (recorded real-MongoDB shapes)', () => {
  it('issue 10 item 14: a restart from the invalidate that followed a drop continues with startAfter, not as a lost history', async () => {
    const invalidate: Position = { token: tokenOf(real.invalidate), clusterTime: { t: 1_705_095_881, i: 1 } };
    const { collection, opened } = droppedCollection(invalidate.token, [real.insert ?? {}]);
    const source = new MongoChangeSource(fakeClient('5.0.0'), collection, { maxAwaitMs: 0 });
    const signal = new AbortController().signal;

    // What a restart opens from a checkpoint saved on the invalidate (as the previous release saved it).
    const cursor = await source.open({ kind: 'resumeAfter', position: invalidate }, signal);
    // The refusal costs one (empty) pull: the stream is opened again with startAfter.
    const events: unknown[] = [];
    for (let pull = 0; pull < 3 && events.length === 0; pull++) {
      const batch = await cursor.next(10, signal).catch((error: unknown) => error);
      expect(batch).not.toBeInstanceOf(HistoryLostError);
      events.push(...(batch as { events: unknown[] }).events);
    }
    await cursor.close();

    expect(events).toMatchObject([{ kind: 'upsert', operationType: 'insert' }]);
    expect(opened.at(-1)).toMatchObject({ startAfter: { _data: invalidate.token } });
  });

  it('still reports a lost history for a token MongoDB cannot resume from at all', async () => {
    const signal = new AbortController().signal;
    for (const refusal of [
      {
        code: 286,
        codeName: 'ChangeStreamHistoryLost',
        errmsg:
          'Resume of change stream was not possible, as the resume point may no longer be in the oplog.',
      },
      {
        code: 260,
        codeName: 'InvalidResumeToken',
        errmsg:
          'Attempted to resume a single-collection stream, but the resume token does not include a UUID',
      },
    ]) {
      const opened: ChangeStreamOptions[] = [];
      const collection = {
        watch(_pipeline: Document[], options: ChangeStreamOptions) {
          opened.push(options);
          return {
            tryNext: () => Promise.reject(new MongoServerError({ ok: 0, ...refusal })),
            bufferedCount: () => 0,
            resumeToken: undefined,
            close: () => Promise.resolve(),
          };
        },
      } as unknown as Collection;
      const source = new MongoChangeSource(fakeClient('5.0.0'), collection, { maxAwaitMs: 0 });
      const position: Position = { token: tokenOf(real.update), clusterTime: { t: 1_705_095_876, i: 1 } };
      const cursor = await source.open({ kind: 'resumeAfter', position }, signal);
      await expect(cursor.next(10, signal)).rejects.toBeInstanceOf(HistoryLostError);
      expect(opened).toHaveLength(1);
    }
  });
});
