import { isUtf8 } from 'node:buffer';
import { serialize } from 'bson';
import { describe, expect, it } from 'vitest';
import { backfillRecord } from '../../../src/core/history-rows.js';
import { decodeId, encodeId } from '../../../src/mongodb/checkpoint-store.js';
import { sampleDocuments } from '../../../src/mongodb/sampler.js';
import { queryableStringBefore, SnapshotReader } from '../../../src/mongodb/snapshot-reader.js';
import { inferColumns } from '../../../src/schema/infer.js';
import { compileRowMapper } from '../../../src/transform/row-mapper.js';
import { bsonWithBytes } from '../../support/fakes/raw-bson.js';
import { RawCollection, type FakeId } from '../../support/fakes/raw-collection.js';

// 'a', 0xFF (never valid in UTF-8), 'b', 0xC3 (a truncated two-byte sequence), '(' .
const INVALID = new Uint8Array([0x61, 0xff, 0x62, 0xc3, 0x28]);

describe('snapshot reader on documents MongoDB stores but the driver refuses to decode', () => {
  it('issue 10 item 12: a backfill chunk with an invalid UTF-8 string is copied, the bytes kept in _unmapped', async () => {
    const collection = new RawCollection([
      { id: 1, bytes: serialize({ _id: 1, name: 'one', note: 'ok' }) },
      { id: 2, bytes: bsonWithBytes({ _id: 2, name: '#####', note: 'fine' }, '#####', INVALID) },
      { id: 3, bytes: serialize({ _id: 3, name: 'three', note: 'ok' }) },
    ]);
    const reader = new SnapshotReader(collection.asCollection(), 10);
    const chunk = await reader.nextChunk(undefined, new AbortController().signal);
    expect(chunk.map((d) => d._id as unknown)).toEqual([1, 2, 3]);
    const mapper = compileRowMapper([
      { name: 'name', type: 'STRING' },
      { name: 'note', type: 'STRING' },
    ]);
    const rows = chunk.map((d) => backfillRecord(mapper, d, { t: 1, i: 0 }, new Date(0)).row());
    expect(rows.map((r) => r.note)).toEqual(['ok', 'fine', 'ok']);
    // Not U+FFFD in the column: NULL there, the exact bytes in `_unmapped` under the documented marker.
    expect(rows[1]?.name).toBeNull();
    expect(JSON.parse(String(rows[1]?._unmapped))).toEqual({
      name: { $invalidUtf8: Buffer.from(INVALID).toString('base64') },
    });
    expect(rows[0]?.name).toBe('one');
    expect(rows[0]?._unmapped).toBeNull();
  });
});

describe('schema inference sample', () => {
  it('issue 10 item 12: a sampled document with an invalid UTF-8 string does not fail the sample', async () => {
    const collection = new RawCollection([
      { id: 1, bytes: serialize({ _id: 1, name: 'one' }) },
      { id: 2, bytes: bsonWithBytes({ _id: 2, name: '#####' }, '#####', INVALID) },
    ]);
    const sample = await sampleDocuments(collection.asCollection(), { signal: new AbortController().signal });
    expect(sample.map((d) => d._id as unknown)).toEqual([1, 2]);
    // Still a string column: the invalid value itself is kept in `_unmapped` when mapped.
    expect(await inferColumns(sample)).toContainEqual(
      expect.objectContaining({ name: 'name', type: 'STRING' }),
    );
  });
});

describe('backfill paging past an _id that is not valid UTF-8', () => {
  it('issue 10 item 12: ids after an invalid UTF-8 string id are neither skipped nor read twice', async () => {
    const bytesOf = (...parts: (string | number[])[]) =>
      Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p) : Buffer.from(p))));
    // BSON order: numbers, then strings by their bytes, then documents.
    const ids = [
      1,
      bytesOf('a'),
      bytesOf('a', [0xff]),
      bytesOf('a', [0xff], 'b'),
      bytesOf('a', [0xff, 0xff]),
      bytesOf('b'),
      bytesOf('c', [0xc3]),
      { k: 1 },
    ];
    const placeholder = (n: number) => '#'.repeat(n);
    const collection = new RawCollection(
      ids.map((id, v) => ({
        id,
        bytes:
          id instanceof Uint8Array
            ? bsonWithBytes({ _id: placeholder(id.length), v }, placeholder(id.length), id)
            : serialize({ _id: id, v }),
      })),
    );
    for (const chunkSize of [1, 2, 3]) {
      const reader = new SnapshotReader(collection.asCollection(), chunkSize);
      const seen: number[] = [];
      let last: unknown;
      for (let guard = 0; guard < 30; guard++) {
        const chunk = await reader.nextChunk(last, new AbortController().signal);
        if (chunk.length === 0) break;
        seen.push(...chunk.map((d) => d.v as number));
        // As the backfill keeps it between chunks: through the checkpoint's encoding.
        last = decodeId(encodeId(chunk.at(-1)?._id));
      }
      expect(seen).toEqual(ids.map((_, v) => v));
    }
  });

  it('issue 10 item 12: the first string after a run of numbers, when it is not valid UTF-8, does not make the copy skip the strings after it', async () => {
    // 'a', 0xFF: its valid prefix is 'a', and 'b' sorts after it.
    const ids = [1, 2, bytesOf('a', [0xff]), bytesOf('b'), bytesOf('c'), { k: 1 }];
    const collection = new RawCollection(documentsWithIds(ids));
    for (const chunkSize of [1, 2, 3, 4]) {
      const { seen } = await copyAll(new SnapshotReader(collection.asCollection(), chunkSize));
      expect(seen, `chunk size ${String(chunkSize)}`).toEqual(ids.map((_, v) => v));
    }
  });

  it('issue 10 item 12 (review finding 6): chunks ending on ids that are not valid UTF-8 do not rescan the strings before them', async () => {
    // 100 ASCII ids, then per lead byte 0xC3..0xDF an invalid id (the lead byte and 'A'; no valid prefix,
    // so a rescan would start at the first string) followed by a valid one (the lead byte and 0x80).
    const ids: (number | Uint8Array)[] = Array.from({ length: 100 }, (_, i) =>
      bytesOf(`s${String(i).padStart(3, '0')}`),
    );
    for (let lead = 0xc3; lead <= 0xdf; lead++) ids.push(bytesOf([lead, 0x41]), bytesOf([lead, 0x80]));
    const collection = new RawCollection(documentsWithIds(ids));
    for (const chunkSize of [1, 2, 3, 4, 7]) {
      const { seen } = await copyAll(new SnapshotReader(collection.asCollection(), chunkSize));
      expect(seen, `chunk size ${String(chunkSize)}`).toEqual(ids.map((_, v) => v));
    }
    // Chunks of 3 end on an invalid id every other time: each of those once read all strings again.
    collection.documentsRead = 0;
    await copyAll(new SnapshotReader(collection.asCollection(), 3));
    expect(collection.documentsRead).toBeLessThanOrEqual(2 * ids.length);
    // Chunks of one: every invalid id is a chunk of its own, continued by a rescan. That rescan starts at
    // the greatest string a query can name below the id, not at the first string.
    collection.documentsRead = 0;
    await copyAll(new SnapshotReader(collection.asCollection(), 1));
    expect(collection.documentsRead).toBeLessThanOrEqual(3 * ids.length);
  });
});

describe('where a rescan after an id that is not valid UTF-8 starts', () => {
  it('issue 10 item 12 (review finding 6): at the greatest valid string below the id, not at its valid prefix alone', () => {
    const cases: [number[], string][] = [
      [[0x80], '\u007f'], // a continuation byte cannot begin a character
      [[0xc0, 0x80], '\u007f'], // overlong: 0xC0 and 0xC1 never occur
      [[0xc3, 0x41], '\u00bf'], // C2 BF sorts before C3 41; C3 80 after it
      [[0xed, 0xa0, 0x80], '\ud7ff'], // an encoded surrogate: the last scalar value before surrogates
      [[0xee, 0x80], '\ud7ff'], // truncated U+E000; surrogates are skipped, not turned into U+FFFD
      [[0xf4, 0x90, 0x80, 0x80], '\u{10ffff}'], // above U+10FFFF
      [[0xff], '\u{10ffff}'],
      [[0x61, 0xc3], 'a\u00bf'], // after a valid prefix
    ];
    for (const [bytes, expected] of cases)
      expect(queryableStringBefore(Uint8Array.from(bytes))).toBe(expected);
  });

  it('issue 10 item 12 (review finding 6): the start always sorts before the id and the next character would not', () => {
    let seed = 7;
    const random = () => (seed = (seed * 48_271) % 2_147_483_647) / 2_147_483_647;
    for (let n = 0; n < 2_000; n++) {
      const bytes = Uint8Array.from({ length: 1 + Math.floor(random() * 5) }, () =>
        random() < 0.3 ? 0x61 : 0x80 + Math.floor(random() * 0x80),
      );
      if (isUtf8(bytes)) continue;
      const start = queryableStringBefore(bytes);
      const startBytes = Buffer.from(start, 'utf8');
      expect(Buffer.compare(startBytes, bytes), Buffer.from(bytes).toString('hex')).toBeLessThan(0);
      // By code point, as the bisection works.
      const chars = Array.from(start);
      const last = chars.pop()?.codePointAt(0);
      if (last === undefined || last === 0x10_ff_ff) continue;
      const next = last === 0xd7_ff ? 0xe0_00 : last + 1;
      // The start with its last character replaced by the next scalar value sorts after the id.
      const greater = Buffer.from(chars.join('') + String.fromCodePoint(next), 'utf8');
      expect(Buffer.compare(greater, bytes), Buffer.from(bytes).toString('hex')).toBeGreaterThan(0);
    }
  });
});

function bytesOf(...parts: (string | number[])[]): Uint8Array {
  return Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p) : Buffer.from(p))));
}

/** One document per id, `v` its index; a string id is stored as exactly its bytes. */
function documentsWithIds(ids: readonly FakeId[]): { id: FakeId; bytes: Uint8Array }[] {
  const placeholder = (n: number) => '#'.repeat(n);
  return ids.map((id, v) => ({
    id,
    bytes:
      id instanceof Uint8Array
        ? bsonWithBytes({ _id: placeholder(id.length), v }, placeholder(id.length), id)
        : serialize({ _id: id, v }),
  }));
}

/** Every chunk until an empty one, the last id kept between chunks as the backfill keeps it. */
async function copyAll(reader: SnapshotReader): Promise<{ seen: number[] }> {
  const seen: number[] = [];
  let last: unknown;
  for (let guard = 0; guard < 1_000; guard++) {
    const chunk = await reader.nextChunk(last, new AbortController().signal);
    if (chunk.length === 0) return { seen };
    seen.push(...chunk.map((d) => d.v as number));
    last = decodeId(encodeId(chunk.at(-1)?._id));
  }
  throw new Error('the copy did not end');
}
