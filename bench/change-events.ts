// Recorded change events for the pipeline benchmark: deterministic, shaped like MongoDB 7.0's on a replica
// set (test/fixtures/change-events/real-mongodb-7.json) around the `nested-1KB` documents of shapes.ts.
import { setTimeout as sleep } from 'node:timers/promises';
import { deserialize, serialize, Double, ObjectId, Timestamp } from 'bson';
import { shapeDocuments } from './shapes.js';

/** Share of each operation type among the recorded events (updates carry the looked-up document). */
export const OPERATION_MIX = { insert: 0.4, update: 0.4, replace: 0.1, delete: 0.1 } as const;

const FIRST_SECOND = 1_764_000_000;
const COLLECTION_UUID = 'B1E2F3A4B5C6D7E8F9A0B1C2D3E4F5A6';
/** Template documents reused round-robin (with a fresh `_id`), so generating a million stays cheap. */
const TEMPLATES = 2_000;
/** Where a document's ObjectId `_id` starts when it is the first element: size (4), type (1), "_id" and NUL (4). */
const ID_OFFSET = 9;

function hex(value: number, width: number): string {
  return value.toString(16).toUpperCase().padStart(width, '0');
}

/** A resume token `_data` in MongoDB's KeyString form: 0x82, the cluster time, then the document key. */
function resumeToken(t: number, i: number, id: ObjectId): string {
  return `82${hex(t, 8)}${hex(i, 8)}2B022C0100296E5A1004${COLLECTION_UUID}463C5F6964003C${id.toHexString().toUpperCase()}000004`;
}

function operationAt(n: number): keyof typeof OPERATION_MIX {
  // A fixed pattern of 10 rather than random draws: every slice of the recording has the same mix.
  const slot = n % 10;
  return slot < 4 ? 'insert' : slot < 8 ? 'update' : slot < 9 ? 'replace' : 'delete';
}

/** The template documents, decoded keeping every BSON type (Int32, Double, Long) as it was. */
function templates(): Record<string, unknown>[] {
  return shapeDocuments('nested-1KB', TEMPLATES).map((bytes) => deserialize(bytes, { promoteValues: false }));
}

/** `count` change events as the server sends them: BSON bytes, each one event. */
export function recordedChangeEvents(count: number): Uint8Array[] {
  const docs = templates();
  const ids = docs.map(() => new ObjectId());
  const events: Uint8Array[] = [];
  for (let n = 0; n < count; n++) {
    const template = docs[n % docs.length] ?? {};
    const id = ids[Math.floor(n / 2) % ids.length] ?? new ObjectId();
    const t = FIRST_SECOND + Math.floor(n / 3);
    const i = (n % 3) + 1;
    const operationType = operationAt(n);
    const event: Record<string, unknown> = {
      _id: { _data: resumeToken(t, i, id) },
      operationType,
      clusterTime: new Timestamp({ t, i }),
      wallTime: new Date(t * 1000 + (n % 1000)),
    };
    if (operationType !== 'delete') event.fullDocument = { ...template, _id: id };
    event.ns = { db: 'bidding', coll: 'ad_cpta' };
    event.documentKey = { _id: id };
    if (operationType === 'update') {
      event.updateDescription = {
        updatedFields: {
          'lifetime_to_timestamp.spend': new Double(n / 7),
          updated: new Date(t * 1000),
          'flags.a': n % 2 === 0,
        },
        removedFields: [],
        truncatedArrays: [],
      };
    }
    events.push(serialize(event));
  }
  return events;
}

/**
 * What a backfill reads: `total` documents in `_id` order, `chunk` at a time, decoded as the driver decodes
 * them (a fresh object per document, from BSON). Nothing is kept between chunks. Each chunk's read waits
 * `roundTripMs` first (a timer: a round trip to MongoDB costs the reader no CPU); with 0 it only yields to
 * the event loop.
 */
export async function* generatedCollection(
  total: number,
  chunk: number,
  decodeOptions: Parameters<typeof deserialize>[1],
  roundTripMs = 0,
): AsyncGenerator<Record<string, unknown>[]> {
  const bodies = shapeDocuments('nested-1KB', TEMPLATES);
  // ObjectIds from a counter: increasing, as `_id` order needs, and distinct for any collection size.
  const base = new ObjectId().id.subarray(0, 8);
  for (let start = 0; start < total; start += chunk) {
    // The read's round trip, before its documents arrive and are decoded.
    if (roundTripMs > 0) await sleep(roundTripMs);
    const end = Math.min(total, start + chunk);
    const docs: Record<string, unknown>[] = [];
    for (let n = start; n < end; n++) {
      const body = bodies[n % bodies.length] ?? new Uint8Array();
      // The template's first element is its ObjectId `_id`: overwrite its 12 bytes, then decode.
      body.set(base, ID_OFFSET);
      new DataView(body.buffer, body.byteOffset).setUint32(ID_OFFSET + 8, n);
      docs.push(deserialize(body, decodeOptions));
    }
    // Without a simulated round trip, still yield to the event loop between chunks, as any real read does.
    if (roundTripMs === 0) await new Promise((resolve) => setImmediate(resolve));
    yield docs;
  }
}
