// Document shapes shared by the benchmarks: deterministic, so runs compare.
import { Decimal128, Int32, Long, ObjectId, serialize } from 'bson';

export type ShapeName = 'flat-200B' | 'nested-1KB' | 'wide-20KB';

/** A small deterministic PRNG (mulberry32), so every run benchmarks the same documents. */
function rng(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

function word(r: () => number, length: number): string {
  let s = '';
  for (let i = 0; i < length; i++) s += String.fromCharCode(97 + Math.floor(r() * 26));
  return s;
}

function flat(r: () => number, i: number): Record<string, unknown> {
  return {
    _id: new ObjectId(),
    tracking_code: new Int32(Math.floor(r() * 1_000_000)),
    status: word(r, 8),
    amount: r() * 1000,
    active: r() > 0.5,
    created: new Date(1_700_000_000_000 + i * 1000),
    owner: new ObjectId(),
    count: Long.fromNumber(Math.floor(r() * 1e12)),
  };
}

function nested(r: () => number, i: number): Record<string, unknown> {
  const metrics = () => ({
    cpta: r() * 10,
    activations: new Int32(Math.floor(r() * 500)),
    spend: r() * 1000,
    date_start: '2018-05-01',
    ad_spend_id: `as_${word(r, 6)}`,
  });
  return {
    _id: new ObjectId(),
    tracking_code: new Int32(i),
    campaign: {
      name: word(r, 16),
      owner: word(r, 10),
      budget: Decimal128.fromString((r() * 1e6).toFixed(2)),
      tags: [word(r, 5), word(r, 6), word(r, 7)],
    },
    midnight_to_timestamp: metrics(),
    lifetime_to_timestamp: metrics(),
    created_on_timestamp: 1_525_132_800 + r() * 1e6,
    updated: new Date(1_700_000_000_000 + i * 1000),
    items: [0, 1, 2].map(() => ({
      sku: word(r, 10),
      qty: new Int32(Math.floor(r() * 10)),
      price: r() * 100,
    })),
    notes: word(r, 120),
    flags: { a: r() > 0.5, b: r() > 0.5, c: r() > 0.5 },
  };
}

function wide(r: () => number): Record<string, unknown> {
  const doc: Record<string, unknown> = { _id: new ObjectId() };
  for (let f = 0; f < 600; f++) {
    const key = `attribute_${String(f).padStart(3, '0')}`;
    doc[key] = f % 3 === 0 ? word(r, 12) : f % 3 === 1 ? new Int32(Math.floor(r() * 1e6)) : r() * 1e3;
  }
  return doc;
}

/** `count` distinct documents of a shape, as BSON bytes (what the driver receives). */
export function shapeDocuments(shape: ShapeName, count: number): Uint8Array[] {
  const r = rng(42);
  const make =
    shape === 'flat-200B' ? flat : shape === 'nested-1KB' ? nested : (rr: () => number) => wide(rr);
  return Array.from({ length: count }, (_, i) => serialize(make(r, i)));
}

export const SHAPES: readonly ShapeName[] = ['flat-200B', 'nested-1KB', 'wide-20KB'];
