import { Timestamp } from 'bson';
import { describe, expect, it } from 'vitest';
import { renderStatus, showStatus, watchIntervalMs, type StatusReport } from '../../../src/cli/status.js';
import { loadBootstrapConfig } from '../../../src/config/bootstrap.js';
import {
  backfillOverview,
  mappingOverview,
  renderStatusTable,
  type MappingOverview,
} from '../../../src/cli/status-view.js';

/** 2024-01-12T21:43:20Z, in milliseconds. */
const T0 = 1_705_095_800_000;
const snapshotStart = new Timestamp({ t: T0 / 1_000 - 600, i: 1 });

const settings = {
  _id: 'orders',
  mongo_database: 'shop',
  mongo_collection: 'orders',
  bigquery_table: 'orders',
};

function backfilling(copied: number, estimated?: number) {
  return {
    backfill: {
      snapshotStart,
      copied,
      ...(estimated !== undefined && { estimated }),
      done: false,
      ranges: [
        { after: null, upTo: '{"id":1}', lastId: '{"id":1}', copied: copied / 2, done: true },
        { after: '{"id":1}', upTo: null, lastId: '{"id":0}', copied: copied / 2, done: false },
      ],
    },
  };
}

describe('status: lag from the checkpoint (issue 13)', () => {
  it('issue 13: the lag is now minus the cluster time of the checkpointed position (was always `-`: nothing wrote status.lagSeconds)', () => {
    const checkpoint = {
      position: { token: '82aa', clusterTime: new Timestamp({ t: T0 / 1_000, i: 3 }) },
      updatedAt: new Date(T0 + 1_000),
    };
    const overview = mappingOverview(
      { settings: { ...settings, status: { state: 'streaming' } }, checkpoint, holder: 'host-a:17' },
      T0 + 4_600,
    );
    expect(overview).toMatchObject({
      id: 'orders',
      source: 'shop.orders',
      target: 'orders',
      state: 'streaming',
      lagSeconds: 5,
      position: '2024-01-12T21:43:20.000Z',
      afterDrop: false,
      checkpointAt: '2024-01-12T21:43:21.000Z',
      backfill: null,
      holder: 'host-a:17',
    });
  });

  it('issue 13: no position yet (a backfill before the stream saved one, or no checkpoint) is a null lag, never NaN; a clock behind the cluster time is 0', () => {
    expect(mappingOverview({ settings, checkpoint: undefined, holder: undefined }, T0).lagSeconds).toBeNull();
    expect(
      mappingOverview({ settings, checkpoint: backfilling(10), holder: null }, T0).lagSeconds,
    ).toBeNull();
    const ahead = { position: { token: '82', clusterTime: new Timestamp({ t: T0 / 1_000 + 30, i: 0 }) } };
    expect(mappingOverview({ settings, checkpoint: ahead, holder: null }, T0).lagSeconds).toBe(0);
  });

  it('issue 13: the last failure carries its time; a mapping that never reported is `unknown`, without holder or update time', () => {
    const failed = {
      ...settings,
      lastFailure: 'BigQuery said 503',
      lastFailureAt: new Date(T0 - 90_000),
      status: { state: 'retrying', updatedAt: new Date(T0 - 2_000), message: 'waiting 4s' },
    };
    expect(mappingOverview({ settings: failed, checkpoint: undefined, holder: null }, T0)).toMatchObject({
      state: 'retrying',
      message: 'waiting 4s',
      lastFailure: { message: 'BigQuery said 503', at: '2024-01-12T21:41:50.000Z' },
      updatedAt: '2024-01-12T21:43:18.000Z',
      holder: null,
    });
    expect(mappingOverview({ settings, checkpoint: undefined, holder: undefined }, T0)).toMatchObject({
      state: 'unknown',
      lastFailure: null,
      updatedAt: null,
    });
  });

  it('issue 13 review: a stored failure quoting a connection string shows without its password', () => {
    const failed = {
      ...settings,
      lastFailure: 'could not connect to mongodb://archiver:s3cret@db.example:27017/shop',
    };
    const shown = mappingOverview({ settings: failed, checkpoint: undefined, holder: null }, T0).lastFailure;
    expect(shown?.message).toContain('db.example:27017');
    expect(shown?.message).not.toContain('s3cret');
  });
});

describe('status: backfill progress (issue 13)', () => {
  it("issue 13 (CI): the owner's count, newer than the checkpoint's, is the one shown with its rate", () => {
    // The checkpoint saved its ranges before the first chunk was acknowledged; the owner already reported more.
    const status = { state: 'backfilling', backfillCopied: 2_000, backfillRate: 400 };
    expect(backfillOverview(status, backfilling(0, 10_000), T0)).toMatchObject({
      copied: 2_000,
      percent: 20,
      docsPerSecond: 400,
      etaSeconds: 20,
    });
  });

  it('issue 13: copied / estimated, percent, the rate the owner reports while backfilling, and the ETA from what remains', () => {
    const status = { state: 'backfilling', backfillRate: 500 };
    expect(backfillOverview(status, backfilling(25_000, 100_000), T0)).toEqual({
      copied: 25_000,
      estimated: 100_000,
      percent: 25,
      docsPerSecond: 500,
      etaSeconds: 150,
      rangesDone: 1,
      ranges: 2,
    });
  });

  it('issue 13: with --watch the rate is the change since the previous read, not the reported one', () => {
    const status = { state: 'backfilling', backfillRate: 500 };
    const overview = backfillOverview(status, backfilling(30_000, 100_000), T0 + 4_000, {
      copied: 22_000,
      at: T0,
    });
    expect(overview).toMatchObject({ docsPerSecond: 2_000, etaSeconds: 35 });
    // A copy that stands still: 0/s and no ETA; one that restarted (fewer copied): the reported rate.
    expect(
      backfillOverview(status, backfilling(30_000, 100_000), T0 + 2_000, { copied: 30_000, at: T0 }),
    ).toMatchObject({ docsPerSecond: 0, etaSeconds: null });
    expect(
      backfillOverview(status, backfilling(10_000, 100_000), T0 + 2_000, { copied: 30_000, at: T0 }),
    ).toMatchObject({ docsPerSecond: 500 });
    // Not backfilling now (retrying): no rate from the two reads either.
    expect(
      backfillOverview({ state: 'retrying' }, backfilling(30_000, 100_000), T0 + 2_000, {
        copied: 0,
        at: T0,
      }),
    ).toMatchObject({ docsPerSecond: null, etaSeconds: null });
  });

  it('issue 13: without an estimate no percent or ETA; without a rate no ETA; not backfilling now, no stale rate or ETA', () => {
    expect(backfillOverview({ state: 'backfilling', backfillRate: 10 }, backfilling(40), T0)).toMatchObject({
      estimated: null,
      percent: null,
      docsPerSecond: 10,
      etaSeconds: null,
    });
    expect(backfillOverview({ state: 'backfilling' }, backfilling(40, 100), T0)).toMatchObject({
      percent: 40,
      docsPerSecond: null,
      etaSeconds: null,
    });
    expect(
      backfillOverview(
        { state: 'retrying', backfillRate: 100, backfillEtaSeconds: 5 },
        backfilling(50, 100),
        T0,
      ),
    ).toMatchObject({ docsPerSecond: null, etaSeconds: null, percent: 50 });
  });

  it('issue 13: an estimate from the status when the checkpoint has none; nothing once the backfill is done', () => {
    const checkpoint = { backfill: { snapshotStart, lastId: null, copied: 10, done: false } };
    expect(backfillOverview({ state: 'backfilling', backfillEstimated: 40 }, checkpoint, T0)).toMatchObject({
      copied: 10,
      estimated: 40,
      percent: 25,
      ranges: null,
    });
    const done = { backfill: { snapshotStart, copied: 1_000, estimated: 1_000, done: true } };
    expect(backfillOverview({ state: 'streaming' }, done, T0)).toBeNull();
    expect(backfillOverview(undefined, undefined, T0)).toBeNull();
  });
});

function overview(over: Partial<MappingOverview>): MappingOverview {
  return {
    id: 'orders',
    source: 'shop.orders',
    target: 'orders',
    state: 'streaming',
    message: null,
    lagSeconds: null,
    position: null,
    afterDrop: false,
    checkpointAt: null,
    backfill: null,
    lastFailure: null,
    holder: null,
    updatedAt: null,
    oplog: null,
    repair: null,
    lastVerification: null,
    ...over,
  };
}

describe('status: the table (issue 13)', () => {
  const rows = [
    overview({
      id: 'orders',
      state: 'backfilling',
      lagSeconds: 3,
      holder: 'archiver-7d9f-0:1',
      updatedAt: new Date(T0 - 2_000).toISOString(),
      backfill: {
        copied: 25_000,
        estimated: 100_000,
        percent: 25,
        docsPerSecond: 512.4,
        etaSeconds: 147,
        rangesDone: 1,
        ranges: 2,
      },
    }),
    overview({
      id: 'customers-eu',
      state: 'failed',
      lastFailure: { message: 'x'.repeat(300), at: new Date(T0 - 65_000).toISOString() },
    }),
  ];

  it('issue 13: a header and aligned rows; missing values are `-`, never NaN or undefined; no `(index)` column', () => {
    const lines = renderStatusTable(rows, T0);
    expect(lines[0]).toMatch(
      /^MAPPING +STATE +LAG +BACKFILL +DONE +RATE +ETA +HOLDER +UPDATED +LAST FAILURE$/,
    );
    expect(lines[1]).toMatch(
      /^orders +backfilling +3s +25K\/100K +25\.0% +512\/s +2m27s +archiver-7d9f-0:1 +2s ago +-$/,
    );
    expect(lines[2]).toMatch(/^customers-eu +failed +- +- +- +- +- +- +- +1m05s ago: x+…$/);
    // Every column starts where its header does.
    const starts = (line: string) => [...line.matchAll(/(?<= {2})\S/g)].map((m) => m.index);
    expect(starts(lines[1] ?? '').slice(0, 8)).toEqual(starts(lines[0] ?? '').slice(0, 8));
    for (const line of lines) {
      expect(line).not.toMatch(/NaN|undefined|null|\(index\)/);
      expect(line.length).toBeLessThanOrEqual(120);
    }
  });

  it('issue 13: on an 80-column terminal the progress columns stay aligned; holder, update time and failure go under the row', () => {
    const lines = renderStatusTable(rows, T0, 80);
    expect(lines[0]).toMatch(/^MAPPING +STATE +LAG +BACKFILL +DONE +RATE +ETA$/);
    expect(lines[1]).toMatch(/^orders +backfilling +3s +25K\/100K +25\.0% +512\/s +2m27s$/);
    expect(lines[2]).toBe('  ↳ holder archiver-7d9f-0:1, updated 2s ago');
    expect(lines[4]).toMatch(/^ {2}↳ holder -, updated -, last failure 1m05s ago: x+…$/);
    expect(lines).toHaveLength(5);
    for (const line of lines) expect(line.length).toBeLessThanOrEqual(80);
  });

  it('issue 13: a long mapping id is cut, and a failure that no longer fits goes under its row at 120 columns too', () => {
    const long = [
      overview({ ...rows[1], id: 'a-rather-long-mapping-identifier-that-goes-on', holder: 'x'.repeat(40) }),
    ];
    const lines = renderStatusTable(long, T0, 120);
    expect(lines[1]).toMatch(/^a-rather-long-mapping-i… +failed .* …x{19} +-$/);
    expect(lines[2]).toMatch(/^ {2}↳ last failure 1m05s ago: x+…$/);
    for (const line of lines) expect(line.length).toBeLessThanOrEqual(120);
  });

  it('issue 13: --json is one document with every field, nulls where nothing is known', () => {
    const report: StatusReport = {
      settings: 'config.bigquery_archiver_settings',
      generatedAt: new Date(T0).toISOString(),
      mappings: rows,
    };
    const text = renderStatus(report, true);
    expect(text.endsWith('\n')).toBe(true);
    expect(text.trim().split('\n')).toHaveLength(1);
    const parsed = JSON.parse(text) as StatusReport;
    expect(parsed.mappings[0]).toMatchObject({
      lagSeconds: 3,
      backfill: { copied: 25_000, estimated: 100_000, percent: 25, docsPerSecond: 512.4, etaSeconds: 147 },
      holder: 'archiver-7d9f-0:1',
    });
    expect(Object.keys(parsed.mappings[1] ?? {})).toEqual(Object.keys(rows[1] ?? {}));
    expect(parsed.mappings[1]?.lagSeconds).toBeNull();
  });

  it('issue 13: no mappings says where it looked', () => {
    expect(
      renderStatus({ settings: 'db.s', generatedAt: new Date(T0).toISOString(), mappings: [] }, false),
    ).toBe('no mappings in db.s\n');
  });
});

describe('status --watch (issue 13)', () => {
  it('issue 13: every 2 s by default, or the seconds given; nonsense is a configuration error', () => {
    expect(watchIntervalMs(undefined)).toBeUndefined();
    expect(watchIntervalMs(true)).toBe(2_000);
    expect(watchIntervalMs('5')).toBe(5_000);
    expect(watchIntervalMs('0.5')).toBe(500);
    expect(() => watchIntervalMs('abc')).toThrow(/--watch: expected seconds between 0.5 and 3600/);
    expect(() => watchIntervalMs('0')).toThrow(/--watch/);
  });
});

describe('status and resync with MongoDB unreachable (issue 13)', () => {
  it('name MongoDB, its host and MONGO_CLIENT instead of a bare connection error', async () => {
    const config = loadBootstrapConfig({
      env: {
        MONGO_CLIENT:
          'mongodb://archiver:secret@127.0.0.1:1/?serverSelectionTimeoutMS=300&directConnection=true',
        BIGQUERY_PROJECT: 'my-project',
        BIGQUERY_DATASET: 'acquisitions',
      },
      path: '/nonexistent/config.json',
    });
    const failure = showStatus(config, {}, { write: () => undefined });
    await expect(failure).rejects.toThrow(/^MongoDB at 127\.0\.0\.1:1 .*check MONGO_CLIENT/);
    await expect(failure).rejects.not.toThrow(/secret/);
  });
});

describe('status: oplog headroom (issue 14)', () => {
  /** A day's window whose newest entry is at T0, as the recorded replica set's (test/fixtures/oplog). */
  const window = { source: 'rs0', firstSeconds: T0 / 1_000 - 86_400, lastSeconds: T0 / 1_000 };
  const at = (secondsBehind: number) => ({
    position: { token: '82aa', clusterTime: new Timestamp({ t: T0 / 1_000 - secondsBehind, i: 1 }) },
  });
  const streaming = { ...settings, status: { state: 'streaming' } };

  it('issue 14: an at-risk mapping no instance runs loses its history when its headroom runs out, and says so under its row', () => {
    // 20 h behind a day's window: 4 h left, under 25% (6 h). Its status says stopped: nothing moves it on.
    const stopped = { ...settings, status: { state: 'stopped' } };
    const shown = mappingOverview(
      { settings: stopped, checkpoint: at(20 * 3_600), holder: null },
      T0,
      undefined,
      {
        window,
        warnRatio: 0.25,
      },
    );
    expect(shown.oplog).toEqual({
      windowSeconds: 86_400,
      lagSeconds: 72_000,
      headroomSeconds: 14_400,
      atRisk: true,
      filling: false,
      lagRate: 1,
      lostInSeconds: 14_400,
    });
    const lines = renderStatusTable([shown], T0);
    expect(lines[2]).toBe('  ↳ oplog headroom 4h00m of 1d00h: history lost in ~4h00m at the current rate');
  });

  it('issue 14: under --watch the rate is the lag’s growth between two reads (a mapping falling behind at half speed)', () => {
    const shown = mappingOverview(
      { settings: streaming, checkpoint: at(20 * 3_600), holder: 'host-a:1' },
      T0,
      undefined,
      { window, warnRatio: 0.25, earlier: { lagSeconds: 72_000 - 30, atMs: T0 - 60_000 } },
    );
    expect(shown.oplog).toMatchObject({ lagRate: 0.5, lostInSeconds: 28_800 });
    expect(renderStatusTable([shown], T0, 80).at(-1)).toBe(
      '  ↳ oplog headroom 4h00m of 1d00h: history lost in ~8h00m at the current rate',
    );
  });

  it('issue 14: a running mapping read once, or catching up, has only its headroom said', () => {
    const once = mappingOverview(
      { settings: streaming, checkpoint: at(20 * 3_600), holder: 'host-a:1' },
      T0,
      undefined,
      {
        window,
        warnRatio: 0.25,
      },
    );
    expect(once.oplog).toMatchObject({ atRisk: true, lagRate: null, lostInSeconds: null });
    expect(renderStatusTable([once], T0).at(-1)).toBe(
      '  ↳ oplog headroom 4h00m of 1d00h; `status --watch` shows the rate',
    );
    const catchingUp = mappingOverview(
      { settings: streaming, checkpoint: at(20 * 3_600), holder: 'host-a:1' },
      T0,
      undefined,
      { window, warnRatio: 0.25, earlier: { lagSeconds: 80_000, atMs: T0 - 60_000 } },
    );
    expect(catchingUp.oplog?.lostInSeconds).toBeNull();
    expect(renderStatusTable([catchingUp], T0).at(-1)).toBe(
      '  ↳ oplog headroom 4h00m of 1d00h; the lag is not growing',
    );
  });

  it('issue 14: a mapping with headroom to spare adds no line; a backfill without a position counts from its snapshot start', () => {
    const fine = mappingOverview(
      { settings: streaming, checkpoint: at(60), holder: 'host-a:1' },
      T0,
      undefined,
      {
        window,
        warnRatio: 0.25,
      },
    );
    expect(fine.oplog).toMatchObject({ headroomSeconds: 86_340, atRisk: false });
    expect(renderStatusTable([fine], T0)).toHaveLength(2);
    const copying = mappingOverview(
      {
        settings: { ...settings, status: { state: 'backfilling' } },
        checkpoint: backfilling(10),
        holder: 'h',
      },
      T0,
      undefined,
      { window, warnRatio: 0.25 },
    );
    expect(copying.oplog).toMatchObject({ lagSeconds: 600, headroomSeconds: 85_800 });
  });

  it('issue 14: without a readable window there is no headroom, and the table is as before', () => {
    const shown = mappingOverview({ settings: streaming, checkpoint: at(20 * 3_600), holder: null }, T0);
    expect(shown.oplog).toBeNull();
    expect(renderStatusTable([shown], T0)).toHaveLength(2);
  });
});
