/** How a cell is written: SQL's NULL for null, BigQuery's wrapped values (timestamps, dates) by their text. */
function cellText(value: unknown): string {
  if (value === null) return 'NULL';
  if (value === undefined) return '';
  if (typeof value === 'string') return value;
  if (typeof value === 'number' || typeof value === 'bigint' || typeof value === 'boolean') {
    return String(value);
  }
  if (value instanceof Date) return value.toISOString();
  const wrapped: unknown = (value as { value?: unknown }).value;
  if (typeof wrapped === 'string') return wrapped;
  return JSON.stringify(value);
}

function isNumeric(value: unknown): boolean {
  return typeof value === 'number' || typeof value === 'bigint';
}

/**
 * Rows as an aligned text table for a terminal: a header, a rule, one line per row, numbers right-aligned,
 * every line starting with `indent`. The columns are the first row's keys unless given.
 */
export function formatTable(
  rows: readonly Readonly<Record<string, unknown>>[],
  options: { readonly columns?: readonly string[]; readonly indent?: string } = {},
): string {
  const columns = options.columns ?? Object.keys(rows[0] ?? {});
  const indent = options.indent ?? '';
  if (columns.length === 0) return `${indent}(no rows)`;
  const cells = rows.map((row) => columns.map((column) => cellText(row[column])));
  const widths = columns.map((column, i) =>
    Math.max(column.length, ...cells.map((line) => line[i]?.length ?? 0)),
  );
  const numeric = columns.map(
    (column) => rows.length > 0 && rows.every((row) => row[column] == null || isNumeric(row[column])),
  );
  const line = (texts: readonly string[]) =>
    indent +
    texts
      .map((text, i) => (numeric[i] === true ? text.padStart(widths[i] ?? 0) : text.padEnd(widths[i] ?? 0)))
      .join('  ')
      .trimEnd();
  return [line(columns), line(widths.map((width) => '-'.repeat(width))), ...cells.map(line)].join('\n');
}
