import { type MappingSettings } from '../core/settings.js';
import { type ColumnSpec } from '../schema/types.js';

/**
 * What the digest of `verify` cannot see in a mapping, when a repair or the background verifier relies on
 * it: JSON values (JSON columns, `_unmapped`) are compared by presence only (transform/row-digest.ts says
 * why), so a JSON value changed while the history was lost stays unrepaired, which `resnapshot` would fix.
 */
export interface DigestGaps {
  /** What relies on verification: `on_history_lost: repair`, `verify` (the background verifier). */
  readonly relying: readonly string[];
  /** What it compares by presence only: `_unmapped`, and the dotted names of JSON columns. */
  readonly unseen: readonly string[];
}

/** The message the daemon logs once per mapping configuration when `digestGaps` finds any. */
export const DIGEST_GAPS_MESSAGE =
  'verification compares JSON values (JSON columns, _unmapped) by presence only: a JSON value changed while the history was lost is not seen nor repaired (on_history_lost: resnapshot copies everything again)';

function jsonColumns(columns: readonly ColumnSpec[], prefix: string): string[] {
  return columns.flatMap((column) => {
    const name = `${prefix}${column.name}`;
    if (column.type === 'JSON') return [name];
    return column.type === 'RECORD' ? jsonColumns(column.fields ?? [], `${name}.`) : [];
  });
}

/**
 * The gaps of verification for a mapping whose repair or background verifier relies on it; undefined when
 * nothing relies on it or it sees everything. Columns still to be inferred count as none (inference makes
 * sub-documents RECORDs, which are compared field by field).
 */
export function digestGaps(
  settings: Pick<MappingSettings, 'onHistoryLost' | 'verify' | 'captureUnmapped' | 'columns'>,
): DigestGaps | undefined {
  const relying = [
    ...(settings.onHistoryLost === 'repair' ? ['on_history_lost: repair'] : []),
    ...(settings.verify ? ['verify'] : []),
  ];
  const unseen = [
    ...(settings.captureUnmapped ? ['_unmapped'] : []),
    ...jsonColumns(settings.columns ?? [], ''),
  ];
  return relying.length > 0 && unseen.length > 0 ? { relying, unseen } : undefined;
}
