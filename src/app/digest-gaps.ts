import { type MappingSettings } from '../core/settings.js';
import { type ColumnSpec } from '../schema/types.js';
import { jsonContentPaths, jsonPathName } from '../transform/row-digest.js';

/**
 * What the digest of `verify` cannot see in a mapping, when a repair or the background verifier relies on
 * it: the content of JSON values is compared (transform/row-digest.ts, `jsonContentPaths`): JSON columns,
 * `_unmapped`, REPEATED JSON columns and JSON fields of REPEATED RECORDs; but a list inside a list (a REPEATED
 * JSON field of a REPEATED RECORD, or a JSON field of a REPEATED RECORD inside another) is compared by
 * presence only, so a change inside one made while the history was lost stays unrepaired, which
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
  'verification compares JSON values in a list inside a list (a REPEATED JSON field of a REPEATED RECORD, or a JSON field of a REPEATED RECORD inside another) by presence only: a change inside one made while the history was lost is not seen nor repaired (on_history_lost: resnapshot copies everything again)';

function jsonColumns(columns: readonly ColumnSpec[], prefix: string): string[] {
  return columns.flatMap((column) => {
    const name = `${prefix}${column.name}`;
    if (column.type === 'JSON') return [name];
    return column.type === 'RECORD' ? jsonColumns(column.fields ?? [], `${name}.`) : [];
  });
}

/** The dotted names of the JSON columns of `columns` whose content verify does not compare. */
export function presenceOnlyJsonColumns(columns: readonly ColumnSpec[]): string[] {
  const compared = new Set(jsonContentPaths(columns).map(jsonPathName));
  return jsonColumns(columns, '').filter((name) => !compared.has(name));
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
  const unseen = presenceOnlyJsonColumns(settings.columns ?? []);
  return relying.length > 0 && unseen.length > 0 ? { relying, unseen } : undefined;
}
