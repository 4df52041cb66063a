import {
  type BigQuery,
  type Dataset,
  type Table,
  type TableField as RemoteField,
  type TableMetadata,
} from '@google-cloud/bigquery';
import { BigQueryError, ConfigError } from '../errors.js';
import { type Evolution } from '../schema/evolve.js';
import { diffHistoryTable, diffView, type HistoryTableDiff } from '../schema/table-diff.js';
import { columnToField, historyTableSchema } from '../schema/table-schema.js';
import { type ColumnSpec, type TableField } from '../schema/types.js';
import { addColumnsSql, createOrReplaceViewSql, dropViewSql } from './ddl.js';
import { toBigQueryError } from './error-mapping.js';
import {
  assertDatasetId,
  assertProjectId,
  quoteColumn,
  tableRef,
  type TableRef,
} from '../schema/identifiers.js';
import {
  existingField,
  httpStatus,
  normalisedMode,
  normalisedType,
  remoteFields,
  TableIntrospector,
  type ExistingField,
  type IntrospectedTable,
  type MappingObjects,
} from './table-introspector.js';
import { currentStateViewSql, latestViewSql, VIEW_HASH_LABEL, viewHash, viewNames } from './views.js';

export { type ExistingField } from './table-introspector.js';

/** Columns of the dead-letter table `<table>_errors`: rows BigQuery refused, with the reason and the raw document. */
export const DEAD_LETTER_FIELDS: readonly TableField[] = Object.freeze([
  {
    name: 'mapping_id',
    type: 'STRING',
    mode: 'NULLABLE',
    description: 'the settings document of the mapping',
  },
  { name: 'event_id', type: 'STRING', mode: 'NULLABLE', description: 'unique id of the change (_event_id)' },
  { name: '_doc_id', type: 'STRING', mode: 'NULLABLE', description: 'canonical string of the document _id' },
  { name: 'reason', type: 'STRING', mode: 'NULLABLE', description: 'why BigQuery refused the row' },
  {
    name: 'document',
    // STRING rather than JSON: a dead-letter table must accept whatever it is given (JSON columns have their
    // own limits and parse the text), and BigQuery's JSON functions read JSON text in STRING columns too.
    type: 'STRING',
    mode: 'NULLABLE',
    description: 'the raw document as relaxed Extended JSON',
  },
  { name: 'failed_at', type: 'TIMESTAMP', mode: 'NULLABLE', description: 'when the row was refused' },
]);

/** History tables are DAY-partitioned on this field and clustered on these. */
export const HISTORY_PARTITION_FIELD = '_cluster_time';
export const HISTORY_CLUSTERING_FIELDS = ['_doc_id'] as const;
/** Dead-letter tables are DAY-partitioned on this field. */
export const DEAD_LETTER_PARTITION_FIELD = 'failed_at';
/** Attempts of the schema patch when another writer changed the table in between (HTTP 412 on the etag). */
const MAX_PATCH_ATTEMPTS = 3;
const LOOPBACK_HOSTS = new Set(['127.0.0.1', 'localhost', '[::1]']);

/** Workarounds for local BigQuery emulators; refused unless the client talks to a loopback endpoint. */
export interface EmulatorWorkarounds {
  /**
   * goccy/bigquery-emulator refuses `CREATE OR REPLACE VIEW` on an existing view: drop it first. Between the
   * two statements the view does not exist, which is why BigQuery itself always gets the atomic statement.
   */
  readonly dropViewBeforeReplace?: boolean;
  /**
   * bqemulator reports success for an `ALTER TABLE` with several `ADD COLUMN` clauses but adds nothing,
   * while the tables.patch that follows puts the columns into its metadata: every write then fails ("table
   * has 8 columns but 11 values were supplied"). One statement per column instead. BigQuery itself gets
   * the single statement: each statement counts against its rate limit of table metadata updates.
   */
  readonly oneColumnPerAlter?: boolean;
}

export interface TableAdminOptions {
  /** The REST client (`createBigQueryClients(...).bigquery`). */
  readonly bigquery: BigQuery;
  readonly projectId: string;
  readonly datasetId: string;
  /** Location of a dataset created here (BigQuery's default when unset); also sent with every statement. */
  readonly location?: string;
  readonly emulatorWorkarounds?: EmulatorWorkarounds;
}

export interface DatasetResult {
  readonly datasetId: string;
  readonly created: boolean;
}

export interface TableState {
  readonly table: string;
  /** True when this call created the table; false when it existed (the state is then read back). */
  readonly created: boolean;
  readonly fields: readonly ExistingField[];
  readonly partitioning: { readonly type: string; readonly field: string | undefined } | undefined;
  readonly clustering: readonly string[];
  /**
   * Dotted paths of wanted fields the existing table lacks (for example metadata columns of a table written by
   * the original service); empty for a table created here. Adding them is the caller's decision.
   */
  readonly missing: readonly string[];
  /**
   * Dotted paths of fields the existing table had as REQUIRED and this call relaxed to NULLABLE (history
   * tables only; see `ensureHistoryTable`).
   */
  readonly relaxed: readonly string[];
}

export interface ViewsResult {
  /** Views created or replaced, in order. */
  readonly replaced: readonly string[];
  /** Views left as they were: their label showed the statement and the columns they would be created from. */
  readonly current: readonly string[];
  /** A stale `<table>_latest_view` dropped because no column is a primary key any more. */
  readonly dropped: readonly string[];
}

export interface AddColumnsResult {
  /** Dotted paths of the fields this call added (empty when the table already had them all). */
  readonly added: readonly string[];
  /** The table's schema, read back after the change. */
  readonly fields: readonly ExistingField[];
  readonly views: ViewsResult;
}

/** A view's DDL statement, and the hash its label carries once it is created from it. */
export interface ViewStatement {
  readonly sql: string;
  readonly hash: string;
}

/** The views of a history table as `run` would create them: `latestViewSql` only with a primary key. */
export interface ViewPlan {
  readonly view: TableRef;
  readonly viewSql: ViewStatement;
  readonly latestView: TableRef;
  readonly latestViewSql: ViewStatement | undefined;
}

/** What `prepare` left: the columns rows are mapped with, where they differ from the table, its fields. */
export interface PreparedTables {
  /** The diff `prepare` applied, computed from what it found (before any change). */
  readonly diff: HistoryTableDiff;
  readonly columns: readonly ColumnSpec[];
  readonly conflicts: readonly string[];
  readonly fields: readonly ExistingField[];
}

/**
 * The applier of table administration (introspect with TableIntrospector, diff with `diffHistoryTable`,
 * apply here). DDL for one dataset: the dataset, history tables (DAY-partitioned on `_cluster_time`, clustered on
 * `_doc_id`), their views, additive schema changes and dead-letter tables. Every name is validated before any
 * SQL text or request exists; an illegal one is an IdentifierError. Every method is idempotent and safe to
 * race with another instance doing the same. Failures of BigQuery come out as BigQueryError.
 */
export class TableAdmin {
  readonly projectId: string;
  readonly datasetId: string;
  /** The read-only half: what exists (`prepare` starts from it). */
  readonly introspector: TableIntrospector;
  private readonly bigquery: BigQuery;
  private readonly location: string | undefined;
  private readonly dropViewBeforeReplace: boolean;
  private readonly oneColumnPerAlter: boolean;

  constructor(options: TableAdminOptions) {
    this.projectId = assertProjectId(options.projectId);
    this.datasetId = assertDatasetId(options.datasetId);
    this.bigquery = options.bigquery;
    this.location = options.location;
    this.dropViewBeforeReplace = options.emulatorWorkarounds?.dropViewBeforeReplace === true;
    this.oneColumnPerAlter = options.emulatorWorkarounds?.oneColumnPerAlter === true;
    this.introspector = new TableIntrospector({
      bigquery: options.bigquery,
      projectId: this.projectId,
      datasetId: this.datasetId,
      ...(options.location !== undefined && { location: options.location }),
    });
    if ((this.dropViewBeforeReplace || this.oneColumnPerAlter) && !isLoopback(options.bigquery.apiEndpoint)) {
      throw new ConfigError(
        `emulator workarounds are only for a local emulator, but BigQuery is ${options.bigquery.apiEndpoint}`,
      );
    }
  }

  /**
   * Everything a mapping needs, by introspect, diff, apply: reads what exists (`TableIntrospector.mapping`),
   * diffs the history table against `wanted` (`diffHistoryTable`), then creates what is absent (dataset,
   * history table, dead-letter table), relaxes REQUIRED fields, adds what the table lacks, and creates or
   * replaces the views the diff names. Each step still tolerates another instance doing the same meanwhile
   * (a creation it lost is read back and diffed again). The table's types win over `wanted` (see
   * `alignWithTable`); `conflicts` says where they differed.
   */
  async prepare(table: string, wanted: readonly ColumnSpec[]): Promise<PreparedTables> {
    this.ref(table);
    assertFieldNames(historyTableSchema(wanted));
    const found = await this.introspector.mapping(table);
    const diff = diffHistoryTable(wanted, found.history?.fields);
    if (!found.datasetExists) await this.ensureDataset();
    let fields: readonly ExistingField[];
    if (diff.kind === 'create' || found.history === undefined) {
      // Created here, or by another instance just before (then read back, and relaxed like any existing one).
      fields = (await this.ensureHistoryTable(table, wanted)).fields;
    } else {
      assertTable(found.history);
      fields =
        diff.relax.length > 0
          ? (await this.relaxRequired(this.stateOf(found.history, historyTableSchema(wanted)))).fields
          : found.history.fields;
    }
    const applied = diffHistoryTable(wanted, fields);
    const columns = applied.columns;
    const added = applied.kind === 'existing' && applied.additions.length > 0;
    if (added) {
      // Regenerates the views for the new columns too: what was found of them is out of date.
      fields = (await this.addColumns(table, { columns, additions: applied.additions })).fields;
    }
    if (found.deadLetter?.type !== 'TABLE') await this.ensureDeadLetterTable(table);
    if (!added) await this.applyViews(this.planViews(table, columns), found);
    return {
      diff,
      columns,
      conflicts: applied.kind === 'existing' ? applied.conflicts : [],
      fields,
    };
  }

  /** Creates the dataset when it does not exist. */
  async ensureDataset(): Promise<DatasetResult> {
    const dataset = this.dataset();
    const context = `dataset ${this.datasetId}`;
    if (await this.exists(dataset, context)) return { datasetId: this.datasetId, created: false };
    try {
      await dataset.create(this.location === undefined ? {} : { location: this.location });
      return { datasetId: this.datasetId, created: true };
    } catch (error) {
      if (isAlreadyExists(error)) return { datasetId: this.datasetId, created: false };
      throw toBigQueryError(error, `creating ${context}`);
    }
  }

  /**
   * Creates the history table `table` (the columns plus the metadata columns) when absent; otherwise reads
   * back what exists. An existing table is never changed here (see `addColumns`).
   */
  async ensureHistoryTable(table: string, columns: readonly ColumnSpec[]): Promise<TableState> {
    this.ref(table);
    const fields = historyTableSchema(columns);
    assertFieldNames(fields);
    const state = await this.ensureTable(table, fields, HISTORY_PARTITION_FIELD, HISTORY_CLUSTERING_FIELDS);
    if (state.created || !hasRequired(state.fields)) return state;
    return this.relaxRequired(state);
  }

  /**
   * A history table must accept every change row, and a delete or a drop marker leaves user columns NULL:
   * REQUIRED fields of a table created earlier (by an older version, or by hand) become NULLABLE. BigQuery
   * allows exactly this change of mode through tables.patch.
   */
  private async relaxRequired(state: TableState): Promise<TableState> {
    const handle = this.dataset().table(state.table);
    const context = `table ${state.table}`;
    let metadata = await this.metadata(handle, context);
    for (let attempt = 1; ; attempt++) {
      const fields = structuredClone(remoteFields(metadata));
      const relaxed = relaxFields(fields, '');
      if (relaxed.length === 0) return { ...state, fields: fields.map(existingField) };
      try {
        await handle.setMetadata({
          schema: { fields },
          ...(metadata.etag !== undefined && { etag: metadata.etag }),
        });
        const after = await this.metadata(handle, context);
        return { ...state, fields: remoteFields(after).map(existingField), relaxed };
      } catch (error) {
        if (httpStatus(error) !== 412 || attempt >= MAX_PATCH_ATTEMPTS) {
          throw toBigQueryError(error, `relaxing REQUIRED fields of ${context}`);
        }
        metadata = await this.metadata(handle, context);
      }
    }
  }

  private stateOf(table: IntrospectedTable, wanted: readonly TableField[]): TableState {
    return {
      table: table.tableId,
      created: false,
      fields: table.fields,
      partitioning: table.partitioning,
      clustering: table.clustering,
      missing: missingPaths(wanted, table.fields, ''),
      relaxed: [],
    };
  }

  /** The fields of history table `table` as they are now, or undefined when it does not exist (read only). */
  async historyTableFields(table: string): Promise<ExistingField[] | undefined> {
    this.ref(table);
    const metadata = await this.tryMetadata(this.dataset().table(table), `table ${table}`);
    return metadata && remoteFields(metadata).map(existingField);
  }

  /** Creates the dead-letter table `<table>_errors` (DAY-partitioned on `failed_at`) when absent. */
  async ensureDeadLetterTable(table: string): Promise<TableState> {
    this.ref(table);
    return this.ensureTable(viewNames(table).errors, DEAD_LETTER_FIELDS, DEAD_LETTER_PARTITION_FIELD, []);
  }

  /**
   * Creates or replaces `<table>_view`, and `<table>_latest_view` when a column is a primary key; drops a
   * `<table>_latest_view` left from an earlier primary key otherwise. A view whose label shows it was created
   * from the same statement and columns is left alone: a start costs a tables.get per view, not a query job.
   */
  async ensureViews(table: string, columns: readonly ColumnSpec[]): Promise<ViewsResult> {
    return this.applyViews(this.planViews(table, columns));
  }

  /**
   * Applies the additive changes of `planEvolution`: new top-level columns by `ALTER TABLE ... ADD COLUMN IF
   * NOT EXISTS` (one statement per column with `oneColumnPerAlter`), then one tables.patch with the full merged schema (which also carries new RECORD sub-fields,
   * and keeps everything else of the existing schema as it is), then regenerates the views for
   * `evolution.columns`. Columns the table already has are left alone, so a repeated call adds nothing.
   */
  async addColumns(
    table: string,
    evolution: Pick<Evolution, 'columns' | 'additions'>,
  ): Promise<AddColumnsResult> {
    const ref = this.ref(table);
    for (const { parent, column } of evolution.additions) {
      parent.forEach(quoteColumn);
      assertFieldNames([columnToField(column)]);
    }
    const topLevel = evolution.additions
      .filter((a) => a.parent.length === 0)
      .map((a) => columnToField(a.column));
    // Built now, so that nothing is sent when any of it is invalid.
    addColumnsSqlIfAny(ref, topLevel);
    const views = this.planViews(table, evolution.columns);

    const handle = this.dataset().table(table);
    const context = `table ${table}`;
    let metadata = await this.metadata(handle, context);
    // A conflict with the existing schema is refused before the ALTER changes anything.
    mergeFields(remoteFields(metadata), evolution.additions, table);
    const added: string[] = [];
    const present = new Set(remoteFields(metadata).map((f) => (f.name ?? '').toLowerCase()));
    const absent = topLevel.filter((f) => !present.has(f.name.toLowerCase()));
    const statements = this.oneColumnPerAlter
      ? absent.map((f) => addColumnsSql(ref, [f]))
      : [addColumnsSqlIfAny(ref, absent)].filter((sql) => sql !== undefined);
    for (const alter of statements) await this.run(alter, `adding columns to ${context}`);
    if (absent.length > 0) {
      added.push(...absent.map((f) => f.name));
      metadata = await this.metadata(handle, context);
    }

    for (let attempt = 1; ; attempt++) {
      const merged = mergeFields(remoteFields(metadata), evolution.additions, table);
      if (merged.added.length === 0) break;
      try {
        await handle.setMetadata({
          schema: { fields: merged.fields },
          // With the etag BigQuery refuses the patch (412) when the table changed since it was read, instead
          // of silently undoing the other change.
          ...(metadata.etag !== undefined && { etag: metadata.etag }),
        });
        for (const path of merged.added) if (!added.includes(path)) added.push(path);
        break;
      } catch (error) {
        if (httpStatus(error) !== 412 || attempt >= MAX_PATCH_ATTEMPTS) {
          throw toBigQueryError(error, `patching the schema of ${context}`);
        }
        metadata = await this.metadata(handle, context);
      }
    }

    const after = await this.metadata(handle, context);
    return { added, fields: remoteFields(after).map(existingField), views: await this.applyViews(views) };
  }

  private dataset(): Dataset {
    return this.bigquery.dataset(
      this.datasetId,
      this.location === undefined ? {} : { location: this.location },
    );
  }

  private ref(table: string): TableRef {
    return tableRef(this.projectId, this.datasetId, table);
  }

  private planViews(table: string, columns: readonly ColumnSpec[]): ViewPlan {
    return viewPlan(this.projectId, this.datasetId, table, columns);
  }

  /**
   * Creates, replaces or drops the views as `diffView` decides. `known` holds what an introspection found
   * (then nothing is read again); without it each view is read first.
   */
  private async applyViews(
    plan: ViewPlan,
    known?: Pick<MappingObjects, 'view' | 'latestView'>,
  ): Promise<ViewsResult> {
    const replaced: string[] = [];
    const current: string[] = [];
    const dropped: string[] = [];
    const existing = async (ref: TableRef, found: IntrospectedTable | undefined) =>
      known ? found : await this.introspector.table(ref.tableId);
    const ensure = async (
      view: TableRef,
      statement: ViewStatement,
      found: IntrospectedTable | undefined,
    ): Promise<void> => {
      if (diffView(statement.hash, await existing(view, found)) === 'keep') {
        current.push(view.tableId);
        return;
      }
      await this.replaceView(view, statement);
      replaced.push(view.tableId);
    };
    await ensure(plan.view, plan.viewSql, known?.view);
    if (plan.latestViewSql !== undefined) {
      await ensure(plan.latestView, plan.latestViewSql, known?.latestView);
    } else if (diffView(undefined, await existing(plan.latestView, known?.latestView)) === 'drop') {
      await this.run(dropViewSql(plan.latestView), `dropping view ${plan.latestView.tableId}`);
      dropped.push(plan.latestView.tableId);
    }
    return { replaced, current, dropped };
  }

  /**
   * Runs the view's DDL (the caller found that the view does not carry the statement's hash); then labels
   * the view with it (a patch of its metadata, not a query job). Should the patch fail, the next start runs
   * the DDL again.
   */
  private async replaceView(view: TableRef, statement: ViewStatement): Promise<void> {
    const handle = this.dataset().table(view.tableId);
    const context = `creating or replacing view ${view.tableId}`;
    if (this.dropViewBeforeReplace) await this.run(dropViewSql(view), context);
    await this.run(statement.sql, context);
    try {
      await handle.setMetadata({ labels: { [VIEW_HASH_LABEL]: statement.hash } });
    } catch (error) {
      throw toBigQueryError(error, `labelling view ${view.tableId}`);
    }
  }

  private async ensureTable(
    table: string,
    fields: readonly TableField[],
    partitionField: string,
    clustering: readonly string[],
  ): Promise<TableState> {
    const handle = this.dataset().table(table);
    const context = `table ${table}`;
    let metadata = await this.tryMetadata(handle, context);
    let created = false;
    if (metadata === undefined) {
      try {
        const [, response] = await this.dataset().createTable(table, {
          schema: { fields: fields.map(toRemoteField) },
          timePartitioning: { type: 'DAY', field: partitionField },
          ...(clustering.length > 0 && { clustering: { fields: [...clustering] } }),
        });
        metadata = response;
        created = true;
      } catch (error) {
        if (!isAlreadyExists(error)) throw toBigQueryError(error, `creating ${context}`);
        metadata = await this.metadata(handle, context);
      }
    }
    if (metadata.type !== undefined && metadata.type !== 'TABLE') {
      throw new BigQueryError('fatal', `${context} is a ${metadata.type}, not a table`);
    }
    const existing = remoteFields(metadata).map(existingField);
    const partitioning = metadata.timePartitioning;
    return {
      table,
      created,
      fields: existing,
      partitioning:
        partitioning?.type === undefined
          ? undefined
          : { type: partitioning.type, field: partitioning.field ?? undefined },
      clustering: metadata.clustering?.fields ?? [],
      missing: missingPaths(fields, existing, ''),
      relaxed: [],
    };
  }

  private async exists(dataset: Dataset, context: string): Promise<boolean> {
    try {
      const [exists] = await dataset.exists();
      return exists;
    } catch (error) {
      throw toBigQueryError(error, `looking up ${context}`);
    }
  }

  /** The table's metadata, or undefined when it does not exist. */
  private async tryMetadata(handle: Table, context: string): Promise<TableMetadata | undefined> {
    try {
      const [metadata] = (await handle.getMetadata()) as [TableMetadata, unknown];
      return metadata;
    } catch (error) {
      if (httpStatus(error) === 404) return undefined;
      throw toBigQueryError(error, `reading ${context}`);
    }
  }

  private async metadata(handle: Table, context: string): Promise<TableMetadata> {
    try {
      const [metadata] = (await handle.getMetadata()) as [TableMetadata, unknown];
      return metadata;
    } catch (error) {
      throw toBigQueryError(error, `reading ${context}`);
    }
  }

  private async run(sql: string, context: string): Promise<void> {
    try {
      await this.bigquery.query({
        query: sql,
        ...(this.location !== undefined && { location: this.location }),
      });
    } catch (error) {
      throw toBigQueryError(error, context);
    }
  }
}

/** The views of history table `table` for `columns`: their statements and the hashes their labels carry. */
export function viewPlan(
  projectId: string,
  datasetId: string,
  table: string,
  columns: readonly ColumnSpec[],
): ViewPlan {
  const names = viewNames(table);
  const view = tableRef(projectId, datasetId, names.view);
  const latestView = tableRef(projectId, datasetId, names.latestView);
  const statement = (sql: string): ViewStatement => ({ sql, hash: viewHash(sql, columns) });
  return {
    view,
    viewSql: statement(
      createOrReplaceViewSql(view, currentStateViewSql(tableRef(projectId, datasetId, table))),
    ),
    latestView,
    latestViewSql: mapDefined(latestViewSql(view, columns), (body) =>
      statement(createOrReplaceViewSql(latestView, body)),
    ),
  };
}

function addColumnsSqlIfAny(ref: TableRef, fields: readonly TableField[]): string | undefined {
  return fields.length === 0 ? undefined : addColumnsSql(ref, fields);
}

function mapDefined<T, U>(value: T | undefined, f: (value: T) => U): U | undefined {
  return value === undefined ? undefined : f(value);
}

function isLoopback(endpoint: string): boolean {
  try {
    return LOOPBACK_HOSTS.has(new URL(endpoint).hostname);
  } catch {
    return false;
  }
}

function assertFieldNames(fields: readonly TableField[]): void {
  for (const f of fields) {
    quoteColumn(f.name);
    if (f.fields) assertFieldNames(f.fields);
  }
}

function errorReasons(error: unknown): string[] {
  if (typeof error !== 'object' || error === null) return [];
  const errors = (error as { errors?: unknown }).errors;
  if (!Array.isArray(errors)) return [];
  return errors.flatMap((e: unknown) => {
    const reason = typeof e === 'object' && e !== null ? (e as { reason?: unknown }).reason : undefined;
    return typeof reason === 'string' ? [reason] : [];
  });
}

/** Another instance created it first (HTTP 409, reason `duplicate`). */
function isAlreadyExists(error: unknown): boolean {
  return httpStatus(error) === 409 || errorReasons(error).includes('duplicate');
}

/** An object of the history table's name that is a view (say) is not ours to write to. */
function assertTable(table: IntrospectedTable): void {
  if (table.type !== undefined && table.type !== 'TABLE') {
    throw new BigQueryError('fatal', `table ${table.tableId} is a ${table.type}, not a table`);
  }
}

function hasRequired(fields: readonly ExistingField[]): boolean {
  return fields.some((f) => f.mode === 'REQUIRED' || (f.fields !== undefined && hasRequired(f.fields)));
}

/** Turns every REQUIRED field of `fields` (in place, at every level) into NULLABLE; returns their paths. */
function relaxFields(fields: RemoteField[], prefix: string): string[] {
  return fields.flatMap((f) => {
    const path = `${prefix}${f.name ?? ''}`;
    const own = normalisedMode(f.mode ?? undefined) === 'REQUIRED' ? [path] : [];
    if (own.length > 0) f.mode = 'NULLABLE';
    return [...own, ...(f.fields ? relaxFields(f.fields, `${path}.`) : [])];
  });
}

function toRemoteField(field: TableField): RemoteField {
  return {
    name: field.name,
    type: field.type,
    mode: field.mode,
    ...(field.fields && { fields: field.fields.map(toRemoteField) }),
    ...(field.description !== undefined && { description: field.description }),
  };
}

function findField<F extends { readonly name?: string | null | undefined }>(
  fields: readonly F[],
  name: string,
): F | undefined {
  const lower = name.toLowerCase();
  return fields.find((f) => (f.name ?? '').toLowerCase() === lower);
}

function missingPaths(
  wanted: readonly TableField[],
  existing: readonly ExistingField[],
  prefix: string,
): string[] {
  return wanted.flatMap((w) => {
    const path = `${prefix}${w.name}`;
    const found = findField(existing, w.name);
    if (!found) return [path];
    return w.fields && found.fields ? missingPaths(w.fields, found.fields, `${path}.`) : [];
  });
}

/**
 * The existing schema with the additions merged in: new fields appended at the end of their level, fields
 * that exist already (names are case-insensitive) kept as they are. Everything BigQuery reported about the
 * existing fields (descriptions, policy tags, types the archiver does not know) is carried over untouched,
 * because tables.patch replaces the whole schema.
 */
function mergeFields(
  existing: readonly RemoteField[],
  additions: Evolution['additions'],
  table: string,
): { fields: RemoteField[]; added: string[] } {
  const fields = structuredClone([...existing]);
  const added: string[] = [];
  for (const { parent, column } of additions) {
    let level = fields;
    for (const [i, name] of parent.entries()) {
      const record = findField(level, name);
      if (!record || normalisedType(record.type) !== 'RECORD') {
        throw new BigQueryError(
          'fatal',
          `cannot add ${[...parent, column.name].join('.')} to table ${table}: ${parent.slice(0, i + 1).join('.')} is not a RECORD column there`,
        );
      }
      record.fields ??= [];
      level = record.fields;
    }
    added.push(...mergeField(level, columnToField(column), parent.join('.'), table));
  }
  return { fields, added };
}

/** Adds `field` to `level` or, when a field of that name exists, its missing sub-fields; returns what it added. */
function mergeField(level: RemoteField[], field: TableField, prefix: string, table: string): string[] {
  const path = prefix === '' ? field.name : `${prefix}.${field.name}`;
  const found = findField(level, field.name);
  if (!found) {
    level.push(toRemoteField(field));
    return [path];
  }
  if (normalisedType(found.type) !== field.type || normalisedMode(found.mode) !== field.mode) {
    throw new BigQueryError(
      'fatal',
      `cannot add ${path} ${field.mode} ${field.type} to table ${table}: it exists as ${normalisedMode(found.mode)} ${normalisedType(found.type)}`,
    );
  }
  if (!field.fields) return [];
  found.fields ??= [];
  const sub = found.fields;
  return field.fields.flatMap((f) => mergeField(sub, f, path, table));
}
