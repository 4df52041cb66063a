import { type BigQueryClients } from '../bigquery/client.js';
import { TableAdmin } from '../bigquery/table-admin.js';
import { type MappingSettings } from '../core/settings.js';
import { alignWithTable } from '../schema/align.js';

/**
 * Where a mapping's `columns` differ from its existing history table (a type changed in the settings, say),
 * one line each; empty when the table does not exist yet or agrees. Reads only: creates and changes nothing.
 */
export async function historyTableConflicts(
  clients: Pick<BigQueryClients, 'bigquery' | 'projectId'>,
  defaultDataset: string,
  settings: MappingSettings,
): Promise<readonly string[]> {
  if (settings.columns === undefined || settings.dryrun) return [];
  const admin = new TableAdmin({
    bigquery: clients.bigquery,
    projectId: clients.projectId,
    datasetId: settings.bigqueryDataset ?? defaultDataset,
  });
  const fields = await admin.historyTableFields(settings.bigqueryTable);
  return fields === undefined ? [] : alignWithTable(settings.columns, fields).conflicts;
}
