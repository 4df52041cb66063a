import { type SourceDocument } from '../core/ports.js';
import { type MappingSpec } from '../core/prepared.js';
import { type Logger } from '../observability/logger.js';
import { type ColumnSpec } from '../schema/types.js';
import { compileRowMapper, type RowMapper } from '../transform/row-mapper.js';
import { SchemaEvolution, type ColumnsEvolver } from './schema-evolution.js';

/** The table the columns are made real in, as the coordinator sees it (BigQueryDestination in production). */
export interface CoordinatedTable extends ColumnsEvolver {
  /** The columns the table holds now (its types win over the declared ones). */
  readonly columns: readonly ColumnSpec[];
  /** Where the declared columns differ from the table's, in words. */
  readonly schemaConflicts: readonly string[];
}

export interface SchemaCoordinatorOptions {
  readonly columns: readonly ColumnSpec[];
  /** The columns came from a sample in this run and are not in the settings yet. */
  readonly columnsUnsaved: boolean;
  readonly origin: 'inferred' | 'declared';
  readonly evolution: 'add_columns' | 'off';
  readonly captureUnmapped: boolean;
  /** Writes the columns to the settings (inferred or evolved); nothing in a dry run. */
  readonly saveColumns: (columns: readonly ColumnSpec[]) => Promise<void>;
  /** Says in `lastFailure` that declared columns differ from the table. */
  readonly reportConflicts: (conflicts: readonly string[]) => Promise<void>;
  readonly log: Logger;
}

/**
 * The one place a mapping's columns change: schema evolution (`add_columns`, table included), saving the
 * columns to the settings, adopting the table's schema, and the row mapper built from the columns. The
 * stream and the backfill both evolve the schema for what they read; their calls are queued and run one at a
 * time, each planning from the columns the previous one left, so no addition is lost or asked for twice.
 */
export class SchemaCoordinator {
  readonly #o: SchemaCoordinatorOptions;
  readonly #evolution: SchemaEvolution;
  #columns: readonly ColumnSpec[];
  #columnsUnsaved: boolean;
  #mapper: RowMapper;
  #mappingSpec: MappingSpec | undefined;
  #table: CoordinatedTable | undefined;
  /** The end of the queue: the latest change scheduled (settled, never rejected). */
  #tail: Promise<unknown> = Promise.resolve();

  constructor(options: SchemaCoordinatorOptions) {
    this.#o = options;
    this.#columns = options.columns;
    this.#columnsUnsaved = options.columnsUnsaved;
    this.#evolution = new SchemaEvolution(options.columns);
    this.#mapper = this.#compile(options.columns);
  }

  /** The mapper for rows written now; replaced when the columns change. */
  get mapper(): RowMapper {
    return this.#mapper;
  }

  /**
   * The mapper as plain data for worker threads, with what evolution plans from (`add_columns`): the same
   * object as long as neither changes, so that a worker compiles it once.
   */
  get mappingSpec(): MappingSpec {
    const planned = this.#o.evolution === 'add_columns' ? this.#evolution.planned : undefined;
    const spec = this.#mappingSpec;
    if (spec?.columns === this.#mapper.columns && spec.planned === planned) return spec;
    this.#mappingSpec = {
      columns: this.#mapper.columns,
      captureUnmapped: this.#o.captureUnmapped,
      ...(planned && { planned }),
    };
    return this.#mappingSpec;
  }

  get columns(): readonly ColumnSpec[] {
    return this.#columns;
  }

  /**
   * The table's actual schema wins over the columns (BigQuery cannot retype a column): rows are mapped with
   * the table's types. Inferred columns are saved as the table has them. Declared columns stay as the user
   * wrote them, and `lastFailure` says where they differ from the table and what to do.
   */
  adoptTable(table: CoordinatedTable): Promise<void> {
    return this.#serialised(async () => {
      this.#table = table;
      const conflicts = table.schemaConflicts;
      const columns = table.columns;
      if (conflicts.length > 0) {
        this.#o.log.warn(
          { conflicts },
          'the columns differ from the existing table; writing with the table types',
        );
      }
      if (this.#o.origin === 'inferred') {
        if (this.#columnsUnsaved || columns !== this.#columns) await this.#save(columns);
      } else if (conflicts.length > 0) {
        await this.#o.reportConflicts(conflicts);
      }
      this.#set(columns);
    });
  }

  /**
   * Schema evolution (`add_columns`): the fields of `documents` that no column reads become columns (in the
   * table too) before their rows are mapped. Resolves once this call's change, and every one queued before
   * it, is done.
   */
  evolve(documents: readonly SourceDocument[], signal: AbortSignal): Promise<void> {
    if (this.#o.evolution !== 'add_columns' || documents.length === 0) return Promise.resolve();
    return this.#serialised(async () => {
      signal.throwIfAborted();
      const change = await this.#evolution.apply(documents, this.#table);
      if (!change) return;
      this.#o.log.info({ added: change.added }, 'schema evolved: new columns');
      this.#set(change.columns);
      await this.#save(change.columns);
    });
  }

  async #save(columns: readonly ColumnSpec[]): Promise<void> {
    await this.#o.saveColumns(columns);
    this.#columnsUnsaved = false;
  }

  #set(columns: readonly ColumnSpec[]): void {
    this.#columns = columns;
    this.#evolution.reset(columns);
    this.#mapper = this.#compile(columns);
  }

  #compile(columns: readonly ColumnSpec[]): RowMapper {
    return compileRowMapper(columns, { captureUnmapped: this.#o.captureUnmapped });
  }

  /** Runs `change` after every change queued before it; a failed one does not stop the later ones. */
  #serialised(change: () => Promise<void>): Promise<void> {
    const result = this.#tail.then(change);
    this.#tail = result.catch(() => undefined);
    return result;
  }
}
