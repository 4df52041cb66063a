import {
  type EncodedRow,
  type HistoryRow,
  type OutgoingRow,
  type TableWriter,
} from '../../src/bigquery/writer.js';
import { type HistoryRecord } from '../../src/core/history-rows.js';
import { rowBytes } from '../../src/core/stream-loop.js';

/** Rows as a caller of `append` hands them over when no writer encoded them (each is built again as-is). */
export function outgoing(rows: readonly HistoryRow[]): OutgoingRow[] {
  return rows.map((row) => ({ encoded: { size: rowBytes(row) }, row: () => row }));
}

/** Rows as the stream loop hands them over: encoded by `writer` when batched. */
export function encodedBy(writer: Pick<TableWriter, 'encode'>, rows: readonly HistoryRow[]): OutgoingRow[] {
  return rows.map((row) => ({ encoded: writer.encode(row), row: () => row }));
}

/** A history record holding `row` itself (tests build rows directly, not from change events). */
export function historyRecord(record: {
  readonly row: HistoryRow;
  readonly document: () => string;
  readonly encoded?: EncodedRow;
}): HistoryRecord {
  const { row, document, encoded } = record;
  return {
    eventId: String(row._event_id),
    docId: typeof row._doc_id === 'string' ? row._doc_id : null,
    row: () => row,
    document,
    ...(encoded && { encoded }),
  };
}
