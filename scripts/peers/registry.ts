import { bqemulator } from './bqemulator.js';
import { goccyBigQueryEmulator } from './goccy-bigquery-emulator.js';
import { mongoJavaServer } from './mongo-java-server.js';
import { poppyDb } from './poppydb.js';
import { PeerSetupError } from './process.js';
import { type PeerDefinition, type PeerKind } from './types.js';

export const PEERS: readonly PeerDefinition[] = [mongoJavaServer, poppyDb, goccyBigQueryEmulator, bqemulator];

/** The defaults, chosen on the evidence in docs/testing.md. */
export const DEFAULT_PEERS: Readonly<Record<PeerKind, string>> = {
  mongodb: 'mongo-java-server',
  bigquery: 'bqemulator',
};

const SELECTION_ENV: Readonly<Record<PeerKind, string>> = {
  mongodb: 'MBA_MONGODB_PEER',
  bigquery: 'MBA_BIGQUERY_PEER',
};

export function peerByName(name: string): PeerDefinition {
  const peer = PEERS.find((p) => p.name === name);
  if (!peer) {
    throw new PeerSetupError(`unknown test peer "${name}"; known: ${PEERS.map((p) => p.name).join(', ')}`);
  }
  return peer;
}

const KINDS: readonly PeerKind[] = ['mongodb', 'bigquery'];

/** `MBA_PEER_KINDS=mongodb` starts only the MongoDB peer (quicker when iterating on one side). */
function selectedKinds(): PeerKind[] {
  const raw = process.env.MBA_PEER_KINDS;
  if (!raw) return [...KINDS];
  const kinds = raw.split(',').map((k) => k.trim());
  const unknown = kinds.filter((k) => !(KINDS as readonly string[]).includes(k));
  if (unknown.length > 0) throw new PeerSetupError(`MBA_PEER_KINDS: unknown kind ${unknown.join(', ')}`);
  return KINDS.filter((k) => kinds.includes(k));
}

/** The peers to use: `MBA_MONGODB_PEER` / `MBA_BIGQUERY_PEER` override the defaults. */
export function selectedPeers(kinds: readonly PeerKind[] = selectedKinds()): PeerDefinition[] {
  return kinds.map((kind) => {
    const name = process.env[SELECTION_ENV[kind]] ?? DEFAULT_PEERS[kind];
    const peer = peerByName(name);
    if (peer.kind !== kind) {
      throw new PeerSetupError(`${SELECTION_ENV[kind]}=${name} is a ${peer.kind} peer, not a ${kind} peer`);
    }
    return peer;
  });
}
