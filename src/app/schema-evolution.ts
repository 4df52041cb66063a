import { columnsHash } from '../schema/column-spec.js';
import { planEvolution } from '../schema/evolve.js';
import { type ColumnSpec } from '../schema/types.js';

/** Where planned columns are made real: the history table (see `BigQueryDestination.evolve`). */
export interface ColumnsEvolver {
  /** Evolves the table towards `planned`; returns the columns rows must now be mapped with. */
  evolve(planned: readonly ColumnSpec[]): Promise<readonly ColumnSpec[]>;
}

/** A change of a mapping's columns: the columns now, and the dotted paths of the fields that became columns. */
export interface ColumnsChange {
  readonly columns: readonly ColumnSpec[];
  readonly added: readonly string[];
}

/**
 * Schema evolution (`add_columns`) of one mapping run: plans new columns from the documents of a batch and
 * has the table evolved before the batch's rows are written.
 */
export class SchemaEvolution {
  #columns: readonly ColumnSpec[];

  constructor(columns: readonly ColumnSpec[]) {
    this.#columns = columns;
  }

  get columns(): readonly ColumnSpec[] {
    return this.#columns;
  }

  /** The columns were set from elsewhere (the settings, the table's schema). */
  reset(columns: readonly ColumnSpec[]): void {
    this.#columns = columns;
  }

  /**
   * The columns after the fields of `documents` that no column reads became columns (in the table too, when
   * `target` is given); undefined when nothing changed.
   */
  async apply(
    documents: readonly Readonly<Record<string, unknown>>[],
    target: ColumnsEvolver | undefined,
  ): Promise<ColumnsChange | undefined> {
    let columns = this.#columns;
    const added: string[] = [];
    for (const document of documents) {
      const evolution = planEvolution(columns, document);
      if (evolution.additions.length === 0) continue;
      columns = evolution.columns;
      added.push(...evolution.additions.map((a) => [...a.parent, a.column.name].join('.')));
    }
    if (added.length === 0) return undefined;
    // The table may have some of them already, with other types: its own wins (see evolve).
    if (target) columns = await target.evolve(columns);
    // Everything planned was in the table already, in a type the archiver cannot write: nothing changes.
    if (columnsHash(columns) === columnsHash(this.#columns)) return undefined;
    this.#columns = columns;
    return { columns, added };
  }
}
