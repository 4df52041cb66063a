/** A finite decimal number as sign, significant digits (no leading or trailing zeros) and a power of ten. */
export interface DecimalParts {
  readonly negative: boolean;
  /** '' for zero. */
  readonly digits: string;
  readonly exponent: number;
}

const DECIMAL_TEXT = /^([+-])?(\d*)(?:\.(\d*))?(?:[eE]([+-]?\d+))?$/;

/** Parses `-12.50`, `1E+6000`, `0.000` and the like; undefined for NaN, Infinity and anything else. */
export function parseDecimal(text: string): DecimalParts | undefined {
  const m = DECIMAL_TEXT.exec(text);
  if (!m) return undefined;
  const intPart = m[2] ?? '';
  const fracPart = m[3] ?? '';
  if (intPart.length === 0 && fracPart.length === 0) return undefined;
  let digits = intPart + fracPart;
  let exponent = (m[4] ? Number.parseInt(m[4], 10) : 0) - fracPart.length;
  const lead = /^0*/.exec(digits)?.[0].length ?? 0;
  digits = digits.slice(lead);
  const trimmed = digits.replace(/0+$/, '');
  exponent += digits.length - trimmed.length;
  digits = trimmed;
  if (digits.length === 0) exponent = 0;
  return { negative: m[1] === '-' && digits.length > 0, digits, exponent };
}

export function sameDecimal(a: DecimalParts, b: DecimalParts): boolean {
  return a.negative === b.negative && a.digits === b.digits && a.exponent === b.exponent;
}

/** Digits before and after the decimal point. */
export function decimalShape(d: DecimalParts): { integerDigits: number; fractionDigits: number } {
  return {
    integerDigits: Math.max(0, d.digits.length + d.exponent),
    fractionDigits: Math.max(0, -d.exponent),
  };
}

/** Plain positional notation (`-0.0015`, `1200`), the form BigQuery's NUMERIC columns accept. */
export function formatDecimal(d: DecimalParts): string {
  if (d.digits.length === 0) return '0';
  const sign = d.negative ? '-' : '';
  if (d.exponent >= 0) return sign + d.digits + '0'.repeat(d.exponent);
  const point = d.digits.length + d.exponent;
  if (point > 0) return `${sign}${d.digits.slice(0, point)}.${d.digits.slice(point)}`;
  return `${sign}0.${'0'.repeat(-point)}${d.digits}`;
}

/** NUMERIC: precision 38, scale 9. BIGNUMERIC: scale 38 and 38 integer digits (a little under its true range). */
export const NUMERIC_LIMITS = { integerDigits: 29, fractionDigits: 9 } as const;
export const BIGNUMERIC_LIMITS = { integerDigits: 38, fractionDigits: 38 } as const;

export function fitsDecimal(
  d: DecimalParts,
  limits: { readonly integerDigits: number; readonly fractionDigits: number },
): boolean {
  const shape = decimalShape(d);
  return shape.integerDigits <= limits.integerDigits && shape.fractionDigits <= limits.fractionDigits;
}

/** The double a decimal text denotes, when the text is exactly that double's shortest round-trip form. */
export function exactDouble(text: string): number | undefined {
  const d = parseDecimal(text);
  if (d === undefined) {
    const t = text.replace(/^\+/, '');
    if (t === 'NaN' || t === '-NaN') return Number.NaN;
    if (t === 'Infinity' || t === 'Inf') return Number.POSITIVE_INFINITY;
    if (t === '-Infinity' || t === '-Inf') return Number.NEGATIVE_INFINITY;
    return undefined;
  }
  const x = Number(formatDecimal(d));
  if (!Number.isFinite(x)) return undefined;
  const back = parseDecimal(String(x));
  if (back === undefined || !sameDecimal(back, d)) return undefined;
  // parseDecimal gives zero no sign; a Decimal128 -0 is the double -0.
  return x === 0 && text.startsWith('-') ? -0 : x;
}
