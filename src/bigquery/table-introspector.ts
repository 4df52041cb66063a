import {
  type BigQuery,
  type Dataset,
  type TableField as RemoteField,
  type TableMetadata,
} from '@google-cloud/bigquery';
import { COLUMN_MODES, type ColumnMode } from '../schema/types.js';
import { assertDatasetId, assertProjectId, tableRef, type TableRef } from '../schema/identifiers.js';
import { toBigQueryError } from './error-mapping.js';
import { VIEW_HASH_LABEL, viewNames } from './views.js';

const TYPE_ALIASES: Readonly<Record<string, string>> = {
  INT64: 'INTEGER',
  FLOAT64: 'FLOAT',
  BOOL: 'BOOLEAN',
  STRUCT: 'RECORD',
};

/** A field of an existing table as BigQuery reports it, type aliases normalised to the legacy names. */
export interface ExistingField {
  readonly name: string;
  /** `STRING`, `INTEGER`, `RECORD`, ..., or a type the archiver never writes (`GEOGRAPHY`, ...) as reported. */
  readonly type: string;
  readonly mode: ColumnMode;
  readonly fields?: readonly ExistingField[];
}

/** A table or view as tables.get reports it, reduced to what the archiver decides on. */
export interface IntrospectedTable {
  readonly tableId: string;
  /** `TABLE`, `VIEW`, `MATERIALIZED_VIEW`, ... (undefined when the server does not say, as some emulators). */
  readonly type: string | undefined;
  readonly fields: readonly ExistingField[];
  readonly partitioning: { readonly type: string; readonly field: string | undefined } | undefined;
  readonly clustering: readonly string[];
  /** The view's `VIEW_HASH_LABEL`, when it carries one. */
  readonly viewHash: string | undefined;
  /** Logical bytes stored (tables.get `numBytes`), when reported. */
  readonly numBytes: number | undefined;
  readonly numRows: number | undefined;
}

/** Everything of one mapping that exists in BigQuery now. */
export interface MappingObjects {
  readonly datasetExists: boolean;
  readonly history: IntrospectedTable | undefined;
  readonly deadLetter: IntrospectedTable | undefined;
  readonly view: IntrospectedTable | undefined;
  readonly latestView: IntrospectedTable | undefined;
}

export interface TableIntrospectorOptions {
  readonly bigquery: BigQuery;
  readonly projectId: string;
  readonly datasetId: string;
  /** Sent with query jobs (the dry run), as the applier sends it with its statements. */
  readonly location?: string;
}

/**
 * Reads what exists in one dataset: the dataset, tables, views, their schemas and labels, and what a query
 * would scan (a dry-run query job, which BigQuery neither runs nor bills). Never creates or changes
 * anything: `plan` and `verify` use it alone, `run` before the applier (TableAdmin) acts on its diff.
 * Names are validated before any request; failures come out as BigQueryError.
 */
export class TableIntrospector {
  readonly projectId: string;
  readonly datasetId: string;
  private readonly bigquery: BigQuery;
  private readonly location: string | undefined;

  constructor(options: TableIntrospectorOptions) {
    this.projectId = assertProjectId(options.projectId);
    this.datasetId = assertDatasetId(options.datasetId);
    this.bigquery = options.bigquery;
    this.location = options.location;
  }

  ref(table: string): TableRef {
    return tableRef(this.projectId, this.datasetId, table);
  }

  async datasetExists(): Promise<boolean> {
    try {
      const [exists] = await this.dataset().exists();
      return exists;
    } catch (error) {
      throw toBigQueryError(error, `looking up dataset ${this.datasetId}`);
    }
  }

  /** The table or view `table`, or undefined when it does not exist. */
  async table(table: string): Promise<IntrospectedTable | undefined> {
    const metadata = await this.tryMetadata(table);
    return metadata && introspected(table, metadata);
  }

  /**
   * The mapping's dataset, history table `table`, dead-letter table and views, read side by side. In a
   * dataset that does not exist, nothing is asked about its tables.
   */
  async mapping(table: string): Promise<MappingObjects> {
    this.ref(table);
    const names = viewNames(table);
    if (!(await this.datasetExists())) {
      return {
        datasetExists: false,
        history: undefined,
        deadLetter: undefined,
        view: undefined,
        latestView: undefined,
      };
    }
    const [history, deadLetter, view, latestView] = await Promise.all([
      this.table(table),
      this.table(names.errors),
      this.table(names.view),
      this.table(names.latestView),
    ]);
    return { datasetExists: true, history, deadLetter, view, latestView };
  }

  /**
   * The bytes a query would scan: a dry-run query job (BigQuery validates and prices it, runs nothing,
   * bills nothing). Rejects when the server refuses dry runs (some emulators): the caller says so.
   */
  async dryRunBytes(sql: string): Promise<number> {
    try {
      const [job] = await this.bigquery.createQueryJob({
        query: sql,
        dryRun: true,
        useQueryCache: false,
        ...(this.location !== undefined && { location: this.location }),
      });
      const metadata = job.metadata as { statistics?: { totalBytesProcessed?: unknown } } | undefined;
      const bytes = Number(metadata?.statistics?.totalBytesProcessed);
      if (!Number.isFinite(bytes)) throw new Error('the dry run reported no totalBytesProcessed');
      return bytes;
    } catch (error) {
      throw toBigQueryError(error, `dry run of a query on dataset ${this.datasetId}`);
    }
  }

  /** The raw metadata of `table`, or undefined when it does not exist (for the applier's patches). */
  async tryMetadata(table: string): Promise<TableMetadata | undefined> {
    try {
      const [metadata] = (await this.dataset().table(table).getMetadata()) as [TableMetadata, unknown];
      return metadata;
    } catch (error) {
      if (httpStatus(error) === 404) return undefined;
      throw toBigQueryError(error, `reading table ${table}`);
    }
  }

  private dataset(): Dataset {
    return this.bigquery.dataset(
      this.datasetId,
      this.location === undefined ? {} : { location: this.location },
    );
  }
}

function introspected(tableId: string, metadata: TableMetadata): IntrospectedTable {
  const partitioning = metadata.timePartitioning;
  const numBytes = Number(metadata.numBytes);
  const numRows = Number(metadata.numRows);
  return {
    tableId,
    type: metadata.type ?? undefined,
    fields: remoteFields(metadata).map(existingField),
    partitioning:
      partitioning?.type === undefined
        ? undefined
        : { type: partitioning.type, field: partitioning.field ?? undefined },
    clustering: metadata.clustering?.fields ?? [],
    viewHash: metadata.labels?.[VIEW_HASH_LABEL],
    numBytes: metadata.numBytes === undefined || !Number.isFinite(numBytes) ? undefined : numBytes,
    numRows: metadata.numRows === undefined || !Number.isFinite(numRows) ? undefined : numRows,
  };
}

export function httpStatus(error: unknown): number | undefined {
  if (typeof error !== 'object' || error === null) return undefined;
  const code = (error as { code?: unknown }).code;
  return typeof code === 'number' ? code : undefined;
}

export function remoteFields(metadata: TableMetadata): RemoteField[] {
  const schema = metadata.schema;
  if (schema === undefined || typeof schema === 'string') return [];
  return Array.isArray(schema) ? schema : (schema.fields ?? []);
}

export function normalisedType(type: string | undefined): string {
  const upper = (type ?? '').toUpperCase();
  return TYPE_ALIASES[upper] ?? upper;
}

export function normalisedMode(mode: string | undefined): ColumnMode {
  const upper = (mode ?? '').toUpperCase();
  return COLUMN_MODES.find((m) => m === upper) ?? 'NULLABLE';
}

export function existingField(field: RemoteField): ExistingField {
  return {
    name: field.name ?? '',
    type: normalisedType(field.type),
    mode: normalisedMode(field.mode),
    ...(field.fields && { fields: field.fields.map(existingField) }),
  };
}
