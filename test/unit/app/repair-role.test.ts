import { describe, expect, it } from 'vitest';
import { beginRepair, runRepair, type RepairRoleOptions } from '../../../src/app/repair-role.js';
import { backfillSeq } from '../../../src/core/model.js';
import { type IdRange } from '../../../src/core/ports.js';
import { type RecordSink } from '../../../src/core/stream-loop.js';
import { decodeId, encodeId, type RepairProgress } from '../../../src/mongodb/checkpoint-store.js';
import { docIdValue } from '../../../src/mongodb/existing-ids.js';
import { createLogger } from '../../../src/observability/logger.js';
import { compileRowMapper } from '../../../src/transform/row-mapper.js';
import { HeldSink } from '../../support/fakes/held-sink.js';
import {
  FakeExistingIds,
  FakeViewReader,
  MemoryRepairStore,
  numberDocId,
} from '../../support/fakes/repair.js';
import { FakeSnapshotSource, numberedDocuments } from '../../support/fakes/snapshot-source.js';

const SNAPSHOT = { t: 1_700_000_000, i: 7 };
const never = new AbortController().signal;
/** Ids 10..19 and 60..69. */
const RANGE_A: IdRange = { after: encodeId(9), upTo: encodeId(19) };
const RANGE_B: IdRange = { after: encodeId(59), upTo: encodeId(69) };
const RANGES: IdRange[] = [RANGE_A, RANGE_B];

function idOf(docId: string | null): number {
  return Number((JSON.parse(String(docId)) as { $numberInt: string }).$numberInt);
}

function inRanges(id: number): boolean {
  return (id >= 10 && id <= 19) || (id >= 60 && id <= 69);
}

function setup(options: { collection: number[]; view: number[]; sink?: RecordSink }) {
  const documents = numberedDocuments(100).filter((d) => options.collection.includes(d._id as number));
  const source = new FakeSnapshotSource(documents, 4);
  const held = new HeldSink(true);
  const view = new FakeViewReader(new Set(options.view));
  const existing = new FakeExistingIds(new Set(options.collection));
  const store = new MemoryRepairStore();
  const lines: Record<string, unknown>[] = [];
  const role: RepairRoleOptions = {
    source,
    sink: options.sink ?? held,
    store,
    schema: { mapper: compileRowMapper([]), evolve: () => Promise.resolve() },
    view,
    existing,
    idValue: (docId) => idOf(docId),
    log: createLogger({
      level: 'info',
      destination: { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) },
    }),
  };
  const progress = beginRepair(
    [{ id: 'r1', ranges: RANGES, reason: 'verify', requestedAt: new Date('2026-12-06T10:00:00Z') }],
    SNAPSHOT,
  );
  if (!progress) throw new Error('no progress for a request');
  return { source, held, view, existing, store, lines, role, progress };
}

const ALL = Array.from({ length: 100 }, (_, i) => i);

describe('runRepair', () => {
  it('reads and writes only the requested ranges, and says what it wrote', async () => {
    const { source, held, view, store, lines, role, progress } = setup({ collection: ALL, view: ALL });

    const result = await runRepair(role, progress, never);

    for (const read of source.reads) {
      const after = decodeId(read.range.after ?? '') as number;
      expect([9, 59]).toContain(after);
    }
    expect(view.asked).toEqual(RANGES);
    const written = held.acknowledged.map(idOf).sort((a, b) => a - b);
    expect(written).toEqual(ALL.filter(inRanges));
    expect(result).toMatchObject({ ranges: 2, documents: 20, deletes: 0 });
    expect(store.served).toEqual(result);
    expect(store.servedRequests).toEqual(['r1']);
    expect(lines.map((l) => l.msg)).toContain('repair wrote 20 rows (20 documents, 0 deletes) over 2 ranges');
  });

  it('writes a delete row at the snapshot start only for ids the view has and the collection lacks when checked', async () => {
    // MongoDB lost 12 and 64; the view has them, and a bogus 1000 outside the ranges.
    const collection = ALL.filter((id) => id !== 12 && id !== 64);
    const { held, existing, role, progress } = setup({ collection, view: [...ALL, 1000] });
    // After the snapshot start: 13 is deleted (the stream writes its delete too), 64 inserted again (its
    // insert sorts after the snapshot start; a delete row would be harmless but is not written).
    existing.ids = new Set([...collection.filter((id) => id !== 13), 64]);

    const result = await runRepair(role, progress, never);

    const deletes = held.writes
      .flatMap((w) => w.records)
      .filter((r) => r.eventId.startsWith('repair-delete:'));
    expect(deletes.map((r) => idOf(r.docId)).sort((a, b) => a - b)).toEqual([12, 13]);
    for (const record of deletes) {
      const row = record.row();
      expect(row.operationType).toBe('delete');
      expect(row._seq).toBe(backfillSeq(SNAPSHOT));
      expect(row._doc_id).toBe(record.docId);
    }
    expect(existing.checks.flat()).not.toContain(numberDocId(1000));
    expect(result).toMatchObject({ documents: 18, deletes: 2 });
  });

  it('leaves the request pending when a write fails, and a restart resumes where the repair stood', async () => {
    let failDeletes = true;
    let copyWrites = 0;
    const held = new HeldSink(true);
    const sink: RecordSink = {
      write: (records) => {
        if (records.some((r) => r.eventId.startsWith('repair-delete:'))) {
          if (failDeletes) return Promise.reject(new Error('BigQuery refused the write'));
        } else copyWrites++;
        return held.write(records);
      },
    };
    const collection = ALL.filter((id) => id !== 61);
    const { source, store, role, progress } = setup({ collection, view: ALL, sink });

    await expect(runRepair(role, progress, never)).rejects.toThrow('BigQuery refused the write');
    expect(store.served).toBeUndefined();
    const saved = store.progress;
    expect(saved?.backfill.done).toBe(true);
    expect(saved?.deletesDone).toEqual([true, false]);

    failDeletes = false;
    const readsBefore = source.reads.length;
    const writesBefore = copyWrites;
    if (!saved) throw new Error('no progress saved');
    const result = await runRepair(role, saved, never);

    expect(source.reads.length).toBe(readsBefore);
    expect(copyWrites).toBe(writesBefore);
    expect(result).toMatchObject({ documents: 19, deletes: 1 });
    expect(store.served).toEqual(result);
  });

  it('resumes a copy stopped by a failure from the acknowledged prefix of each range', async () => {
    const { source, store, role, progress } = setup({ collection: ALL, view: ALL });
    source.failRead = (range, lastId) =>
      range.after === encodeId(59) && lastId !== undefined ? new Error('read failed') : undefined;

    await expect(runRepair(role, progress, never)).rejects.toThrow('read failed');
    const saved: RepairProgress | undefined = store.progress;
    const second = saved?.backfill.ranges?.[1];
    expect(second?.lastId).toBe(encodeId(63));
    expect(store.served).toBeUndefined();

    source.failRead = undefined;
    source.reads.length = 0;
    if (!saved) throw new Error('no progress saved');
    const result = await runRepair(role, saved, never);

    expect(source.reads.map((r) => r.lastId)).not.toContain(undefined);
    expect(source.reads.some((r) => r.lastId === encodeId(63))).toBe(true);
    expect(result.documents).toBe(20);
  });

  it('starts no repair without a request, and serves every pending request with one snapshot start', () => {
    expect(beginRepair([], SNAPSHOT)).toBeUndefined();
    const later = new Date('2026-12-06T11:00:00Z');
    const progress = beginRepair(
      [
        { id: 'r1', ranges: [RANGE_A], reason: 'verify', requestedAt: new Date('2026-12-06T10:00:00Z') },
        { id: 'r2', ranges: [RANGE_B], reason: 'background', requestedAt: later },
      ],
      SNAPSHOT,
    );
    expect(progress?.through).toEqual(later);
    expect(progress?.requests).toEqual(['r1', 'r2']);
    expect(progress?.backfill.ranges?.map((r) => r.after)).toEqual([encodeId(9), encodeId(59)]);
    expect(progress?.deletesDone).toEqual([false, false]);
  });

  it('compares the view ids by canonical form, and writes a delete row with the view id as read (finding 2)', async () => {
    // An older writer left non-canonical ids: 12 still exists (no delete row, and never one with the live
    // document's canonical id), 13 is gone (its delete row carries the view's own _doc_id, so it matches).
    const collection = ALL.filter((id) => id !== 13);
    const { held, view, role, progress } = setup({ collection, view: [] });
    const asRead = ['{"$numberLong":"12"}', '{"$numberLong":"13"}'];
    view.documentDigests = (range) => {
      view.asked.push(range);
      const value = range.after === RANGE_A.after ? asRead : [];
      return Promise.resolve({ value: value.map((docId) => ({ docId, hash: 0n })), bytesScanned: 0 });
    };

    const result = await runRepair({ ...role, idValue: docIdValue }, progress, never);

    const deletes = held.writes
      .flatMap((w) => w.records)
      .filter((r) => r.eventId.startsWith('repair-delete:'));
    expect(deletes.map((r) => r.docId)).toEqual(['{"$numberLong":"13"}']);
    expect(deletes.map((r) => r.row()._doc_id)).toEqual(['{"$numberLong":"13"}']);
    expect(result.deletes).toBe(1);
  });

  it('closes every open-ended range at the greatest _id when the repair begins (finding 7)', () => {
    // Verify's last range has no upper bound: copied as it is, a collection growing at the top would keep
    // the copy going for ever (the stream archives what comes after the snapshot start anyway).
    const open: IdRange = { after: encodeId(89), upTo: undefined };
    const progress = beginRepair(
      [
        {
          id: 'r1',
          ranges: [RANGE_A, open],
          reason: 'verify',
          requestedAt: new Date('2026-12-06T10:00:00Z'),
        },
      ],
      SNAPSHOT,
      encodeId(99),
    );
    expect(progress?.backfill.ranges?.map((r) => [r.after, r.upTo])).toEqual([
      [RANGE_A.after, RANGE_A.upTo],
      [encodeId(89), encodeId(99)],
    ]);
  });

  it('still writes delete rows past the greatest _id: the delete pass runs over the range as requested (finding 7)', async () => {
    // The view has a bogus id above every document: closing the copy's range at the greatest _id must not
    // take it out of the delete pass.
    const { held, role } = setup({ collection: ALL, view: [...ALL, 150] });
    const open: IdRange = { after: encodeId(89), upTo: undefined };
    const progress = beginRepair(
      [{ id: 'r1', ranges: [open], reason: 'verify', requestedAt: new Date('2026-12-06T10:00:00Z') }],
      SNAPSHOT,
      encodeId(99),
    );
    if (!progress) throw new Error('no progress for a request');

    const result = await runRepair(role, progress, never);

    const deletes = held.writes
      .flatMap((w) => w.records)
      .filter((r) => r.eventId.startsWith('repair-delete:'));
    expect(deletes.map((r) => idOf(r.docId))).toEqual([150]);
    expect(result).toMatchObject({ documents: 10, deletes: 1 });
  });
});
