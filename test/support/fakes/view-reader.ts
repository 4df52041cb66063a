import { type IdRange } from '../../../src/core/ports.js';
import {
  type DocumentDigest,
  type RangeDigest,
  type ViewAnswer,
  type ViewReader,
} from '../../../src/core/verify-model.js';
import { docIdKey, inRange, rangeBounds } from '../../../src/transform/id-order.js';
import { type Row } from '../../../src/transform/row-mapper.js';

/**
 * `<table>_view` as a map of `_doc_id` to row, read the way the ViewReader port says (what BigQueryViewReader
 * computes in SQL, here with the JavaScript twin of the hash). `beforeRead` runs before every read (a test
 * lets the "daemon" catch up there); each answer claims `bytesPerRead` bytes scanned.
 */
export class FakeViewReader implements ViewReader {
  readonly rows = new Map<string, Row>();
  readonly reads: string[] = [];
  beforeRead: (() => void) | undefined;

  constructor(
    private readonly hash: (row: Readonly<Row>, docId: string) => bigint,
    private readonly bytesPerRead = 1_000,
  ) {}

  rangeDigests(ranges: readonly IdRange[]): Promise<ViewAnswer<RangeDigest[]>> {
    this.reads.push('ranges');
    this.beforeRead?.();
    const value = ranges.map((range) => {
      let count = 0;
      let digest = 0n;
      for (const { hash } of this.#inRange(range)) {
        count++;
        digest ^= hash;
      }
      return { count, digest };
    });
    return Promise.resolve({ value, bytesScanned: this.bytesPerRead });
  }

  documentDigests(range: IdRange): Promise<ViewAnswer<DocumentDigest[]>> {
    this.reads.push('documents');
    this.beforeRead?.();
    return Promise.resolve({ value: this.#inRange(range), bytesScanned: this.bytesPerRead });
  }

  #inRange(range: IdRange): DocumentDigest[] {
    const bounds = rangeBounds(range);
    return [...this.rows].flatMap(([docId, row]) => {
      const key = docIdKey(docId);
      return key !== undefined && inRange(key, bounds) ? [{ docId, hash: this.hash(row, docId) }] : [];
    });
  }
}
