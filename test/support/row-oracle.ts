// Independent oracles for the transform tests: they read rows the way BigQuery would and check them against
// the original documents, without calling the converters under test.
import { Decimal128, EJSON, type Binary, type Long } from 'bson';
import { parseFieldPath } from '../../src/schema/field-path.js';
import { type ColumnSpec, type TableField } from '../../src/schema/types.js';

const LEGAL_NAME = /^[A-Za-z_][A-Za-z0-9_]{0,299}$/;
const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;

/** Problems that would make BigQuery reject `row` for `schema` (empty when the row is valid). */
export function rowProblems(
  schema: readonly TableField[],
  row: Readonly<Record<string, unknown>>,
  path = '',
): string[] {
  const problems: string[] = [];
  const known = new Set(schema.map((f) => f.name));
  for (const key of Object.keys(row)) if (!known.has(key)) problems.push(`${path}${key}: not in schema`);
  for (const field of schema) {
    const where = `${path}${field.name}`;
    if (!LEGAL_NAME.test(field.name)) problems.push(`${where}: illegal name`);
    const value = row[field.name];
    if (field.mode === 'REPEATED') {
      if (!Array.isArray(value)) {
        problems.push(`${where}: REPEATED needs an array`);
        continue;
      }
      value.forEach((v: unknown, i) => {
        if (v === null || v === undefined) problems.push(`${where}[${i}]: NULL in array`);
        else problems.push(...valueProblems(field, v, `${where}[${i}]`));
      });
    } else if (value === null || value === undefined) {
      if (field.mode === 'REQUIRED') problems.push(`${where}: REQUIRED is NULL`);
    } else {
      problems.push(...valueProblems(field, value, where));
    }
  }
  return problems;
}

function valueProblems(field: TableField, value: unknown, where: string): string[] {
  const bad = (why: string) => [`${where}: ${why} (${describe(value)})`];
  switch (field.type) {
    case 'STRING':
      return typeof value === 'string' ? [] : bad('STRING needs a string');
    case 'BYTES':
      return typeof value === 'string' && /^[A-Za-z0-9+/]*={0,2}$/.test(value)
        ? []
        : bad('BYTES needs base64');
    case 'INTEGER': {
      if (typeof value !== 'number' && typeof value !== 'string')
        return bad('INTEGER needs a number or string');
      if (typeof value === 'number' && !Number.isSafeInteger(value)) return bad('unsafe integer number');
      if (!/^-?\d+$/.test(String(value))) return bad('not an integer');
      const big = BigInt(String(value));
      return big >= INT64_MIN && big <= INT64_MAX ? [] : bad('outside int64');
    }
    case 'FLOAT':
      if (typeof value === 'number')
        return Number.isFinite(value) ? [] : bad('non-finite number cannot be JSON');
      // JSON has no NaN, Infinity or -0 (its text is `0`): insertAll reads these strings as those doubles.
      return ['NaN', 'Infinity', '-Infinity', '-0'].includes(value as string)
        ? []
        : bad('FLOAT needs a number');
    case 'BOOLEAN':
      return typeof value === 'boolean' ? [] : bad('BOOLEAN needs a boolean');
    case 'TIMESTAMP': {
      if (typeof value !== 'string') return bad('TIMESTAMP needs a string');
      const ms = Date.parse(value);
      return Number.isNaN(ms) || ms < -62_135_596_800_000 || ms > 253_402_300_799_999
        ? bad('bad TIMESTAMP')
        : [];
    }
    case 'DATE':
      return typeof value === 'string' && /^\d{4}-\d{2}-\d{2}$/.test(value) ? [] : bad('bad DATE');
    case 'DATETIME':
      return typeof value === 'string' && /^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d{1,6})?$/.test(value)
        ? []
        : bad('bad DATETIME');
    case 'TIME':
      return typeof value === 'string' && /^\d{2}:\d{2}:\d{2}(\.\d{1,6})?$/.test(value)
        ? []
        : bad('bad TIME');
    case 'NUMERIC':
    case 'BIGNUMERIC': {
      if (typeof value !== 'string' || !/^-?\d+(\.\d+)?$/.test(value)) return bad('decimal text expected');
      const [int = '', frac = ''] = value.replace('-', '').split('.');
      const [maxInt, maxFrac] = field.type === 'NUMERIC' ? [29, 9] : [38, 38];
      return int.replace(/^0+/, '').length <= maxInt && frac.length <= maxFrac ? [] : bad('out of range');
    }
    case 'JSON':
      if (typeof value !== 'string') return bad('JSON needs JSON text');
      try {
        JSON.parse(value);
        return [];
      } catch {
        return bad('invalid JSON text');
      }
    case 'RECORD':
      if (typeof value !== 'object' || value === null || Array.isArray(value))
        return bad('RECORD needs an object');
      return rowProblems(field.fields ?? [], value as Record<string, unknown>, `${where}.`);
  }
}

function describe(value: unknown): string {
  try {
    return JSON.stringify(value).slice(0, 80);
  } catch {
    return typeof value;
  }
}

function normalDecimal(text: string): string {
  const m = /^([+-])?(\d*)(?:\.(\d*))?(?:[eE]([+-]?\d+))?$/.exec(text);
  if (!m) return text;
  const frac = m[3] ?? '';
  let digits = (m[2] ?? '') + frac;
  let exp = Number(m[4] ?? 0) - frac.length;
  digits = digits.replace(/^0+/, '');
  const t = digits.replace(/0+$/, '');
  exp += digits.length - t.length;
  if (t === '') return '0';
  return `${m[1] === '-' ? '-' : ''}${t}e${exp}`;
}

interface Tagged {
  readonly _bsontype?: string;
}

function tagOf(v: unknown): string | undefined {
  return typeof v === 'object' && v !== null ? (v as Tagged)._bsontype : undefined;
}

/** The numeric value of a BSON number as normalized decimal text, or undefined for non-numbers. */
function numericText(v: unknown): string | undefined {
  if (typeof v === 'number') {
    if (Number.isNaN(v)) return 'NaN';
    if (!Number.isFinite(v)) return v > 0 ? 'Infinity' : '-Infinity';
    return Number.isInteger(v) ? normalDecimal(BigInt(v).toString()) : normalDecimal(String(v));
  }
  if (typeof v === 'bigint') return normalDecimal(v.toString());
  const tag = tagOf(v);
  if (tag === 'Int32' || tag === 'Double') return numericText((v as { value: number }).value);
  if (tag === 'Long') return normalDecimal((v as Long).toString());
  if (tag === 'Decimal128') {
    const s = (v as Decimal128).toString();
    if (s.includes('NaN')) return 'NaN';
    if (s.includes('Inf')) return s.startsWith('-') ? '-Infinity' : 'Infinity';
    return normalDecimal(s);
  }
  return undefined;
}

/**
 * Extended JSON compared by value: every number spelling (`1`, `{"$numberInt":"1"}`, `{"$numberLong":"1"}`)
 * becomes one token, Decimal128 stays apart from binary floats, and both `$date` spellings become epoch ms.
 * Works on plain JSON, so no BSON object is rebuilt (bson refuses some legal values, such as a 4-byte
 * subtype-4 Binary, when it parses Extended JSON).
 */
function numberToken(n: number): { $n: string } {
  if (Number.isSafeInteger(n)) return { $n: String(n) };
  return { $n: Object.is(n, -0) ? '-0' : String(n) };
}

function normalizeEjson(v: unknown): unknown {
  if (typeof v === 'number') return numberToken(v);
  if (Array.isArray(v)) return v.map(normalizeEjson);
  if (typeof v !== 'object' || v === null) return v;
  const entries = Object.entries(v as Record<string, unknown>);
  const [first] = entries;
  if (entries.length === 1 && first && typeof first[1] === 'string') {
    const [key, text] = first as [string, string];
    if (key === '$numberDouble') return numberToken(Number(text));
    if (key === '$numberInt' || key === '$numberLong') {
      const big = BigInt(text);
      return big >= BigInt(Number.MIN_SAFE_INTEGER) && big <= BigInt(Number.MAX_SAFE_INTEGER)
        ? numberToken(Number(big))
        : { $n: big.toString() };
    }
    if (key === '$numberDecimal') return { $d: numericText(Decimal128.fromString(text)) };
    if (key === '$date') return { $date: String(Date.parse(text)) };
  }
  if (entries.length === 1 && first?.[0] === '$date') {
    const inner = first[1] as { $numberLong?: string };
    return { $date: inner.$numberLong };
  }
  const out: Record<string, unknown> = {};
  for (const [k, x] of entries) Object.defineProperty(out, k, { value: normalizeEjson(x), enumerable: true });
  return out;
}

/** The value of a decoded BSON value, as normalized Extended JSON text. */
function canonical(v: unknown): string {
  return JSON.stringify(normalizeEjson(JSON.parse(EJSON.stringify(v, { relaxed: false }))));
}

/** The value Extended JSON text stands for, normalized the same way. */
function canonicalText(text: string): string {
  return JSON.stringify(normalizeEjson(JSON.parse(text)));
}

/** Does the wire value `stored` in a column of `type` hold `original` without loss? Written independently of src/. */
export function represents(type: ColumnSpec['type'], stored: unknown, original: unknown): boolean {
  const tag = tagOf(original);
  switch (type) {
    case 'INTEGER':
    case 'FLOAT':
    case 'NUMERIC':
    case 'BIGNUMERIC': {
      const storedText =
        typeof stored === 'number'
          ? numericText(stored)
          : ['NaN', 'Infinity', '-Infinity'].includes(String(stored))
            ? String(stored)
            : normalDecimal(String(stored));
      if (tag === 'Timestamp') {
        const ts = original as { t: number; i: number };
        return String(stored) === ((BigInt(ts.t) << 32n) + BigInt(ts.i)).toString();
      }
      if (typeof original === 'number' || tag === 'Double') {
        // A double is held when the stored text reads back as that same double.
        const x = typeof original === 'number' ? original : (original as { value: number }).value;
        const back = typeof stored === 'number' ? stored : Number(stored);
        // In a FLOAT the sign of a zero is kept too; an INTEGER has only one zero.
        return type === 'FLOAT' ? Object.is(back, x) : back === x || (Number.isNaN(back) && Number.isNaN(x));
      }
      return numericText(original) === storedText;
    }
    case 'BOOLEAN':
      return stored === original;
    case 'STRING': {
      if (typeof original === 'string') return stored === original;
      if (tag === 'ObjectId') return stored === (original as { toHexString(): string }).toHexString();
      if (tag === 'BSONSymbol') return stored === (original as { value: string }).value;
      if (original instanceof Date) return Date.parse(String(stored)) === original.getTime();
      if (typeof original === 'boolean') return stored === String(original);
      const n = numericText(original);
      if (n !== undefined) return n === normalDecimal(String(stored)) || n === String(stored);
      if (tag === 'Binary' && (original as Binary).sub_type === 4) {
        return String(stored).replace(/-/g, '') === (original as Binary).toString('hex');
      }
      if (tag === 'Code' && !(original as { scope?: unknown }).scope) {
        return stored === (original as { code: string }).code;
      }
      return canonicalText(String(stored)) === canonical(original);
    }
    case 'BYTES': {
      const bytes = Buffer.from(String(stored), 'base64');
      if (tag === 'Binary') return bytes.equals(Buffer.from((original as Binary).buffer));
      return original instanceof Uint8Array && bytes.equals(Buffer.from(original));
    }
    case 'TIMESTAMP':
      if (original instanceof Date) return Date.parse(String(stored)) === original.getTime();
      if (tag === 'Timestamp') return Date.parse(String(stored)) === (original as { t: number }).t * 1000;
      return typeof original === 'string' && stored === original;
    case 'DATETIME':
      if (original instanceof Date) return Date.parse(`${String(stored)}Z`) === original.getTime();
      return stored === original;
    case 'DATE':
      if (original instanceof Date) return Date.parse(`${String(stored)}T00:00:00Z`) === original.getTime();
      return stored === original;
    case 'TIME':
      return stored === original;
    case 'JSON':
      return canonicalText(String(stored)) === canonical(original);
    case 'RECORD':
      return false;
  }
}

function isPlainDocument(v: unknown): v is Record<string, unknown> {
  return (
    typeof v === 'object' &&
    v !== null &&
    !Array.isArray(v) &&
    !(v instanceof Date) &&
    !(v instanceof RegExp) &&
    !(v instanceof Uint8Array) &&
    tagOf(v) === undefined
  );
}

function own(obj: unknown, key: string): unknown {
  return isPlainDocument(obj) && Object.hasOwn(obj, key) ? obj[key] : undefined;
}

function escapeSegment(s: string): string {
  return s.replace(/\\/g, '\\\\').replace(/\./g, '\\.');
}

/**
 * Every leaf of `document` must be found in its column or in `_unmapped`; returns the paths that were not.
 * A REPEATED column must hold every element of its array, or the whole array must be in `_unmapped`.
 */
export function lostLeaves(
  columns: readonly ColumnSpec[],
  row: Readonly<Record<string, unknown>>,
  document: Readonly<Record<string, unknown>>,
): string[] {
  const unmapped: unknown = typeof row._unmapped === 'string' ? JSON.parse(row._unmapped) : undefined;
  const lost: string[] = [];
  walk(document, [], columns, row, unmapped, lost, true);
  return lost;
}

function walk(
  source: Readonly<Record<string, unknown>>,
  path: readonly string[],
  columns: readonly ColumnSpec[],
  rowLevel: unknown,
  unmappedLevel: unknown,
  lost: string[],
  topLevel: boolean,
): void {
  const byKey = new Map<string, ColumnSpec>();
  const dottedByKey = new Map<string, ColumnSpec[]>();
  for (const c of columns) {
    const p = parseFieldPath(c.mongo_field ?? c.name);
    const first = p[0] ?? '';
    if (p.length === 1) {
      if (!byKey.has(first)) byKey.set(first, c);
    } else {
      dottedByKey.set(first, [...(dottedByKey.get(first) ?? []), c]);
    }
  }
  for (const key of Object.keys(source)) {
    const value = source[key];
    const here = [...path, key];
    const where = here.join('.');
    if (topLevel && key === '_id') continue; // the pipeline keeps it in _doc_id
    const inUnmapped = own(unmappedLevel, key);
    if (inUnmapped !== undefined && !isPlainDocument(value)) {
      if (canonicalText(JSON.stringify(inUnmapped)) !== canonical(value)) {
        lost.push(`${where}: _unmapped holds something else`);
      }
      continue;
    }
    const column = byKey.get(key);
    const stored = column ? (rowLevel as Record<string, unknown> | null)?.[column.name] : undefined;
    if (column?.mode === 'REPEATED') {
      if (!Array.isArray(value) || !Array.isArray(stored) || stored.length !== value.length) {
        lost.push(`${where}: array neither in its column nor in _unmapped`);
        continue;
      }
      value.forEach((item: unknown, i) => {
        if (column.type === 'RECORD') {
          walk(
            item as Record<string, unknown>,
            [...here, String(i)],
            column.fields ?? [],
            stored[i],
            undefined,
            lost,
            false,
          );
        } else if (!represents(column.type, stored[i], item)) {
          lost.push(`${where}[${i}]: column ${column.name} does not hold it`);
        }
      });
      continue;
    }
    if (column) {
      if (column.type === 'RECORD' && isPlainDocument(value)) {
        walk(value, here, column.fields ?? [], stored, inUnmapped, lost, false);
      } else if (!(value === null && stored === null) && !represents(column.type, stored, value)) {
        lost.push(`${where}: column ${column.name} does not hold it`);
      }
      continue;
    }
    const dotted = dottedByKey.get(key) ?? [];
    if (dotted.length > 0 && isPlainDocument(value)) {
      const rest = dotted.map((c) => ({
        ...c,
        mongo_field: parseFieldPath(c.mongo_field ?? c.name)
          .slice(1)
          .map(escapeSegment)
          .join('.'),
      }));
      walk(value, here, rest, rowLevel, inUnmapped, lost, false);
      continue;
    }
    if (isPlainDocument(value) && isPlainDocument(inUnmapped)) {
      walk(value, here, [], rowLevel, inUnmapped, lost, false);
      continue;
    }
    lost.push(`${where}: neither in a column nor in _unmapped`);
  }
}
