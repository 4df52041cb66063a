import { describe, expect, it } from 'vitest';
import { generatedSource } from '../../../bench/backfill-source.js';
import { BSON_DECODE_OPTIONS } from '../../../src/base/bson-kind.js';
import { encodeId } from '../../../src/mongodb/checkpoint-store.js';

describe("the benchmark's generated backfill source", () => {
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
  });
});
