import { setTimeout as sleep } from 'node:timers/promises';
import { MongoServerError } from 'mongodb';
import { type WriterDecorator } from '../../../src/bigquery/destination.js';
import { type ClusterTime, type Position } from '../../../src/core/model.js';
import { deserialize } from 'bson';
import { type ChangeSourceDecorator } from '../../../src/app/mapping-runner.js';
import {
  type ChangeBatch,
  type ChangeSource,
  type RawChangeBatch,
  type StreamStart,
} from '../../../src/core/ports.js';
import { toClusterTime } from '../../../src/mongodb/change-event.js';
import { toMongoError } from '../../../src/mongodb/error-mapping.js';

/** What a ShortOplog saw, for the test's assertions. */
export interface ShortOplogLog {
  /** Every open: how old its start was (seconds, wall clock), and whether it was refused. */
  readonly opens: { readonly kind: StreamStart['kind']; readonly ageSeconds: number; refused: boolean }[];
}

function key(time: ClusterTime): string {
  return `${String(time.t)}.${String(time.i)}`;
}

/**
 * A change source in front of MongoDB whose oplog holds only the last `windowSeconds`: opening (or resuming)
 * a stream at a cluster time older than that is refused with MongoDB's ChangeStreamHistoryLost (286), as
 * the archiver's MongoDB adapter reports it. Age is wall-clock time since the source first saw that cluster
 * time (from `currentTime` or a batch's position), so the test peer's own clock does not matter.
 */
export function shortOplog(windowSeconds: number, log: ShortOplogLog): ChangeSourceDecorator {
  // Shared by every source this decorator wraps: an archiver started again sees the same oplog.
  const seenAt = new Map<string, number>();
  const see = (time: ClusterTime | undefined): void => {
    if (time && !seenAt.has(key(time))) seenAt.set(key(time), Date.now());
  };
  return <B extends { readonly position: Position | undefined }>(
    source: ChangeSource<B>,
  ): ChangeSource<B> => {
    return {
      currentTime: async (signal) => {
        const time = await source.currentTime(signal);
        see(time);
        return time;
      },
      open: async (start, signal) => {
        const time = start.kind === 'startAt' ? start.clusterTime : start.position.clusterTime;
        const ageSeconds = (Date.now() - (seenAt.get(key(time)) ?? Date.now())) / 1_000;
        const refused = ageSeconds > windowSeconds;
        log.opens.push({ kind: start.kind, ageSeconds, refused });
        if (refused) {
          throw toMongoError(
            new MongoServerError({
              ok: 0,
              code: 286,
              codeName: 'ChangeStreamHistoryLost',
              errmsg:
                'Executor error during getMore :: caused by :: Resume of change stream was not possible, as the resume point may no longer be in the oplog.',
            }),
          );
        }
        const cursor = await source.open(start, signal);
        return {
          next: async (maxEvents, s) => {
            const batch = await cursor.next(maxEvents, s);
            see(batch.position?.clusterTime);
            for (const time of clusterTimesOf(batch)) see(time);
            return batch;
          },
          close: () => cursor.close(),
        };
      },
    };
  };
}

/** The cluster times of a pull's changes, decoded (ChangeBatch) or raw (RawChangeBatch). */
function clusterTimesOf(batch: object): ClusterTime[] {
  if ('events' in batch) return (batch as ChangeBatch).events.map((event) => event.clusterTime);
  if ('changes' in batch) {
    return (batch as RawChangeBatch).changes.flatMap((fragments) => {
      const first = fragments[0];
      return first ? [toClusterTime(deserialize(first).clusterTime)] : [];
    });
  }
  return [];
}

/** Slows every append of backfill rows by `delayMs` (a large collection copied to a remote BigQuery). */
export function slowBackfill(delayMs: number): WriterDecorator {
  return (writer) => ({
    kind: writer.kind,
    encode: (row) => writer.encode(row),
    ...(writer.rowEncoding && { rowEncoding: writer.rowEncoding.bind(writer) }),
    append: async (rows, signal) => {
      if (rows[0]?.row().operationType === 'backfill') await sleep(delayMs, undefined, { signal });
      return writer.append(rows, signal);
    },
    updateSchema: (schema) => writer.updateSchema(schema),
    close: () => writer.close(),
  });
}
