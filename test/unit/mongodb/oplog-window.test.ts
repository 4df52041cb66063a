import { readFileSync } from 'node:fs';
import { EJSON } from 'bson';
import { MongoNetworkError, MongoServerError, Timestamp, type Document } from 'mongodb';
import { describe, expect, it } from 'vitest';
import { dispositionOf } from '../../../src/errors.js';
import { headroomOf } from '../../../src/core/oplog-headroom.js';
import {
  readOplogWindow,
  sizeFromCollStats,
  resumeSecondsOf,
  windowFromOplogEntries,
  windowFromServerStatus,
  type OplogProbe,
} from '../../../src/mongodb/oplog-window.js';

/** MongoDB 7.0's answers to the guard's reads (see the fixture's `_comment`). */
const recorded = EJSON.parse(
  readFileSync(new URL('../../fixtures/oplog/real-mongodb-7-oplog-window.json', import.meta.url), 'utf8'),
  { relaxed: false },
) as Record<string, Document>;

function answer(name: string): Document {
  const doc = recorded[name];
  if (doc === undefined) throw new Error(`no recorded answer ${name}`);
  return doc;
}

/** The error the driver throws for a recorded error reply. */
function refusal(name: string): MongoServerError {
  const reply = answer(name);
  return new MongoServerError({ ...reply, ok: 0, code: Number(reply.code) });
}

type Answer = Document | null | Error;

/** A probe giving recorded answers, and the reads made, in order. */
function probe(answers: {
  hello: Document;
  first?: Answer;
  last?: Answer;
  serverStatus?: Answer;
  stats?: Answer;
}): {
  probe: OplogProbe;
  reads: string[];
} {
  const reads: string[] = [];
  const give = (value: Answer | undefined): Promise<Document | null> => {
    if (value === undefined) return Promise.reject(new Error('not expected'));
    return value instanceof Error ? Promise.reject(value) : Promise.resolve(value);
  };
  return {
    reads,
    probe: {
      hello: () => {
        reads.push('hello');
        return Promise.resolve(answers.hello);
      },
      oplogEntry: (order) => {
        reads.push(order === 1 ? 'first' : 'last');
        return give(order === 1 ? answers.first : answers.last);
      },
      oplogStats: () => {
        reads.push('stats');
        return give(answers.stats ?? null);
      },
      serverStatus: async () => {
        reads.push('serverStatus');
        return (await give(answers.serverStatus)) ?? {};
      },
    },
  };
}

const never = new AbortController().signal;
/** The recorded oplog spans a day: 1705093600 to 1705180000. */
const RECORDED_WINDOW = { source: 'rs0', firstSeconds: 1_705_093_600, lastSeconds: 1_705_180_000 };

describe('issue 14: reading the oplog window from recorded MongoDB answers', () => {
  it('reads the oldest and newest entries of local.oplog.rs (one document at each end), named by the replica set', async () => {
    const { probe: p, reads } = probe({
      hello: answer('helloReplicaSet'),
      first: answer('oplogFirst'),
      last: answer('oplogLast'),
    });
    await expect(readOplogWindow(p, never)).resolves.toEqual({ kind: 'window', window: RECORDED_WINDOW });
    expect(reads).toEqual(['hello', 'first', 'last', 'stats']);
  });

  it('adds the oplog’s size and maximum from $collStats: a full oplog puts a mapping 20 h behind at risk, one still filling does not', async () => {
    const reading = async (stats: string) => {
      const { probe: p } = probe({
        hello: answer('helloReplicaSet'),
        first: answer('oplogFirst'),
        last: answer('oplogLast'),
        stats: answer(stats),
      });
      const read = await readOplogWindow(p, never);
      if (read.kind !== 'window') throw new Error('no window');
      return read.window;
    };
    const full = await reading('oplogCollStats');
    expect(full.size).toEqual({ bytes: 1_021_788_160, maxBytes: 1_073_741_824 });
    const behind = RECORDED_WINDOW.lastSeconds - 20 * 3_600;
    expect(headroomOf(full, behind, 0.25)).toMatchObject({
      headroomSeconds: 4 * 3_600,
      atRisk: true,
      filling: false,
    });
    // 12% used: MongoDB has dropped nothing yet, and will not until the oplog is full.
    const filling = await reading('oplogCollStatsFilling');
    expect(headroomOf(filling, behind, 0.25)).toMatchObject({
      headroomSeconds: 4 * 3_600,
      atRisk: false,
      filling: true,
    });
  });

  it('takes the oplog as full (the cautious reading) when $collStats is refused', async () => {
    const { probe: p } = probe({
      hello: answer('helloReplicaSet'),
      first: answer('oplogFirst'),
      last: answer('oplogLast'),
      stats: refusal('unauthorizedFind'),
    });
    await expect(readOplogWindow(p, never)).resolves.toEqual({ kind: 'window', window: RECORDED_WINDOW });
    expect(sizeFromCollStats(null)).toBeUndefined();
  });

  it('falls back to serverStatus’s oplog section when the user may not read local.oplog.rs', async () => {
    const { probe: p, reads } = probe({
      hello: answer('helloReplicaSet'),
      first: refusal('unauthorizedFind'),
      serverStatus: answer('serverStatusOplog'),
    });
    await expect(readOplogWindow(p, never)).resolves.toEqual({ kind: 'window', window: RECORDED_WINDOW });
    expect(reads).toEqual(['hello', 'first', 'serverStatus']);
  });

  it('says the user lacks the privilege, naming the roles, when both reads are refused (code 13)', async () => {
    const { probe: p } = probe({
      hello: answer('helloReplicaSet'),
      first: refusal('unauthorizedFind'),
      serverStatus: refusal('unauthorizedServerStatus'),
    });
    const reading = await readOplogWindow(p, never);
    expect(reading).toMatchObject({ kind: 'unavailable', reason: 'unauthorized' });
    expect(reading.kind === 'unavailable' && reading.message).toMatch(
      /read role on the local database.*clusterMonitor/,
    );
  });

  it('says a server that is no replica set member has no oplog to watch, reading nothing else', async () => {
    const { probe: p, reads } = probe({ hello: answer('helloStandalone'), first: answer('oplogFirst') });
    const reading = await readOplogWindow(p, never);
    expect(reading).toMatchObject({ kind: 'unavailable', reason: 'no-oplog' });
    expect(reading.kind === 'unavailable' && reading.message).toContain('not a replica set member');
    expect(reads).toEqual(['hello']);
  });

  it('says a member whose oplog is empty has no window, without asking serverStatus', async () => {
    const { probe: p, reads } = probe({ hello: answer('helloReplicaSet'), first: null });
    await expect(readOplogWindow(p, never)).resolves.toMatchObject({
      kind: 'unavailable',
      reason: 'no-oplog',
    });
    expect(reads).toEqual(['hello', 'first']);
  });

  it('says mongos hides the shards’ oplogs, reading nothing else', async () => {
    const { probe: p, reads } = probe({ hello: answer('helloMongos') });
    await expect(readOplogWindow(p, never)).resolves.toMatchObject({ kind: 'unavailable', reason: 'mongos' });
    expect(reads).toEqual(['hello']);
  });

  it('throws a failure of the network as a retryable error of ours, keeping the driver’s as cause', async () => {
    const lost = new MongoNetworkError('connection 3 to 127.0.0.1:27017 closed');
    const { probe: p } = probe({ hello: answer('helloReplicaSet'), first: lost });
    const error = await readOplogWindow(p, never).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(dispositionOf(error)).toBe('retryable');
    expect((error as Error).cause).toBe(lost);
  });

  it('parses serverStatus’s section, and none in a standalone’s answer', () => {
    expect(windowFromServerStatus(answer('serverStatusOplog'), 'rs0')).toEqual(RECORDED_WINDOW);
    expect(windowFromServerStatus(answer('serverStatusStandalone'), 'rs0')).toBeUndefined();
    expect(windowFromOplogEntries(answer('oplogFirst'), null, 'rs0')).toBeUndefined();
  });
});

describe('issue 14: where a stored checkpoint resumes its stream', () => {
  const position = { token: '8265A1', clusterTime: new Timestamp({ t: 1_705_170_000, i: 4 }) };
  const backfill = { snapshotStart: new Timestamp({ t: 1_705_100_000, i: 1 }), copied: 10, done: false };

  it('is its position’s cluster time, even during a backfill that saved one', () => {
    expect(resumeSecondsOf({ _id: 'orders', position })).toBe(1_705_170_000);
    expect(resumeSecondsOf({ _id: 'orders', position, backfill })).toBe(1_705_170_000);
  });

  it('is the snapshot start of a backfill that saved no position yet (the stream starts there)', () => {
    expect(resumeSecondsOf({ _id: 'orders', backfill })).toBe(1_705_100_000);
  });

  it('is unknown for a mapping that never started', () => {
    expect(resumeSecondsOf({ _id: 'orders', scope: 'a -> b' })).toBeUndefined();
  });
});
