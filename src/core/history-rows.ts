import { relaxedEjsonText } from '../transform/ejson.js';
import { type RowMapper } from '../transform/row-mapper.js';
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

/** The history row of a change: user columns from the mapper plus the metadata columns (DESIGN section 4). */
export function changeRecord(mapper: RowMapper, event: Writable, now: Date): HistoryRecord {
  const base = {
    time_archived: now.toISOString(),
    _cluster_time: clusterTimeIso(event.clusterTime),
    _seq: changeSeq(event),
    _event_id: changeEventId(event),
  };
  switch (event.kind) {
    case 'upsert': {
      const { row } = mapper.map(event.document);
      const docId = docIdString(event.documentId);
      return {
        row: { ...row, ...base, operationType: event.operationType, _doc_id: docId },
        document: () => relaxedEjsonText(event.document),
      };
    }
    case 'delete': {
      // The `_id`-mapped column is filled so deletes show in the history (defect 1 of the original).
      const key = { _id: event.documentId };
      const { row } = mapper.map(key);
      return {
        row: { ...row, ...base, operationType: 'delete', _doc_id: docIdString(event.documentId) },
        document: () => relaxedEjsonText(key),
      };
    }
    case 'collection-gone': {
      const { row } = mapper.map(EMPTY_DOCUMENT);
      return {
        row: { ...row, ...base, operationType: 'drop', _doc_id: null },
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
  return {
    row: {
      ...row,
      time_archived: now.toISOString(),
      operationType: 'backfill',
      _cluster_time: clusterTimeIso(snapshotStart),
      _seq: backfillSeq(snapshotStart),
      _doc_id: docId,
      _event_id: backfillEventId(snapshotStart, docId),
    },
    document: () => relaxedEjsonText(document),
  };
}
