import { type Document } from 'mongodb';
import { connectMongo } from '../app/archiver.js';
import { settingsIdString } from '../core/settings.js';
import { checkpointsCollectionName } from '../mongodb/checkpoint-store.js';
import { MongoLeaseStore } from '../mongodb/lease-store.js';
import { bsonKind, isDocument } from '../base/bson-kind.js';
import { toClusterTime } from '../mongodb/change-event.js';
import { estimateBackfill, formatDuration } from '../core/progress.js';
import { EXIT, loadConfig, type GlobalOptions } from './common.js';

function field(doc: Document | undefined, key: string): unknown {
  return doc?.[key];
}

/**
 * Where a mapping's checkpoint stands: the cluster time its change stream resumes after (the stream runs
 * during a backfill too, whose progress `backfillFields` shows), or, before the stream saved one, the
 * backfill's progress.
 */
export function positionOf(checkpoint: Document | undefined): string {
  const position: unknown = checkpoint?.position;
  const time: unknown = isDocument(position) ? position.clusterTime : undefined;
  if (bsonKind(time) !== 'Timestamp') {
    const backfill: unknown = checkpoint?.backfill;
    if (isDocument(backfill) && backfill.done !== true) {
      return `backfill:${typeof backfill.copied === 'number' ? backfill.copied : 0}`;
    }
    return '-';
  }
  const at = new Date(toClusterTime(time).t * 1_000).toISOString();
  return isDocument(position) && position.invalidate === true ? `${at}(after a drop)` : at;
}

function count(value: unknown): number | undefined {
  return typeof value === 'number' && Number.isFinite(value) && value >= 0 ? value : undefined;
}

/**
 * The progress of a backfill under way, as `key=value` fields: documents copied over the estimated total
 * with the percent, the rate and the ETA (while the mapping is `backfilling`: in another state they are
 * the last ones reported, not current), and the ranges done when the copy was split. Copied and estimated
 * come from the checkpoint (what survives a restart), the rate and ETA from the status the owner reports.
 * Nothing when no backfill is under way.
 */
export function backfillFields(status: Document | undefined, checkpoint: Document | undefined): string[] {
  const backfill: unknown = checkpoint?.backfill;
  if (!isDocument(backfill) || backfill.done === true) return [];
  const copied = count(backfill.copied) ?? count(field(status, 'backfillCopied')) ?? 0;
  const estimated = count(backfill.estimated) ?? count(field(status, 'backfillEstimated'));
  const { percent } = estimateBackfill({ copied, estimated, elapsedSeconds: 0 });
  const fields = [
    `backfill=${String(copied)}/${estimated === undefined ? '?' : String(estimated)}` +
      (percent === undefined ? '' : `(${percent.toFixed(1)}%)`),
  ];
  if (field(status, 'state') === 'backfilling') {
    const rate = count(field(status, 'backfillRate'));
    const eta = count(field(status, 'backfillEtaSeconds'));
    fields.push(`rate=${rate === undefined ? '-' : `${rate.toFixed(0)}/s`}`);
    fields.push(`eta=${eta === undefined ? '-' : formatDuration(eta)}`);
  }
  const ranges: unknown = backfill.ranges;
  if (Array.isArray(ranges) && ranges.length > 0) {
    const done = ranges.filter((range) => isDocument(range) && range.done === true).length;
    fields.push(`ranges=${String(done)}/${String(ranges.length)}`);
  }
  return fields;
}

/**
 * One line per mapping: state, lag, last checkpoint and where it resumes, the progress of a backfill under
 * way, the instance holding its lease, last failure (read from the settings documents, the checkpoints and
 * the leases).
 */
export async function statusCommand(options: GlobalOptions): Promise<number> {
  const config = loadConfig(options);
  const mongo = connectMongo(config);
  try {
    await mongo.connect();
    const docs = await mongo
      .db(config.SETTINGS_DATABASE)
      .collection(config.SETTINGS_COLLECTION)
      .find({})
      .toArray();
    const checkpoints = new Map(
      (
        await mongo
          .db(config.SETTINGS_DATABASE)
          .collection(checkpointsCollectionName(config.SETTINGS_COLLECTION))
          .find({})
          .toArray()
      ).map((doc) => [settingsIdString(doc._id), doc]),
    );
    const holders = await new MongoLeaseStore(
      mongo.db(config.SETTINGS_DATABASE).collection(`${config.SETTINGS_COLLECTION}_leases`),
    ).holders();
    if (docs.length === 0)
      console.log(`no mappings in ${config.SETTINGS_DATABASE}.${config.SETTINGS_COLLECTION}`);
    for (const doc of docs) {
      const status: unknown = doc.status;
      const s = isDocument(status) ? status : undefined;
      const lag = field(s, 'lagSeconds');
      const saved = checkpoints.get(settingsIdString(doc._id));
      // The checkpoints collection is authoritative; the settings document's copy may have been edited away.
      const checkpoint = field(saved, 'updatedAt') ?? field(s, 'lastCheckpointAt');
      const failure = field(doc, 'lastFailure');
      console.log(
        [
          settingsIdString(doc._id),
          `${String(doc.mongo_database)}.${String(doc.mongo_collection)} -> ${String(doc.bigquery_table)}`,
          `state=${typeof field(s, 'state') === 'string' ? String(field(s, 'state')) : 'unknown'}`,
          `lag=${typeof lag === 'number' ? `${lag}s` : '-'}`,
          `checkpoint=${checkpoint instanceof Date ? checkpoint.toISOString() : '-'}`,
          `position=${positionOf(saved)}`,
          ...backfillFields(s, saved),
          `owner=${holders.get(settingsIdString(doc._id))?.owner ?? '-'}`,
          `lastFailure=${typeof failure === 'string' ? JSON.stringify(failure) : '-'}`,
        ].join('  '),
      );
    }
    return EXIT.ok;
  } finally {
    await mongo.close();
  }
}
