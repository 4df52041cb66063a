import { type MappingSettings } from '../core/settings.js';
import { type ColumnSpec } from '../schema/types.js';

/**
 * What the digest of `verify` cannot see in a mapping, when a repair or the background verifier relies on
 * it: the content of JSON columns and `_unmapped` is compared (transform/row-digest.ts, `jsonContentPaths`),
 * but a REPEATED JSON column, or a JSON column inside a REPEATED RECORD, holds a list per row and is compared
 * by presence only, so a change inside one made while the history was lost stays unrepaired, which
 * `resnapshot` would fix.
 */
export interface DigestGaps {
  /** What relies on verification: `on_history_lost: repair`, `verify` (the background verifier). */
  readonly relying: readonly string[];
  /** The dotted names of the JSON columns it compares by presence only. */
  readonly unseen: readonly string[];
}

/** The message the daemon logs once per mapping configuration when `digestGaps` finds any. */
export const DIGEST_GAPS_MESSAGE =
  'verification compares REPEATED JSON values (a REPEATED JSON column, or one inside a REPEATED RECORD) by presence only: a change inside one made while the history was lost is not seen nor repaired (on_history_lost: resnapshot copies everything again)';

function repeatedJsonColumns(columns: readonly ColumnSpec[], prefix: string, repeated: boolean): string[] {
  return columns.flatMap((column) => {
    const name = `${prefix}${column.name}`;
    const inList = repeated || column.mode === 'REPEATED';
    if (column.type === 'JSON') return inList ? [name] : [];
    return column.type === 'RECORD' ? repeatedJsonColumns(column.fields ?? [], `${name}.`, inList) : [];
  });
}

/**
 * The gaps of verification for a mapping whose repair or background verifier relies on it; undefined when
 * nothing relies on it or it sees everything. Columns still to be inferred count as none.
 */
export function digestGaps(
  settings: Pick<MappingSettings, 'onHistoryLost' | 'verify' | 'columns'>,
): DigestGaps | undefined {
  const relying = [
    ...(settings.onHistoryLost === 'repair' ? ['on_history_lost: repair'] : []),
    ...(settings.verify ? ['verify'] : []),
  ];
  const unseen = repeatedJsonColumns(settings.columns ?? [], '', false);
  return relying.length > 0 && unseen.length > 0 ? { relying, unseen } : undefined;
}
