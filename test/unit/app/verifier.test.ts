import { describe, expect, it } from 'vitest';
import { createMappingVerifier, type MappingVerifierDeps } from '../../../src/app/verifier.js';
import { type ClusterTime, type Position } from '../../../src/core/model.js';
import { type SourceDocument } from '../../../src/core/ports.js';
import { encodeId } from '../../../src/mongodb/checkpoint-store.js';
import { parseColumnSpecs } from '../../../src/schema/column-spec.js';
import { compileDocumentHash } from '../../../src/transform/row-digest.js';
import { compileRowMapper } from '../../../src/transform/row-mapper.js';
import { docIdKey, inRange, rangeBounds, type IdKey } from '../../../src/transform/id-order.js';
import { docIdString } from '../../../src/transform/values.js';
import { FakeSnapshotSource } from '../../support/fakes/snapshot-source.js';
import { FakeViewReader } from '../../support/fakes/view-reader.js';

const COLUMNS = parseColumnSpecs([
  { name: 'id', type: 'INTEGER', mongo_field: '_id' },
  { name: 'n', type: 'INTEGER' },
]).columns;
const mapper = compileRowMapper(COLUMNS);
// What BigQueryViewReader computes: the SQL hash of the row XOR the hash of its JSON content.
const hash = compileDocumentHash(COLUMNS);

/** A collection of `count` documents, a view holding exactly their rows, and a daemon's position. */
function world(count: number) {
  const documents: Record<string, unknown>[] = Array.from({ length: count }, (_, i) => ({ _id: i, n: i }));
  const source = new FakeSnapshotSource(documents, 7);
  const view = new FakeViewReader(hash);
  for (const doc of documents) view.rows.set(docIdString(doc._id), mapper.map(doc).row);
  let now: ClusterTime = { t: 100, i: 0 };
  let running = true;
  const stopped: Position = { token: 'a', clusterTime: { t: 1, i: 0 } };
  const deps: MappingVerifierDeps = {
    mapping: 'm1',
    view: 'p.d.t_view',
    source,
    sides: () => Promise.resolve({ reader: view, mapper }),
    ranges: 4,
    settleTimeoutMs: 200,
    settlePollMs: 5,
    clusterTime: () => {
      now = { t: now.t + 1, i: 0 };
      return Promise.resolve(now);
    },
    // A running daemon: its checkpoint passes every time read so far.
    position: () => Promise.resolve(running ? { token: 'b', clusterTime: now } : stopped),
  };
  const stopDaemon = () => {
    running = false;
  };
  return { documents, source, view, deps, stopDaemon };
}

const keyOf = (doc: SourceDocument): IdKey => {
  const key = docIdKey(docIdString(doc._id));
  if (key === undefined) throw new Error('an id verify places');
  return key;
};

const signal = () => AbortSignal.timeout(10_000);
const rowOf = (doc: SourceDocument) => mapper.map(doc).row;

describe('MappingVerifier', () => {
  it('finds a collection and its view equal, over every range, with the bytes the reads scanned', async () => {
    const { deps, view } = world(50);
    const report = await createMappingVerifier(deps).verify({}, signal());
    expect(report).toMatchObject({
      mapping: 'm1',
      rangesChecked: 4,
      documentsChecked: 50,
      differingRanges: [],
      missing: { count: 0, ids: [] },
      extra: { count: 0, ids: [] },
      differing: { count: 0, ids: [] },
      bytesScanned: 1_000,
    });
    expect(report.settled).toBeUndefined();
    expect(view.reads).toEqual(['ranges']);
  });

  it('names documents missing from the view, extra in it, and differing, each in its list', async () => {
    const { deps, view } = world(50);
    view.rows.delete(docIdString(3));
    view.rows.delete(docIdString(40));
    view.rows.set(docIdString(1_000), rowOf({ _id: 1_000, n: 1 }));
    view.rows.set(docIdString(20), rowOf({ _id: 20, n: -20 }));
    const report = await createMappingVerifier(deps).verify({}, signal());
    expect(report.missing).toEqual({ count: 2, ids: [docIdString(3), docIdString(40)].sort() });
    expect(report.extra).toEqual({ count: 1, ids: [docIdString(1_000)] });
    expect(report.differing).toEqual({ count: 1, ids: [docIdString(20)] });
    // 3 in the first range, 20 in the second, 40 and the extra 1000 in the last, each in a range of its own
    // that ends at it: 40 in a chunk, 1000 past MongoDB's last id.
    expect(report.differingRanges).toHaveLength(4);
    expect(report.differingRanges.map((range) => range.upTo)).toEqual(
      [3, 20, 40, 1_000].map((id) => encodeId(id)),
    );
  });

  it('review finding 4: narrows a differing range to the chunks that differ, and reads only those by id', async () => {
    const { deps, documents, source, view } = world(200);
    view.rows.set(docIdString(3), rowOf({ _id: 3, n: -3 }));
    view.rows.delete(docIdString(130));
    const report = await createMappingVerifier(deps).verify({}, signal());
    expect(report.differing.ids).toEqual([docIdString(3)]);
    expect(report.missing.ids).toEqual([docIdString(130)]);
    // Each differing range holds the document that differs alone (narrowed within its chunk of 7), not a
    // fourth of the collection, so a repair copies only that.
    expect(report.differingRanges).toHaveLength(2);
    for (const [i, range] of report.differingRanges.entries()) {
      const inside = documents.filter((d) => inRange(keyOf(d), rangeBounds(range)));
      expect(inside.map((d) => d._id)).toEqual([[3], [130]][i]);
    }
    // Read once in chunks (4 ranges of 50: 8 chunks and an empty read each), then each differing chunk twice
    // by id (a chunk and an empty read each time): never a whole range held by id.
    expect(source.reads.length).toBeLessThanOrEqual(4 * 9 + 2 * 2 * 2);
  });

  it('review finding 4: narrows a chunk to the span from the first to the last document that differs', async () => {
    const { deps, documents, view } = world(50);
    // Ids 7 to 13 are one chunk; 9 and 11 differ, 10 between them does not.
    for (const id of [9, 11]) view.rows.set(docIdString(id), rowOf({ _id: id, n: -1 }));
    const report = await createMappingVerifier(deps).verify({}, signal());
    expect(report.differingRanges).toEqual([{ after: encodeId(8), upTo: encodeId(11) }]);
    expect(
      documents.filter((d) => inRange(keyOf(d), rangeBounds({ after: encodeId(8), upTo: encodeId(11) }))),
    ).toHaveLength(3);
  });

  it('review finding 4: compares the sub-ranges of a range in batches, and finds differences in each', async () => {
    const { deps, documents, view } = world(250);
    // One range of 250 chunks of one document: three queries of sub-range digests.
    const source = new FakeSnapshotSource(documents, 1);
    for (const id of [0, 120, 249]) view.rows.set(docIdString(id), rowOf({ _id: id, n: -1 }));
    const report = await createMappingVerifier({ ...deps, source, ranges: 1 }).verify({}, signal());
    expect(report.differing.ids).toEqual([0, 120, 249].map((id) => docIdString(id)).sort());
    expect(report.differingRanges).toHaveLength(3);
    expect(view.reads.filter((r) => r === 'ranges')).toHaveLength(1 + 3);
  });

  // Issue 14: `_unmapped` was compared by presence only, so a field waiting there whose value changed while
  // the history was lost was never reported, and a repair left the view wrong.
  it('names documents whose _unmapped content alone differs, narrowed, and not those BigQuery respelt', async () => {
    const { deps, documents, view } = world(50);
    for (const doc of documents) doc.extra = { note: `v${String(doc._id)}`, at: [1, 2.5] };
    for (const doc of documents) {
      const row = rowOf(doc);
      // Every row's JSON text as BigQuery may give it back: keys reordered, numbers respelt, whitespace.
      row._unmapped = `{ "extra": { "at": [1.0, 25e-1], "note": "v${String(doc._id)}" } }`;
      view.rows.set(docIdString(doc._id), row);
    }
    const clean = await createMappingVerifier(deps).verify({}, signal());
    expect(clean.differing.count + clean.missing.count + clean.extra.count).toBe(0);

    // In MongoDB, with the daemon stopped: only a field in `_unmapped` changes, in two documents.
    for (const id of [9, 30]) {
      const doc = documents[id];
      if (doc) doc.extra = { note: 'changed', at: [1, 2.5] };
    }
    const report = await createMappingVerifier(deps).verify({}, signal());
    expect(report.differing).toEqual({ count: 2, ids: [docIdString(9), docIdString(30)].sort() });
    expect(report.missing.count + report.extra.count).toBe(0);
    expect(report.differingRanges).toEqual([
      { after: encodeId(8), upTo: encodeId(9) },
      { after: encodeId(29), upTo: encodeId(30) },
    ]);
  });

  it('reports no change in flight: a view that catches up, a document changed between the reads', async () => {
    const { deps, view, documents } = world(50);
    // Document 5 was just changed in MongoDB and is not in the view yet; the daemon writes it before the
    // view is read again.
    const five = documents[5];
    if (five) five.n = 555;
    let reads = 0;
    const eight = documents[8];
    view.beforeRead = () => {
      reads++;
      // Read 1 compares ranges, reads 2 and 3 name ids. Document 8 (in 5's range) changes in MongoDB
      // after the first read of MongoDB, and reaches the view only before the last read: the first read
      // that names ids sees it differ, the second does not.
      if (reads === 1 && eight) eight.n = 888;
      if (reads === 2 && five) view.rows.set(docIdString(5), rowOf(five));
      if (reads === 3 && eight) view.rows.set(docIdString(8), rowOf(eight));
    };
    const report = await createMappingVerifier(deps).verify({}, signal());
    expect(report.missing.count + report.extra.count + report.differing.count).toBe(0);
    expect(report.differingRanges).toEqual([]);
  });

  it('says when the checkpoint did not pass the reads, and reports what persisted after the wait', async () => {
    const { deps, view, stopDaemon } = world(20);
    stopDaemon();
    view.rows.delete(docIdString(7));
    // Regression (review finding 13): elapsed wall time could not tell one wait from three. A fake clock
    // moves 50 ms per reading of the checkpoint: one wait of the settle timeout (200 ms) reads it 4 times
    // (the clock then at 50, 100, 150, 200); a wait per read (the first read and two id reads) reads it 12.
    let now = 0;
    let positionReads = 0;
    const position = deps.position;
    const report = await createMappingVerifier({
      ...deps,
      settlePollMs: 0,
      clock: { now: () => now },
      position: (s) => {
        positionReads++;
        now += 50;
        return position(s);
      },
    }).verify({}, signal());
    expect(report.settled).toBe(false);
    expect(report.missing.ids).toEqual([docIdString(7)]);
    expect(positionReads).toBe(4);
  });

  it('checks a share of the ranges in turn across runs', async () => {
    const { deps, view } = world(80);
    const verifier = createMappingVerifier(deps);
    view.rows.delete(docIdString(79));
    const first = await verifier.verify({ share: 0.5 }, signal());
    const second = await verifier.verify({ share: 0.5 }, signal());
    expect([first.rangesChecked, second.rangesChecked]).toEqual([2, 2]);
    expect(first.documentsChecked + second.documentsChecked).toBe(80);
    expect([first.missing.count, second.missing.count]).toEqual([0, 1]);
  });

  it('counts documents whose _id type it cannot place, and compares the others', async () => {
    const { deps, documents } = world(10);
    documents.push({ _id: 2.5, n: 1 });
    const report = await createMappingVerifier(deps).verify({}, signal());
    expect(report.unverifiable).toBe(1);
    expect(report.documentsChecked).toBe(10);
  });
});
