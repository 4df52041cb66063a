import { EJSON } from 'bson';
import { describe, expect, it } from 'vitest';
import { generatedSource } from '../../../bench/backfill-source.js';
import { BSON_DECODE_OPTIONS } from '../../../src/base/bson-kind.js';
import { encodeId } from '../../../src/mongodb/checkpoint-store.js';
import { decodeDocument } from '../../../src/mongodb/raw-documents.js';

describe("the benchmark's generated backfill source", () => {
  // 300,000 documents of 1 KB decoded take seconds on an idle core (the default 5 s ran out on a loaded one).
  it('reads every document of every range once, past 2^16 documents a range', async () => {
    const total = 300_000;
    const source = generatedSource(total, 5_000, BSON_DECODE_OPTIONS, 0);
    const signal = new AbortController().signal;
    let read = 0;
    for (const range of await source.split(2, signal)) {
      let lastId: string | undefined;
      for (;;) {
        const chunk = await source.nextChunk(range, lastId, signal);
        const last = chunk.at(-1);
        if (last === undefined) break;
        read += chunk.length;
        lastId = encodeId(last._id);
      }
    }
    expect(read).toBe(total);
  }, 60_000);
});

describe("the benchmark's generated backfill source, read raw (issue 11, build 6)", () => {
  it('issue 11: nextRawChunk hands over the BSON of the documents nextChunk decodes, with the same lastIds', async () => {
    const source = generatedSource(3_000, 250, BSON_DECODE_OPTIONS, 0);
    const signal = new AbortController().signal;
    let read = 0;
    for (const range of await source.split(3, signal)) {
      let lastId: string | undefined;
      for (;;) {
        const raw = await source.nextRawChunk(range, lastId, signal);
        const decoded = await source.nextChunk(range, lastId, signal);
        expect(raw.documents.map((bytes) => EJSON.stringify(decodeDocument(bytes)))).toEqual(
          decoded.map((document) => EJSON.stringify(document)),
        );
        const last = decoded.at(-1);
        if (last === undefined) {
          expect(raw.lastId).toBeUndefined();
          break;
        }
        expect(raw.lastId).toBe(encodeId(last._id));
        read += raw.documents.length;
        lastId = raw.lastId;
      }
    }
    expect(read).toBe(3_000);
  });
});
