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

/** One history row and, for the dead-letter table, the document it came from. */
export interface HistoryRecord {
  readonly row: Readonly<Record<string, unknown>>;
  readonly document: () => string;
  /** The row's wire size, when the producer already measured it (saves measuring it again). */
  readonly bytes?: number;
}

type Writable = Extract<ChangeEvent, { kind: 'upsert' | 'delete' | 'collection-gone' }>;

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

/** The history row of a change: user columns from the mapper plus the metadata columns (DESIGN section 4). */
export function changeRecord(mapper: RowMapper, event: Writable, now: Date): HistoryRecord {
  switch (event.kind) {
    case 'upsert': {
      const { row } = mapper.map(event.document);
      return {
        row: withChangeMetadata(row, event, now, event.operationType, docIdString(event.documentId)),
        document: () => relaxedEjsonText(event.document),
      };
    }
    case 'delete': {
      // The `_id`-mapped column is filled so deletes show in the history (defect 1 of the original).
      const key = { _id: event.documentId };
      const { row } = mapper.map(key);
      return {
        row: withChangeMetadata(row, event, now, 'delete', docIdString(event.documentId)),
        document: () => relaxedEjsonText(key),
      };
    }
    case 'collection-gone': {
      const { row } = mapper.map(EMPTY_DOCUMENT);
      return {
        row: withChangeMetadata(row, event, now, 'drop', null),
        document: () => JSON.stringify({ operationType: event.operationType }),
      };
    }
    default:
      return event satisfies never;
  }
}

/** The history row of a document copied by the backfill. */
export function backfillRecord(
  mapper: RowMapper,
  document: Readonly<Record<string, unknown>>,
  snapshotStart: ClusterTime,
  now: Date,
): HistoryRecord {
  const { row } = mapper.map(document);
  const docId = docIdString(document._id);
  // In place, as withChangeMetadata and for the same reason.
  row.time_archived = archivedIso(now);
  row.operationType = 'backfill';
  row._cluster_time = clusterTimeIso(snapshotStart);
  row._seq = backfillSeq(snapshotStart);
  row._doc_id = docId;
  row._event_id = backfillEventId(snapshotStart, docId);
  return { row, document: () => relaxedEjsonText(document) };
}
