import { readFileSync } from 'node:fs';
import { EJSON, type ObjectId } from 'bson';
import { describe, expect, it } from 'vitest';
import { changeSeq, backfillSeq, type ChangeEvent } from '../../../src/core/model.js';
import { normalizeChangeEvent, SplitEventAssembler } from '../../../src/mongodb/change-event.js';

function fixtures(name: string): Record<string, unknown> {
  const text = readFileSync(new URL(`../../fixtures/change-events/${name}`, import.meta.url), 'utf8');
  // Decoded as the driver does (relaxed: numbers promoted).
  return EJSON.parse(text, { relaxed: true }) as Record<string, unknown>;
}

const real = fixtures('real-mongodb-7.json');
const peers = fixtures('peers.json');
const event = (source: Record<string, unknown>, key: string): ChangeEvent =>
  normalizeChangeEvent(source[key] as Record<string, unknown>);

describe('change events from real MongoDB (recorded shapes)', () => {
  it('reads insert, update and replace as upserts of the looked-up document', () => {
    const insert = event(real, 'insert');
    expect(insert).toMatchObject({
      kind: 'upsert',
      operationType: 'insert',
      clusterTime: { t: 1705095875, i: 1 },
    });
    expect(insert.kind === 'upsert' && (insert.documentId as ObjectId).toHexString()).toBe(
      '65a1b2c3d4e5f60718293a4b',
    );
    expect(event(real, 'update')).toMatchObject({
      kind: 'upsert',
      operationType: 'update',
      document: { spend: 40 },
    });
    expect(event(real, 'replace')).toMatchObject({ kind: 'upsert', operationType: 'replace', documentId: 1 });
  });

  // Defect 4 of the original: an update whose fullDocument is null crashed the worker and re-ran a backfill.
  it('defect 4: an update whose document was deleted since is a lookup miss, not a crash', () => {
    const missed = event(real, 'updateAfterDelete');
    expect(missed.kind).toBe('lookup-missed');
    expect(missed.kind === 'lookup-missed' && (missed.documentId as ObjectId).toHexString()).toBe(
      '65a1b2c3d4e5f60718293a4c',
    );
  });

  it('reads a delete with its document key', () => {
    expect(event(real, 'delete')).toMatchObject({
      kind: 'delete',
      documentId: 1,
      clusterTime: { t: 1705095879, i: 1 },
    });
  });

  it('keeps the order of the events of one transaction, which share a cluster time', () => {
    const [a, b] = (real.transaction as Record<string, unknown>[]).map((raw) => normalizeChangeEvent(raw));
    if (!a || !b) throw new Error('fixture');
    expect(a.clusterTime).toEqual(b.clusterTime);
    expect(changeSeq(a) < changeSeq(b)).toBe(true);
  });

  it('turns drop, rename, dropDatabase and invalidate into a collection-gone marker', () => {
    for (const key of ['drop', 'rename', 'dropDatabase', 'invalidate']) {
      expect(event(real, key)).toMatchObject({ kind: 'collection-gone', operationType: key });
    }
  });

  it('ignores expanded events such as createIndexes, but keeps their position', () => {
    expect(event(real, 'createIndexes')).toMatchObject({ kind: 'ignored', operationType: 'createIndexes' });
  });

  it('refuses an event without a resume token or cluster time', () => {
    expect(() => normalizeChangeEvent({ operationType: 'insert' })).toThrow(/resume token/);
    expect(() => normalizeChangeEvent({ _id: { _data: '82' }, operationType: 'insert' })).toThrow(
      /clusterTime/,
    );
  });

  it('sorts a backfill row before every change from the snapshot start on', () => {
    const insert = event(real, 'insert');
    expect(backfillSeq(insert.clusterTime) < changeSeq(insert)).toBe(true);
    expect(backfillSeq({ t: insert.clusterTime.t + 1, i: 0 }) > changeSeq(insert)).toBe(true);
  });
});

describe('change events from the test peers', () => {
  it('mongo-java-server: update spec as documentKey, id from the full document', () => {
    const update = event(peers, 'mongoJavaServerUpdate');
    expect(update.kind === 'upsert' && (update.documentId as ObjectId).toHexString()).toBe(
      '6b06fc9192a16831c4f0c5a0',
    );
    expect(event(peers, 'mongoJavaServerReplaceAsUpdate')).toMatchObject({ kind: 'upsert', documentId: 1 });
  });

  it('mongo-java-server: a lookup of a deleted document yields a document without _id, read as a miss', () => {
    expect(event(peers, 'mongoJavaServerLookupOfDeleted').kind).toBe('lookup-missed');
    expect(event(peers, 'mongoJavaServerDelete').kind).toBe('delete');
  });

  it('mongo-java-server: an invalidate replayed on resume after a drop takes its time from its token', () => {
    // Recorded: `resumeAfter` any token taken after a drop answers with this event, carrying that token.
    expect(event(peers, 'mongoJavaServerReplayedInvalidate')).toEqual({
      kind: 'collection-gone',
      operationType: 'invalidate',
      token: '6b071ddc00000005',
      clusterTime: { t: 0x6b071ddc, i: 5 },
    });
  });

  it('PoppyDB: clusterTime as epoch milliseconds', () => {
    expect(event(peers, 'poppyDbInsert').clusterTime).toEqual({ t: 1795619985, i: 123 });
  });
});

describe('split change events (issue 10 item 13)', () => {
  const fragment = (n: number, of: number, extra: Record<string, unknown> = {}) => ({
    _id: { _data: `token-${n}` },
    splitEvent: { fragment: n, of },
    ...extra,
  });

  it('puts the fragments together, the last token as the id, and refuses them out of order', () => {
    const assembler = new SplitEventAssembler();
    expect(assembler.add(fragment(1, 2, { operationType: 'insert' }))).toBeUndefined();
    expect(assembler.pending).toBe(true);
    expect(assembler.add(fragment(2, 2, { fullDocument: { _id: 1 } }))).toEqual({
      _id: { _data: 'token-2' },
      operationType: 'insert',
      fullDocument: { _id: 1 },
    });
    expect(assembler.pending).toBe(false);
    expect(() => assembler.add(fragment(2, 2))).toThrow(/fragment 2 of 2 arrived where fragment 1 was due/);
    assembler.reset();
    assembler.add(fragment(1, 3));
    expect(() => assembler.add({ _id: { _data: 'whole' } })).toThrow(
      /whole change event arrived after fragment 1 of 3/,
    );
  });
});
