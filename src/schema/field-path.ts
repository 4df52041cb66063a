/**
 * `mongo_field` paths: segments separated by `.`, where `\.` is a dot inside a key and `\\` a backslash.
 * The original service only knew plain dotted paths, which read the same way here.
 */
export function parseFieldPath(path: string): string[] {
  if (!path.includes('\\')) return path.split('.');
  const segments: string[] = [];
  let current = '';
  for (let i = 0; i < path.length; i++) {
    const ch = path.charAt(i);
    if (ch === '\\' && i + 1 < path.length) {
      current += path.charAt(++i);
    } else if (ch === '.') {
      segments.push(current);
      current = '';
    } else {
      current += ch;
    }
  }
  segments.push(current);
  return segments;
}

/** Inverse of parseFieldPath. */
export function formatFieldPath(segments: readonly string[]): string {
  return segments.map((s) => s.replace(/\\/g, '\\\\').replace(/\./g, '\\.')).join('.');
}
