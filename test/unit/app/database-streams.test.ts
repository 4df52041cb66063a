import { readFileSync } from 'node:fs';
import { EJSON, serialize, Timestamp, type Document } from 'bson';
import { MongoClient } from 'mongodb';
import { describe, expect, it } from 'vitest';
import {
  chooseRawStream,
  chooseStreamScope,
  DatabaseStreams,
  type ProbedStreamSource,
} from '../../../src/app/database-streams.js';
import { sharedPosition, type Position } from '../../../src/core/model.js';
import { type ChangeSource, type RawChangeBatch, type StreamStart } from '../../../src/core/ports.js';
import { type ChangeStreamScope } from '../../../src/core/settings.js';
import { createLogger } from '../../../src/observability/logger.js';
import { compileRowMapper } from '../../../src/transform/row-mapper.js';
import { prepareRawInThread } from '../../../src/workers/in-thread.js';
import { FakeSharedStream, IdleRawSource } from '../../support/fakes/shared-stream.js';

const SAVED: Position = { token: '8269000000000000012B', clusterTime: { t: 1_765_000_000, i: 1 } };
const FROM_SAVED: StreamStart = { kind: 'resumeAfter', position: SAVED };
const never = new AbortController().signal;

/** The registry over fake shared streams (one per database, made on demand), and the lines it logged. */
function registry(scope: ChangeStreamScope, streams: Record<string, FakeSharedStream>) {
  const lines: Record<string, unknown>[] = [];
  const logger = createLogger({
    level: 'info',
    destination: { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) },
  });
  const made: string[] = [];
  const sharedSource = (database: string): ProbedStreamSource => {
    made.push(database);
    const stream = streams[database];
    if (stream === undefined) throw new Error(`no fake stream for ${database}`);
    return stream;
  };
  return { registry: new DatabaseStreams({ scope, sharedSource, logger, signal: never }), lines, made };
}

function choose(
  streams: DatabaseStreams,
  collection: string,
  own: ChangeSource<RawChangeBatch> | undefined,
  ownAlone: boolean,
  decorate?: (source: ChangeSource<RawChangeBatch>) => ChangeSource<RawChangeBatch>,
) {
  return chooseRawStream({ streams, database: 'bidding', collection, own, ownAlone, decorate });
}

describe('which stream a mapping reads (issue 12)', () => {
  it('its share of the database stream where the daemon shares them and the server allows it, decorated', async () => {
    const shared = new FakeSharedStream(undefined);
    const { registry: streams } = registry('database', { bidding: shared });
    const own = new IdleRawSource();
    const decorated: ChangeSource<RawChangeBatch>[] = [];
    const decorate = (source: ChangeSource<RawChangeBatch>): ChangeSource<RawChangeBatch> => {
      decorated.push(source);
      return {
        open: (start, signal) => source.open(start, signal),
        currentTime: (s) => source.currentTime(s),
      };
    };
    // Without worker threads too: the shared stream is prepared on this thread.
    const choice = await choose(streams, 'ad_cpta', own, false, decorate);
    expect(choice?.shared).toBe(true);
    expect(decorated).toHaveLength(1);
    expect(choice?.source).not.toBe(decorated[0]);
    const cursor = await choice?.source.open(FROM_SAVED, never);
    expect(await cursor?.next(100, never)).toEqual({ changes: [], position: SAVED });
    // The database's stream, filtered to the mapping's collection, from the mapping's position; its own
    // stream is not opened (nothing to catch up with).
    expect(shared.opened).toEqual([{ start: FROM_SAVED, collections: ['ad_cpta'] }]);
    expect(own.opened).toEqual([]);
    await cursor?.close();
    // A second mapping of the database shares the same fan-out: the server was asked once.
    expect((await choose(streams, 'ad_spend', new IdleRawSource(), true))?.shared).toBe(true);
    expect(shared.probes).toBe(1);
  });

  it('its own stream where the server refuses the database stream, said once per database with the reason', async () => {
    const refused = new FakeSharedStream(
      'the server refused a database-level change stream (code 13: not authorized)',
    );
    const other = new FakeSharedStream(undefined);
    const { registry: streams, lines } = registry('database', { bidding: refused, archive: other });
    const own = new IdleRawSource();
    // With worker threads: the collection's own raw stream.
    expect(await choose(streams, 'ad_cpta', own, true)).toEqual({ source: own, shared: false });
    // Without: nothing raw (the mapping reads its own stream decoded).
    expect(await choose(streams, 'ad_spend', new IdleRawSource(), false)).toBeUndefined();
    expect(refused.probes).toBe(1);
    expect(refused.opened).toEqual([]);
    const warnings = lines.filter((line) => line.level === 'warn');
    expect(warnings).toEqual([
      expect.objectContaining({
        database: 'bidding',
        reason: 'the server refused a database-level change stream (code 13: not authorized)',
        msg: expect.stringMatching(/one change stream each/) as unknown,
      }),
    ]);
    // Another database is asked on its own.
    const elsewhere = await chooseRawStream({
      streams,
      database: 'archive',
      collection: 'ad_cpta',
      own: new IdleRawSource(),
      ownAlone: true,
    });
    expect(elsewhere?.shared).toBe(true);
  });

  it('its own stream, as before, with CHANGE_STREAM_SCOPE collection: the server is not asked', async () => {
    const shared = new FakeSharedStream(undefined);
    const { registry: streams, made } = registry('collection', { bidding: shared });
    const own = new IdleRawSource();
    expect(await choose(streams, 'ad_cpta', own, true)).toEqual({ source: own, shared: false });
    expect(await choose(streams, 'ad_cpta', own, false)).toBeUndefined();
    expect(await choose(streams, 'ad_cpta', undefined, true)).toBeUndefined();
    expect(made).toEqual([]);
    expect(shared.probes).toBe(0);
  });

  it('issue 12 review: a database stream refused after the probe (a privilege revoked) fails the mappings once; then they read their own streams', async () => {
    const shared = new FakeSharedStream(undefined);
    const { registry: streams, lines } = registry('database', { bidding: shared });
    const choice = await choose(streams, 'ad_cpta', new IdleRawSource(), true);
    expect(choice?.shared).toBe(true);
    shared.openFailure = Object.assign(new Error('not authorized on bidding to execute command'), {
      code: 13,
    });
    const cursor = await choice?.source.open(FROM_SAVED, never);
    await expect(cursor?.next(100, never)).rejects.toThrow(/not authorized/);
    await cursor?.close();
    // The restarted mapping, and any other of the database, read their own streams.
    const own = new IdleRawSource();
    expect(await choose(streams, 'ad_cpta', own, true)).toEqual({ source: own, shared: false });
    expect(await choose(streams, 'ad_spend', new IdleRawSource(), false)).toBeUndefined();
    expect(
      lines.filter((line) => line.level === 'warn' && String(line.msg).includes('from now on')),
    ).toHaveLength(1);
  });

  it('a probe that fails (not a refusal) fails the mapping, and the next mapping asks again', async () => {
    const shared = new FakeSharedStream(undefined, new Error('connection reset'));
    const { registry: streams } = registry('database', { bidding: shared });
    await expect(choose(streams, 'ad_cpta', new IdleRawSource(), true)).rejects.toThrow(/connection reset/);
    expect((await choose(streams, 'ad_cpta', new IdleRawSource(), true))?.shared).toBe(true);
    expect(shared.probes).toBe(2);
  });
});

/** Database-level events in the MongoDB 7.0 manual's shapes (bidding: ad_cpta and ad_spend mapped, audit_log not). */
const EVENTS = EJSON.parse(
  readFileSync(new URL('../../fixtures/change-events/real-mongodb-7-database.json', import.meta.url), 'utf8'),
  { relaxed: false },
) as Record<string, Document>;

function tokenOf(name: string): string {
  return (EVENTS[name]?._id as { _data: string })._data;
}

describe('a shared stream end to end on this thread (issue 12: what the test peer cannot show)', () => {
  it('two mappings of one database take their own changes of one shared cursor, read from the bytes, prepared without workers', async () => {
    const before: Position = {
      token: '8265A1B33F000000012B0229296E04',
      clusterTime: { t: 1_705_095_999, i: 1 },
    };
    const after: Position = {
      token: '8265A1B346000000012B0229296E04',
      clusterTime: { t: 1_705_096_006, i: 1 },
    };
    const order = [
      'insertCpta',
      'insertSpend',
      'updateSpend',
      'insertUnmapped',
      'replaceCpta',
      'deleteSpend',
    ];
    const pull: RawChangeBatch = {
      changes: order.map((name) => [serialize(EVENTS[name] ?? {})]),
      position: after,
    };
    const shared = new FakeSharedStream(undefined, undefined, [pull]);
    const { registry: streams } = registry('database', { bidding: shared });
    const from: StreamStart = { kind: 'resumeAfter', position: before };
    const cpta = await (
      await choose(streams, 'ad_cpta', new IdleRawSource(), false)
    )?.source.open(from, never);
    const spend = await (
      await choose(streams, 'ad_spend', new IdleRawSource(), false)
    )?.source.open(from, never);
    const mapper = compileRowMapper([{ name: 'label', type: 'STRING' }], { captureUnmapped: true });
    const prepare = prepareRawInThread({ mapper: () => mapper });
    const now = new Date(Date.UTC(2026, 11, 6));
    const cptaBatch = await prepare(
      await (cpta?.next(100, never) ?? Promise.reject(new Error('no cursor'))),
      now,
      never,
    );
    const spendBatch = await prepare(
      await (spend?.next(100, never) ?? Promise.reject(new Error('no cursor'))),
      now,
      never,
    );
    const rows = (batch: typeof cptaBatch) =>
      batch.changes.map((change) => [change.operationType, change.record?.eventId]);
    expect(rows(cptaBatch)).toEqual([
      ['insert', tokenOf('insertCpta')],
      ['replace', tokenOf('replaceCpta')],
    ]);
    expect(rows(spendBatch)).toEqual([
      ['insert', tokenOf('insertSpend')],
      ['update', tokenOf('updateSpend')],
      ['delete', tokenOf('deleteSpend')],
    ]);
    // Neither pull ends with the collection's own change: each position is marked as the database stream's.
    expect([cptaBatch.position, spendBatch.position]).toEqual([sharedPosition(after), sharedPosition(after)]);
    // One server-side cursor for both, filtered to both collections.
    expect(shared.opened).toEqual([{ start: from, collections: ['ad_cpta', 'ad_spend'] }]);
    await Promise.all([cpta?.close(), spend?.close()]);
  });
});

/** A client whose `hello` answers `reply` (and whose connection string is `uri`). */
function clientAnswering(reply: Document, uri = 'mongodb://127.0.0.1:27017/'): MongoClient {
  const client = new MongoClient(uri);
  Object.defineProperty(client, 'db', { value: () => ({ command: () => Promise.resolve(reply) }) });
  return client;
}

describe('the daemon’s change stream scope (issue 12)', () => {
  const replicaSet = {
    isWritablePrimary: true,
    setName: 'rs0',
    maxWireVersion: 21,
    operationTime: new Timestamp({ t: 1, i: 1 }),
  };

  it('database on a replica set when asked for; collection when configured so, without asking the server', async () => {
    expect(await chooseStreamScope(clientAnswering(replicaSet), 'database', never)).toMatchObject({
      scope: 'database',
    });
    const unreachable = new MongoClient('mongodb://127.0.0.1:1/');
    Object.defineProperty(unreachable, 'db', {
      value: () => ({ command: () => Promise.reject(new Error('asked')) }),
    });
    expect(await chooseStreamScope(unreachable, 'collection', never)).toEqual({
      scope: 'collection',
      reason: 'CHANGE_STREAM_SCOPE is collection',
    });
  });

  it('collection, with the reason, where the server cannot (mongo-java-server) or raw streams cannot be read', async () => {
    expect(
      await chooseStreamScope(
        clientAnswering({ isWritablePrimary: true, maxWireVersion: 8 }),
        'database',
        never,
      ),
    ).toEqual({ scope: 'collection', reason: expect.stringMatching(/neither a replica set/) as unknown });
    expect(
      await chooseStreamScope(clientAnswering({ msg: 'isdbgrid', maxWireVersion: 21 }), 'database', never),
    ).toEqual({
      scope: 'collection',
      reason: expect.stringMatching(/read raw.*mongos/) as unknown,
    });
    const secondaries = clientAnswering(replicaSet, 'mongodb://127.0.0.1:27017/?readPreference=secondary');
    expect((await chooseStreamScope(secondaries, 'database', never)).reason).toMatch(/readPreference/);
  });
});
