import { relaxedEjsonText } from '../transform/ejson.js';
import { type Row, type RowMapper } from '../transform/row-mapper.js';
import { docIdString } from '../transform/values.js';
import {
  backfillEventId,
  backfillSeq,
  changeEventId,
  changeSeq,
  clusterTimeIso,
  type ChangeEvent,
  type ClusterTime,
} from './model.js';

/** A complete history-table row (user columns, metadata, `_unmapped`) in insertAll wire form. */
export type HistoryRow = Readonly<Record<string, unknown>>;

/**
 * A row as a writer sends it, encoded once when it is batched (Storage Write: its protobuf bytes; insertAll:
 * its JSON): what a batch in flight holds instead of the row object. Only the writer that made it reads more
 * than its size.
 */
export interface EncodedRow {
  /** Its size in the writer's requests, for the batch limits. */
  readonly size: number;
}

/**
 * One history row, held as what builds it rather than as the row object: rows waiting for BigQuery live a
 * whole round trip, long enough to survive the young generation's collections and be copied into the old
 * one, and a row object is many small objects to copy. `row` maps the source document again (the same
 * mapper and times, so the same row) for a writer that cannot send `encoded` as it is; `document` gives the
 * dead-letter table's text, only when the row is dead-lettered.
 */
export interface HistoryRecord {
  /** `_event_id`: the dedup key, and the dead-letter row's `event_id`. */
  readonly eventId: string;
  /** `_doc_id`. */
  readonly docId: string | null;
  /** Called as a method (`record.row()`): a record may be a class instance. */
  row(): HistoryRow;
  /** The source document as relaxed Extended JSON text. */
  document(): string;
  /** The row as encoded for the writer when it was batched; absent, the sink encodes it. */
  readonly encoded?: EncodedRow | undefined;
}

/** A change with a history row: an upsert, a delete, or the collection gone (a drop marker). */
export type Writable = Extract<ChangeEvent, { kind: 'upsert' | 'delete' | 'collection-gone' }>;

/** Whether a change has a history row (upsert, delete, collection-gone). */
export function isWritable(event: ChangeEvent): event is Writable {
  switch (event.kind) {
    case 'upsert':
    case 'delete':
    case 'collection-gone':
      return true;
    case 'lookup-missed':
    case 'ignored':
      return false;
    default:
      return event satisfies never;
  }
}

const EMPTY_DOCUMENT: Readonly<Record<string, unknown>> = Object.freeze({});

let lastArchivedMs = Number.NaN;
let lastArchivedIso = '';

/** `time_archived`: the rows of one pull share their time, so its text is formatted once, not per row. */
function archivedIso(now: Date): string {
  const ms = now.getTime();
  if (ms !== lastArchivedMs) {
    lastArchivedIso = now.toISOString();
    lastArchivedMs = ms;
  }
  return lastArchivedIso;
}

/**
 * Completes a row the mapper just built (fresh, so ours to finish) with a change's metadata columns, in
 * place and in a fixed order after the user columns. Assigning keeps the row's fast object layout; copying
 * it with spreads cost more than mapping the document itself (`npm run bench:pipeline`, stages).
 */
function withChangeMetadata(
  row: Row,
  event: Writable,
  now: Date,
  operationType: string,
  docId: string | null,
): Row {
  row.time_archived = archivedIso(now);
  row._cluster_time = clusterTimeIso(event.clusterTime);
  row._seq = changeSeq(event);
  row._event_id = changeEventId(event);
  row.operationType = operationType;
  row._doc_id = docId;
  return row;
}

/**
 * The history record of a change: its row is user columns from the mapper plus the metadata columns
 * (docs/bigquery.md, "Tables and views"). It holds the event (the mapper and the time too), which is all its row and dead-letter text
 * come from; with `encode`, the row is built and encoded now, and only its encoding is kept.
 */
export function changeRecord(
  mapper: RowMapper,
  event: Writable,
  now: Date,
  encode?: (row: HistoryRow) => EncodedRow,
): HistoryRecord {
  const record = new ChangeRecord(mapper, event, now);
  if (encode) record.encoded = encode(record.row());
  return record;
}

/**
 * A change's record as one object whose methods build the row and the text: a batch in flight holds one
 * small object per change besides the event, where a pair of closures and their scope took several times
 * as much heap (measured by heap use after a full collection, 8,000 records held).
 */
class ChangeRecord implements HistoryRecord {
  readonly eventId: string;
  readonly docId: string | null;
  encoded: EncodedRow | undefined;
  readonly #mapper: RowMapper;
  readonly #event: Writable;
  readonly #now: Date;

  constructor(mapper: RowMapper, event: Writable, now: Date) {
    this.eventId = changeEventId(event);
    this.docId = event.kind === 'collection-gone' ? null : docIdString(event.documentId);
    this.encoded = undefined;
    this.#mapper = mapper;
    this.#event = event;
    this.#now = now;
  }

  row(): HistoryRow {
    const event = this.#event;
    switch (event.kind) {
      case 'upsert': {
        const { row } = this.#mapper.map(event.document);
        return withChangeMetadata(row, event, this.#now, event.operationType, this.docId);
      }
      case 'delete': {
        // The `_id`-mapped column is filled so deletes show in the history (defect 1 of the original).
        const { row } = this.#mapper.map({ _id: event.documentId });
        return withChangeMetadata(row, event, this.#now, 'delete', this.docId);
      }
      case 'collection-gone': {
        const { row } = this.#mapper.map(EMPTY_DOCUMENT);
        return withChangeMetadata(row, event, this.#now, 'drop', null);
      }
      default:
        return event satisfies never;
    }
  }

  document(): string {
    const event = this.#event;
    switch (event.kind) {
      case 'upsert':
        return relaxedEjsonText(event.document);
      case 'delete':
        return relaxedEjsonText({ _id: event.documentId });
      case 'collection-gone':
        return JSON.stringify({ operationType: event.operationType });
      default:
        return event satisfies never;
    }
  }
}

/** The history record of a document copied by the backfill. */
export function backfillRecord(
  mapper: RowMapper,
  document: Readonly<Record<string, unknown>>,
  snapshotStart: ClusterTime,
  now: Date,
): HistoryRecord {
  const docId = docIdString(document._id);
  const eventId = backfillEventId(snapshotStart, docId);
  return {
    eventId,
    docId,
    row: () => {
      const { row } = mapper.map(document);
      // In place, as withChangeMetadata and for the same reason.
      row.time_archived = archivedIso(now);
      row.operationType = 'backfill';
      row._cluster_time = clusterTimeIso(snapshotStart);
      row._seq = backfillSeq(snapshotStart);
      row._doc_id = docId;
      row._event_id = eventId;
      return row;
    },
    document: () => relaxedEjsonText(document),
  };
}

/**
 * The delete row of a repair: a document the view still shows but the collection no longer has, deleted at
 * the repair's snapshot start (the `_seq` of its backfill rows). `documentId` is the `_id` value, so the
 * `_id`-mapped column is filled as in every delete row. `docId` is the `_doc_id` exactly as the view holds
 * it: the view groups by that text, so a delete row under another spelling of the same id (a non-canonical
 * one written by an older writer) would leave the stale row in place, or hide a live document's canonical row.
 */
export function snapshotDeleteRecord(
  mapper: RowMapper,
  documentId: unknown,
  snapshotStart: ClusterTime,
  now: Date,
  docId: string = docIdString(documentId),
): HistoryRecord {
  const eventId = `repair-delete:${backfillEventId(snapshotStart, docId).slice('backfill:'.length)}`;
  return {
    eventId,
    docId,
    row: () => {
      const { row } = mapper.map({ _id: documentId });
      row.time_archived = archivedIso(now);
      row.operationType = 'delete';
      row._cluster_time = clusterTimeIso(snapshotStart);
      row._seq = backfillSeq(snapshotStart);
      row._doc_id = docId;
      row._event_id = eventId;
      return row;
    },
    document: () => relaxedEjsonText({ _id: documentId }),
  };
}
