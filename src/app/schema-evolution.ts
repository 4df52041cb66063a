import { columnsHash } from '../schema/column-spec.js';
import { planEvolution, type ColumnAddition } from '../schema/evolve.js';
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
  /**
   * What planning starts from: the columns, plus the fields planned before that the table turned down (it
   * holds them in a type the archiver cannot write, so their values go to `_unmapped`). Planning them again
   * would have the table asked again on every batch that has them.
   */
  #planned: readonly ColumnSpec[];

  constructor(columns: readonly ColumnSpec[]) {
    this.#columns = columns;
    this.#planned = columns;
  }

  get columns(): readonly ColumnSpec[] {
    return this.#columns;
  }

  /** What planning starts from (the columns and the fields the table turned down): see `#planned`. */
  get planned(): readonly ColumnSpec[] {
    return this.#planned;
  }

  /** The columns were set from elsewhere (the settings, the table's schema): planning starts from them. */
  reset(columns: readonly ColumnSpec[]): void {
    if (columns === this.#columns) return;
    this.#columns = columns;
    this.#planned = columns;
  }

  /**
   * The columns after the fields of `documents` that no column reads became columns (in the table too, when
   * `target` is given); undefined when nothing changed.
   */
  async apply(
    documents: readonly Readonly<Record<string, unknown>>[],
    target: ColumnsEvolver | undefined,
  ): Promise<ColumnsChange | undefined> {
    let planned = this.#planned;
    const additions: ColumnAddition[] = [];
    for (const document of documents) {
      const evolution = planEvolution(planned, document);
      if (evolution.additions.length === 0) continue;
      planned = evolution.columns;
      additions.push(...evolution.additions);
    }
    if (additions.length === 0) return undefined;
    // The table may have some of them already, with other types: its own wins, and a field it holds in a
    // type the archiver cannot write stays out of the columns (see evolve).
    const columns = target ? await target.evolve(planned) : planned;
    this.#planned = planned;
    // Everything planned was in the table already, in a type the archiver cannot write: nothing changes.
    if (columnsHash(columns) === columnsHash(this.#columns)) return undefined;
    this.#columns = columns;
    const added = additions
      .filter((a) => findColumn(columns, [...a.parent, a.column.name]))
      .map((a) => [...a.parent, a.column.name].join('.'));
    return { columns, added };
  }
}

/** The column at `path` (column names from the top; BigQuery's names are case-insensitive), if any. */
function findColumn(columns: readonly ColumnSpec[], path: readonly string[]): ColumnSpec | undefined {
  const [name, ...rest] = path;
  if (name === undefined) return undefined;
  const column = columns.find((c) => c.name.toLowerCase() === name.toLowerCase());
  return rest.length === 0 || column === undefined ? column : findColumn(column.fields ?? [], rest);
}
