import { type MappingSettings } from '../core/settings.js';
import { type ColumnSpec } from '../schema/types.js';

/**
 * The columns inferred for each mapping whose settings declare none, kept across the restarts of its run
 * while its configuration stays the same (`configurationKey`): a run that fails after inferring (BigQuery
 * down, say) and restarts again and again samples the collection once, not once per retry. The columns are
 * a starting point only (schema evolution adds what later documents bring), so an older sample serves as
 * well as a new one. Dropped once the settings carry columns (saved after a successful start), or when the
 * configuration changed (a resync among others): then the next inference samples again.
 */
export class InferredColumns {
  readonly #byMapping = new Map<string, { readonly key: string; readonly columns: readonly ColumnSpec[] }>();

  /**
   * The columns inferred for `settings` by an earlier run of the same configuration, or `infer`'s (kept when
   * it succeeds); `reused` says which.
   */
  async columns(
    settings: Pick<MappingSettings, 'id' | 'configurationKey'>,
    infer: () => Promise<readonly ColumnSpec[]>,
  ): Promise<{ readonly columns: readonly ColumnSpec[]; readonly reused: boolean }> {
    const kept = this.#byMapping.get(settings.id);
    if (kept?.key === settings.configurationKey) return { columns: kept.columns, reused: true };
    const columns = await infer();
    this.#byMapping.set(settings.id, { key: settings.configurationKey, columns });
    return { columns, reused: false };
  }

  /** Forgets the mapping's columns: its settings carry columns now, or it is gone. */
  forget(id: string): void {
    this.#byMapping.delete(id);
  }
}
