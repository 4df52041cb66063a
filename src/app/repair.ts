import { findMappingEntry, settingsStoreOf } from './settings-lookup.js';
import { setTimeout as sleep } from 'node:timers/promises';
import { type MongoClient } from 'mongodb';
import { type BootstrapConfig } from '../config/bootstrap.js';
import { type IdRange } from '../core/ports.js';
import { type RepairReason } from '../core/verify-model.js';
import { readRepairState, recordRepairRequest, type RepairResult } from '../mongodb/checkpoint-store.js';
import { type MongoSettingsStore } from '../mongodb/settings-store.js';

/** How often `waitForRepair` looks at the checkpoint. */
export const DEFAULT_REPAIR_POLL_MS = 1_000;

const settingsStore = settingsStoreOf;

async function settingsDocumentId(
  store: MongoSettingsStore,
  config: BootstrapConfig,
  mapping: string,
): Promise<unknown> {
  return (await findMappingEntry(store, config, mapping)).document._id;
}

/**
 * Asks the daemon that owns `mapping` to copy again only `ranges` (current documents, and delete rows for
 * ids the view has and MongoDB no longer has); returns the request's time, for `waitForRepair`.
 *
 * Recorded like a resync request: in the checkpoint document, where no edit of the settings document can
 * take it back, and `repair_requested_at` set in the settings document, a configuration change, so the
 * supervisor restarts exactly that mapping, which keeps its position and serves the request alongside its
 * stream. Returns the request's id, for `waitForRepair`.
 */
export async function requestRepair(
  mongo: MongoClient,
  config: BootstrapConfig,
  mapping: string,
  ranges: readonly IdRange[],
  reason: RepairReason,
): Promise<string> {
  const store = settingsStore(mongo, config);
  const id = await settingsDocumentId(store, config, mapping);
  const at = new Date();
  const requestId = await recordRepairRequest(store.checkpoints, id, { ranges, reason, requestedAt: at });
  await store.collection.updateOne({ _id: id } as Record<string, unknown>, {
    $set: { repair_requested_at: at },
  });
  return requestId;
}

/**
 * Waits until the repair request `requestId` (from `requestRepair`) is served, and returns what the repair that served it
 * wrote; undefined when `timeoutMs` passed first (no daemon owns the mapping: the request stays queued).
 */
export async function waitForRepair(
  mongo: MongoClient,
  config: BootstrapConfig,
  mapping: string,
  requestId: string,
  options: { readonly timeoutMs: number; readonly pollMs?: number; readonly signal?: AbortSignal },
): Promise<RepairResult | undefined> {
  const store = settingsStore(mongo, config);
  const id = await settingsDocumentId(store, config, mapping);
  const deadline = Date.now() + options.timeoutMs;
  for (;;) {
    options.signal?.throwIfAborted();
    const doc = await store.checkpoints.findOne({ _id: id } as Record<string, unknown>, {
      projection: { lastRepair: 1, repairServedAt: 1, repairRequests: 1, repair: 1 },
    });
    const state = readRepairState(doc);
    // Served once a repair removed it (requests are removed by identity when their repair is done).
    if (!state.pending.some((r) => r.id === requestId)) return state.last;
    const left = deadline - Date.now();
    if (left <= 0) return undefined;
    await sleep(Math.min(left, options.pollMs ?? DEFAULT_REPAIR_POLL_MS), undefined, {
      ...(options.signal && { signal: options.signal }),
    });
  }
}
