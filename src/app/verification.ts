import { type MongoClient } from 'mongodb';
import { type BigQueryClients } from '../bigquery/client.js';
import { type BootstrapConfig } from '../config/bootstrap.js';
import { checkpointsCollectionName } from '../mongodb/checkpoint-store.js';
import { viewReaderOnly, type VerificationWiring } from './archiver.js';
import { mappingVerifierFor } from './verifier.js';

/**
 * The daemon's verification wiring (`startArchiver`'s `verification`): the BigQuery reader of each mapping's
 * view, and its verifier (collection against view, waiting on the mapping's checkpoint before it reports a
 * difference), for repairs, `on_history_lost: repair` and the background verifier. Apart from archiver.ts,
 * which the verifier's own wiring imports.
 */
export function daemonVerification(clients: {
  readonly mongo: MongoClient;
  readonly bigquery: BigQueryClients;
  readonly config: BootstrapConfig;
}): VerificationWiring {
  const { config } = clients;
  const checkpoints = clients.mongo
    .db(config.SETTINGS_DATABASE)
    .collection(checkpointsCollectionName(config.SETTINGS_COLLECTION));
  return {
    ...viewReaderOnly(clients),
    verifier: (settings) =>
      mappingVerifierFor({
        mongo: clients.mongo,
        bigquery: clients.bigquery,
        defaultDataset: config.BIGQUERY_DATASET,
        settings,
        checkpoints,
      }),
  };
}
