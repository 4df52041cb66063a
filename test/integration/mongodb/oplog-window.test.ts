// The oplog headroom guard's reads over the real wire protocol. The MongoDB peer is no replica set (the
// guard is off there: test/integration/daemon/oplog-headroom.test.ts), but it keeps a local.oplog.rs for its
// change streams, which shows that the adapter's find by $natural order, projected to `ts`, is a command a
// server answers with the entries at each end. What the peer lacks ($collStats, serverStatus's oplog
// section) is shown on recorded MongoDB answers in test/unit/mongodb/oplog-window.test.ts.
import { randomBytes } from 'node:crypto';
import { MongoClient } from 'mongodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bsonKind } from '../../../src/base/bson-kind.js';
import {
  mongoOplogProbe,
  sizeFromCollStats,
  windowFromOplogEntries,
  windowFromServerStatus,
} from '../../../src/mongodb/oplog-window.js';

const DB = `oplog_probe_${randomBytes(3).toString('hex')}`;
const never = new AbortController().signal;
let mongo: MongoClient;

beforeAll(async () => {
  mongo = new MongoClient(process.env.MBA_TEST_MONGODB_URI ?? '');
  await mongo.connect();
});

afterAll(async () => {
  await mongo.close();
});

describe('the oplog probe against the MongoDB peer', () => {
  it('issue 14: reads the oldest and newest oplog entries, each projected to its ts, oldest first', async () => {
    const items = mongo.db(DB).collection<{ _id: number }>('items');
    for (const id of [1, 2, 3]) await items.insertOne({ _id: id });
    const probe = mongoOplogProbe(mongo);
    const first = await probe.oplogEntry(1, never);
    const last = await probe.oplogEntry(-1, never);
    expect(Object.keys(first ?? {})).toEqual(['ts']);
    expect(Object.keys(last ?? {})).toEqual(['ts']);
    expect(bsonKind(first?.ts)).toBe('Timestamp');
    const window = windowFromOplogEntries(first, last, 'peer');
    expect(window).toBeDefined();
    expect(window?.lastSeconds).toBeGreaterThanOrEqual(window?.firstSeconds ?? Infinity);
  });

  it('issue 14: a server without $collStats or serverStatus’s oplog section gives no size and no section, not a failure of the reading', async () => {
    const probe = mongoOplogProbe(mongo);
    const stats = await probe.oplogStats(never).then(
      (answer) => sizeFromCollStats(answer),
      () => undefined,
    );
    expect(stats).toBeUndefined();
    expect(windowFromServerStatus(await probe.serverStatus(never), 'peer')).toBeUndefined();
  });
});
