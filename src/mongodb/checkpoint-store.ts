import { deserialize, EJSON, serialize } from 'bson';
import { Timestamp, type Collection, type Document } from 'mongodb';
import { type ClusterTime } from '../core/model.js';
import { type BackfillProgress, type Checkpoint, type CheckpointStore } from '../core/ports.js';
import { BSON_DECODE_OPTIONS, isDocument } from '../transform/bson-kind.js';
import { toClusterTime } from './change-event.js';
import { fencedSet, fencedUpdate } from './fence.js';

function timestamp(time: ClusterTime): Timestamp {
  return new Timestamp({ t: time.t, i: time.i });
}

function readBackfill(value: unknown): BackfillProgress | undefined {
  if (!isDocument(value) || value.snapshotStart === undefined) return undefined;
  return {
    snapshotStart: toClusterTime(value.snapshotStart),
    lastId: typeof value.lastId === 'string' ? value.lastId : undefined,
    copied: typeof value.copied === 'number' ? value.copied : 0,
    done: value.done === true,
  };
}

/** A document `_id` as it is kept in a checkpoint: canonical Extended JSON, exact for every BSON type. */
export function encodeId(id: unknown): string {
  return EJSON.stringify({ id }, { relaxed: false });
}

/** Back to the value the driver would hand over for that id (numbers promoted as usual). */
export function decodeId(text: string): unknown {
  const parsed = EJSON.parse(text, { relaxed: false }) as Document;
  return deserialize(serialize(parsed), BSON_DECODE_OPTIONS).id as unknown;
}

/**
 * Keeps a mapping's checkpoint in its settings document, where the original service kept it: the resume
 * token in `lastChangeId`, and the cluster time and backfill progress under `status.checkpoint`. These are
 * the service's own fields, so writing them never restarts the mapping. With leases, every write carries the
 * owner's fencing token.
 */
export class SettingsCheckpointStore implements CheckpointStore {
  /**
   * `scope` names what the checkpoint is about (source collection and target table): a checkpoint saved
   * for another scope (the settings now point elsewhere) is ignored, so the new target starts afresh.
   */
  constructor(
    private readonly settings: Collection,
    private readonly settingsId: unknown,
    private readonly scope = '',
    /** The fencing token of this instance's lease on the mapping (see LeaseStore); undefined without leases. */
    private readonly fence?: number,
  ) {}

  async load(signal: AbortSignal): Promise<Checkpoint> {
    signal.throwIfAborted();
    const doc: Document | null = await this.settings.findOne({ _id: this.settingsId } as Document);
    const token: unknown = doc?.lastChangeId;
    const status: unknown = doc?.status;
    const stored = isDocument(status) && isDocument(status.checkpoint) ? status.checkpoint : undefined;
    const saved = stored && (stored.scope ?? '') === this.scope ? stored : undefined;
    if (!saved) return { position: undefined };
    const data = isDocument(token) ? token._data : undefined;
    const backfill = readBackfill(saved.backfill);
    return {
      position:
        typeof data === 'string' && saved.clusterTime !== undefined
          ? { token: data, clusterTime: toClusterTime(saved.clusterTime) }
          : undefined,
      ...(backfill && { backfill }),
    };
  }

  async save(checkpoint: Checkpoint, signal: AbortSignal): Promise<void> {
    signal.throwIfAborted();
    const set: Document = { 'status.lastCheckpointAt': new Date(), 'status.checkpoint.scope': this.scope };
    if (checkpoint.position) {
      set.lastChangeId = { _data: checkpoint.position.token };
      set['status.checkpoint.clusterTime'] = timestamp(checkpoint.position.clusterTime);
    }
    if (checkpoint.backfill) {
      set['status.checkpoint.backfill'] = {
        snapshotStart: timestamp(checkpoint.backfill.snapshotStart),
        lastId: checkpoint.backfill.lastId ?? null,
        copied: checkpoint.backfill.copied,
        done: checkpoint.backfill.done,
      };
    }
    // Refused (FencedOutError) once a newer owner of the mapping wrote: a paused instance cannot move the
    // checkpoint back.
    await fencedUpdate(this.settings, this.settingsId, this.fence, { $set: fencedSet(set, this.fence) });
  }
}
