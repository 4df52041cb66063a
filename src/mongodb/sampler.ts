import { Binary, ObjectId, type Collection, type Document } from 'mongodb';
import { DEFAULT_INFER_SAMPLES } from '../schema/infer.js';
import { bsonKind } from '../base/bson-kind.js';
import { encodeId } from './checkpoint-store.js';
import { decodeAll, RAW_READ } from './raw-documents.js';
import { mongoBoundary } from './error-mapping.js';

/** Ranges read across a collection that holds more documents than the sample. */
const SAMPLE_RANGES = 16;
/** Share of the sample taken from the newest documents (highest `_id`s). */
const NEWEST_SHARE = 0.25;
/** Where `_id`s cannot be interpolated, `skip` probes reach at most this far into the `_id` index. */
const MAX_SKIP_SPAN = 250_000;
/** Code points after the common prefix of two string ids that an interpolation looks at. */
const MAX_STRING_DIGITS = 8;

export interface SampleOptions {
  /** At most this many documents (default 1,000). */
  readonly maxSamples?: number;
  readonly signal: AbortSignal;
}

/**
 * At most `maxSamples` documents of `collection` for schema inference, read without a full scan and
 * without `$sample` (mongo-java-server fails it at random; one code path serves every server).
 *
 * When `estimatedDocumentCount()` is at most `maxSamples`, the first `maxSamples` documents in `_id` order
 * (normally all of them). Otherwise: the newest quarter of the sample (highest `_id`s, so recent shapes
 * are seen), the oldest range, and 15 more ranges spread over the `_id` span between them, each range a
 * sorted, limited read from a start point:
 * - ObjectId, number, Date, string and same-length Binary ids: the start point is interpolated between the
 *   lowest and highest `_id` (for ObjectIds by creation time) and read with `{_id: {$gte: point}}`: one
 *   `_id` index seek per range. Ids that cluster unevenly over that span give less evenly spread ranges.
 * - other ids (compound, mixed types): `skip` offsets spread over the first 250,000 entries of the
 *   `_id` index (beyond that the middle of a large collection is not sampled; the newest part still is).
 *
 * Cost: one metadata count and at most 17 reads returning at most `maxSamples` documents in total,
 * plus, for the `skip` path only, up to about 1.9 million `_id` index entries walked. Deterministic for a
 * fixed collection. Documents come back oldest range first, without duplicates.
 */
export function sampleDocuments(collection: Collection, options: SampleOptions): Promise<Document[]> {
  return mongoBoundary(() => sample(collection, options));
}

async function sample(collection: Collection, options: SampleOptions): Promise<Document[]> {
  const { signal } = options;
  const max = Math.floor(options.maxSamples ?? DEFAULT_INFER_SAMPLES);
  signal.throwIfAborted();
  if (max <= 0) return [];
  const read = (filter: Document, order: 1 | -1, limit: number, skip = 0): Promise<Document[]> => {
    signal.throwIfAborted();
    // As BSON bytes, decoded here: a sampled string that is not valid UTF-8 must not fail the inference.
    return collection
      .find(filter, { ...RAW_READ, sort: { _id: order }, skip, limit })
      .toArray()
      .then(decodeAll);
  };

  const count = await collection.estimatedDocumentCount();
  if (count <= max) return read({}, 1, max);
  const newestCount = Math.max(1, Math.floor(max * NEWEST_SHARE));
  const spread = max - newestCount;
  if (spread === 0) return read({}, -1, max);
  const ranges = Math.min(SAMPLE_RANGES, spread);
  const rangeSize = Math.floor(spread / ranges);
  const newest = (await read({}, -1, max - ranges * rangeSize)).reverse();
  const oldest = await read({}, 1, rangeSize);
  const startAt = interpolator(oldest[0]?._id, newest.at(-1)?._id);
  const skipSpan = Math.min(count, MAX_SKIP_SPAN);
  const middle: Document[][] = [];
  for (let i = 1; i < ranges; i++) {
    const fraction = i / ranges;
    const start = startAt?.(fraction);
    middle.push(
      start === undefined
        ? await read({}, 1, rangeSize, Math.floor(fraction * skipSpan))
        : await read({ _id: { $gte: start } }, 1, rangeSize),
    );
  }
  const seen = new Set<string>();
  return [oldest, ...middle, newest].flat().filter((document) => {
    const key = encodeId(document._id);
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

type Interpolator = (fraction: number) => unknown;

/**
 * A start point at `fraction` of the way from `low` to `high`, in the order MongoDB sorts `_id`s; undefined
 * when the two do not share an interpolable type (the caller falls back to `skip`).
 */
function interpolator(low: unknown, high: unknown): Interpolator | undefined {
  if (typeof low === 'number' && typeof high === 'number') {
    return Number.isFinite(low) && Number.isFinite(high) && low < high ? linear(low, high) : undefined;
  }
  if (low instanceof Date && high instanceof Date) {
    const at = linear(low.getTime(), high.getTime());
    return low.getTime() < high.getTime() ? (fraction) => new Date(Math.floor(at(fraction))) : undefined;
  }
  if (typeof low === 'string' && typeof high === 'string') {
    return low < high ? stringInterpolator(codePoints(low), codePoints(high)) : undefined;
  }
  const [lowKind, highKind] = [bsonKind(low), bsonKind(high)];
  if (lowKind === 'ObjectId' && highKind === 'ObjectId') {
    const seconds = (id: unknown) => (id as ObjectId).getTimestamp().getTime() / 1_000;
    const [from, to] = [seconds(low), seconds(high)];
    if (from >= to) return undefined;
    const at = linear(from, to);
    return (fraction) => ObjectId.createFromTime(Math.floor(at(fraction)));
  }
  if (lowKind === 'Binary' && highKind === 'Binary') {
    const [a, b] = [low as Binary, high as Binary];
    // MongoDB orders Binary by length, then subtype, then bytes: only the bytes vary between these two.
    if (a.position !== b.position || a.sub_type !== b.sub_type) return undefined;
    const [lowBytes, highBytes] = [[...a.read(0, a.position)], [...b.read(0, b.position)]];
    const prefix = commonPrefixLength(lowBytes, highBytes);
    return (fraction) => {
      const tail = interpolateDigits(lowBytes.slice(prefix), highBytes.slice(prefix), fraction, 0x100, 6);
      const bytes = [...lowBytes.slice(0, prefix), ...tail].slice(0, a.position);
      while (bytes.length < a.position) bytes.push(0);
      return new Binary(Uint8Array.from(bytes), a.sub_type);
    };
  }
  return undefined;
}

function linear(from: number, to: number): (fraction: number) => number {
  return (fraction) => from + fraction * (to - from);
}

function codePoints(text: string): number[] {
  return Array.from(text, (char) => char.codePointAt(0) ?? 0);
}

/**
 * String ids are interpolated as numbers written in the alphabet their differing characters use (digits
 * for `user-00042`, hex digits for hex ids), so that ids over a small alphabet still spread evenly. A
 * missing character is the lowest digit, since a shorter string sorts first. MongoDB compares strings by
 * UTF-8 bytes, which is code point order.
 */
function stringInterpolator(low: readonly number[], high: readonly number[]): Interpolator | undefined {
  const prefix = commonPrefixLength(low, high);
  const [lowTail, highTail] = [
    low.slice(prefix, prefix + MAX_STRING_DIGITS),
    high.slice(prefix, prefix + MAX_STRING_DIGITS),
  ];
  const chars = [...lowTail, ...highTail];
  if (chars.length === 0) return undefined;
  const floor = chars.reduce((a, b) => Math.min(a, b));
  const base = chars.reduce((a, b) => Math.max(a, b)) - floor + 2;
  const window = Math.min(MAX_STRING_DIGITS, Math.max(1, Math.floor(52 / Math.log2(base))));
  const toDigits = (tail: readonly number[]) => tail.map((char) => char - floor + 1);
  return (fraction) => {
    const digits = interpolateDigits(toDigits(lowTail), toDigits(highTail), fraction, base, window);
    while (digits.at(-1) === 0) digits.pop();
    const tail = digits.map((digit) => {
      const char = floor + Math.max(digit, 1) - 1;
      // Surrogate code points do not exist on their own; the next valid one keeps the order.
      return char >= 0xd8_00 && char <= 0xdf_ff ? 0xe0_00 : char;
    });
    return String.fromCodePoint(...low.slice(0, prefix), ...tail);
  };
}

function commonPrefixLength(a: readonly number[], b: readonly number[]): number {
  let length = 0;
  while (length < a.length && length < b.length && a[length] === b[length]) length++;
  return length;
}

/**
 * The `window` digits (in `base`) at `fraction` between two digit sequences compared lexicographically;
 * missing digits count as 0.
 */
function interpolateDigits(
  low: readonly number[],
  high: readonly number[],
  fraction: number,
  base: number,
  window: number,
): number[] {
  const valueOf = (digits: readonly number[]) => {
    let value = 0;
    for (let i = 0; i < window; i++) value = value * base + (digits[i] ?? 0);
    return value;
  };
  let value = Math.floor(linear(valueOf(low), valueOf(high))(fraction));
  const digits: number[] = [];
  for (let i = 0; i < window; i++) {
    digits.unshift(value % base);
    value = Math.floor(value / base);
  }
  return digits;
}
