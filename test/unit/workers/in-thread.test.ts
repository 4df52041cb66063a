import { readFileSync } from 'node:fs';
import { deserialize, EJSON, serialize, type Document } from 'bson';
import { describe, expect, it } from 'vitest';
import { BSON_DECODE_OPTIONS } from '../../../src/base/bson-kind.js';
import { type ChangeEvent, type Position } from '../../../src/core/model.js';
import { type ChangeBatch, type RawChange, type RawChangeBatch } from '../../../src/core/ports.js';
import { type PreparedBatch } from '../../../src/core/prepared.js';
import { prepareInThread, rowBytes } from '../../../src/core/stream-loop.js';
import { normalizeChangeEvent, SplitEventAssembler } from '../../../src/mongodb/change-event.js';
import { type ColumnSpec } from '../../../src/schema/types.js';
import { compileRowMapper } from '../../../src/transform/row-mapper.js';
import { prepareRawInThread } from '../../../src/workers/in-thread.js';

function fixture(name: string): Record<string, unknown> {
  return EJSON.parse(readFileSync(new URL(`../../fixtures/change-events/${name}`, import.meta.url), 'utf8'), {
    relaxed: false,
  }) as Record<string, unknown>;
}

/** A fixture's events: each entry one event, an array of events, or (the split fixture) the fragments of one. */
function eventsOf(name: string): Document[][] {
  const { _comment: _, ...entries } = fixture(name);
  return Object.entries(entries).flatMap(([key, value]): Document[][] => {
    const documents = (Array.isArray(value) ? value : [value]) as Document[];
    // The fragments of one split event stay together; the other arrays are events one after the other.
    return key === 'fragments' || key === 'splitSpend'
      ? [documents]
      : documents.map((document) => [document]);
  });
}

/**
 * Every recorded shape: MongoDB 7.0's collection-level and database-level events, a split event, and the
 * test peers' variants (mongo-java-server, PoppyDB).
 */
const EVENTS: readonly Document[][] = [
  ...eventsOf('real-mongodb-7.json'),
  ...eventsOf('real-mongodb-7-database.json'),
  ...eventsOf('real-mongodb-7-split.json'),
  ...eventsOf('peers.json'),
];

/** What the decoded stream (MongoChangeSource) makes of an event: decoded by the driver, fragments put together. */
function decodedAsTheDriverDoes(fragments: readonly Document[]): ChangeEvent {
  const assembler = new SplitEventAssembler();
  let whole: Readonly<Record<string, unknown>> | undefined;
  for (const fragment of fragments)
    whole = assembler.add(deserialize(serialize(fragment), BSON_DECODE_OPTIONS));
  if (whole === undefined) throw new Error('the fixture holds a split event without its last fragment');
  const event = normalizeChangeEvent(whole);
  return fragments.length > 1 ? { ...event, split: true } : event;
}

const COLUMNS: readonly ColumnSpec[] = [
  { name: 'tracking_code', type: 'INTEGER' },
  { name: 'spend', type: 'FLOAT' },
  { name: 'state', type: 'STRING' },
];
const POSITION: Position = {
  token: '8265A1B4000000000A2B0229296E04',
  clusterTime: { t: 1_705_096_192, i: 10 },
};
const NOW = new Date(Date.UTC(2026, 11, 6, 10));
const signal = new AbortController().signal;

/** Everything the stream loop and the sink read of a prepared batch, rows built. */
function observable(batch: PreparedBatch) {
  return {
    position: batch.position,
    changes: batch.changes.map((change) => ({
      kind: change.kind,
      operationType: change.operationType,
      token: change.token,
      clusterTime: change.clusterTime,
      split: change.split,
      record: change.record && {
        eventId: change.record.eventId,
        docId: change.record.docId,
        row: change.record.row(),
        document: change.record.document(),
        encoded: change.record.encoded,
      },
    })),
  };
}

describe('raw pulls prepared on this thread (issue 12: a database-level stream without worker threads)', () => {
  it('gives the records the decoded stream gives for the same events, every recorded shape', async () => {
    const mapper = compileRowMapper(COLUMNS, { captureUnmapped: true });
    const encode = (row: Readonly<Record<string, unknown>>) => ({ size: rowBytes(row) });
    const evolvedFor: { decoded: unknown[]; raw: unknown[] } = { decoded: [], raw: [] };
    const decoded = prepareInThread({
      mapper: () => mapper,
      encode,
      beforeMap: (events) => {
        evolvedFor.decoded.push(...events);
        return Promise.resolve();
      },
    });
    const raw = prepareRawInThread({
      mapper: () => mapper,
      encode,
      beforeMap: (events) => {
        evolvedFor.raw.push(...events);
        return Promise.resolve();
      },
    });
    const decodedBatch: ChangeBatch = { events: EVENTS.map(decodedAsTheDriverDoes), position: POSITION };
    const rawBatch: RawChangeBatch = {
      changes: EVENTS.map((fragments): RawChange => fragments.map((fragment) => serialize(fragment))),
      position: POSITION,
    };
    const fromDecoded = observable(await decoded(decodedBatch, NOW, signal));
    const fromRaw = observable(await raw(rawBatch, NOW, signal));
    expect(fromRaw).toEqual(fromDecoded);
    // The schema evolves for the same events, decoded alike.
    expect(evolvedFor.raw).toEqual(evolvedFor.decoded);
    // Not vacuous: rows of upserts, deletes and drop markers, a split event, ignored changes.
    const kinds = new Set(fromRaw.changes.map((change) => change.kind));
    expect([...kinds].sort()).toEqual(['collection-gone', 'delete', 'ignored', 'lookup-missed', 'upsert']);
    expect(fromRaw.changes.filter((change) => change.split === true)).toHaveLength(2);
    expect(fromRaw.changes.filter((change) => change.record !== undefined).length).toBeGreaterThan(20);
  });

  it('passes an idle pull’s position on, and a change it cannot read fails the pull', async () => {
    const mapper = compileRowMapper(COLUMNS);
    const prepare = prepareRawInThread({ mapper: () => mapper });
    expect(await prepare({ changes: [], position: POSITION }, NOW, signal)).toEqual({
      changes: [],
      position: POSITION,
    });
    const tokenless = serialize({ operationType: 'insert', fullDocument: { _id: 1 } });
    await expect(prepare({ changes: [[tokenless]], position: POSITION }, NOW, signal)).rejects.toThrow(
      /resume token/,
    );
  });
});
