import { type Timestamp } from 'bson';
import { ArchiverError, ERROR_CODES } from '../errors.js';
import { type ChangeEvent, type ClusterTime } from '../core/model.js';
import { bsonKind, isDocument } from '../transform/bson-kind.js';

const MS_PER_SECOND = 1_000;

/** A change event the archiver cannot read (no resume token or cluster time): never guessed around. */
export class MalformedChangeEventError extends ArchiverError {
  constructor(message: string) {
    super(ERROR_CODES.source, message);
  }
}

/** The cluster time of an event: a BSON Timestamp, or (PoppyDB) epoch milliseconds as an int64. */
export function toClusterTime(value: unknown): ClusterTime {
  switch (bsonKind(value)) {
    case 'Timestamp': {
      const ts = value as Timestamp;
      return { t: ts.t, i: ts.i };
    }
    case 'number':
    case 'Long': {
      const ms = Number(value);
      return { t: Math.floor(ms / MS_PER_SECOND), i: ms % MS_PER_SECOND };
    }
    default:
      throw new MalformedChangeEventError(`change event without a usable clusterTime (${String(value)})`);
  }
}

/**
 * The cluster time inside a resume token. MongoDB's KeyString tokens start with 0x82 and the timestamp
 * (seconds, increment; big-endian); mongo-java-server's are those 8 bytes alone. Undefined otherwise.
 */
export function clusterTimeFromToken(data: string): ClusterTime | undefined {
  const hex = /^82[0-9a-fA-F]{16}/.test(data)
    ? data.slice(2, 18)
    : /^[0-9a-fA-F]{16}$/.test(data)
      ? data
      : undefined;
  if (hex === undefined) return undefined;
  return { t: Number.parseInt(hex.slice(0, 8), 16), i: Number.parseInt(hex.slice(8, 16), 16) };
}

function documentKeyId(raw: Readonly<Record<string, unknown>>): unknown {
  const key = raw.documentKey;
  return isDocument(key) && Object.hasOwn(key, '_id') ? key._id : undefined;
}

/**
 * Reads a raw change stream event (real MongoDB 4.4 to 8.x, and the test peers' variants) into the
 * pipeline's model. Where sources differ:
 * - mongo-java-server reports `replaceOne` as `update` and puts the update specification in `documentKey`:
 *   the id then comes from `fullDocument._id`;
 * - a lookup that found no document gives `fullDocument: null` on MongoDB, and a document without `_id` on
 *   mongo-java-server: both mean the document was deleted since, and its delete event follows.
 */
export function normalizeChangeEvent(raw: Readonly<Record<string, unknown>>): ChangeEvent {
  const resume = raw._id;
  const token = isDocument(resume) ? resume._data : undefined;
  if (typeof token !== 'string' || token.length === 0) {
    throw new MalformedChangeEventError('change event without a resume token (_id._data)');
  }
  const operationType = typeof raw.operationType === 'string' ? raw.operationType : '';
  // mongo-java-server answers a resume after a drop with an invalidate that has no cluster time; its token
  // is the one resumed from, and carries that time.
  const clusterTime =
    raw.clusterTime === undefined && operationType === 'invalidate'
      ? (clusterTimeFromToken(token) ?? toClusterTime(raw.clusterTime))
      : toClusterTime(raw.clusterTime);
  switch (operationType) {
    case 'insert':
    case 'update':
    case 'replace': {
      const full = raw.fullDocument;
      const keyId = documentKeyId(raw);
      if (!isDocument(full) || !Object.hasOwn(full, '_id')) {
        return { kind: 'lookup-missed', operationType, token, clusterTime, documentId: keyId };
      }
      return {
        kind: 'upsert',
        operationType,
        token,
        clusterTime,
        documentId: keyId ?? full._id,
        document: full,
      };
    }
    case 'delete':
      return { kind: 'delete', token, clusterTime, documentId: documentKeyId(raw) };
    case 'drop':
    case 'rename':
    case 'dropDatabase':
    case 'invalidate':
      return { kind: 'collection-gone', operationType, token, clusterTime };
    default:
      return { kind: 'ignored', operationType, token, clusterTime };
  }
}
