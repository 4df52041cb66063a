import { type Timestamp } from 'bson';
import { ArchiverError, ERROR_CODES } from '../errors.js';
import { type ChangeEvent, type ClusterTime } from '../core/model.js';
import { bsonKind, isDocument } from '../base/bson-kind.js';
import { defineDataProperty } from '../transform/ejson.js';

const MS_PER_SECOND = 1_000;

/** A change event the archiver cannot read (no resume token or cluster time): never guessed around. */
export class MalformedChangeEventError extends ArchiverError {
  constructor(message: string) {
    // Retried with backoff, as it always was; `lastFailure` names the event's problem meanwhile.
    super(ERROR_CODES.source, 'retryable', message);
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
 * The top-level fields of a change event that normalizeChangeEvent and SplitEventAssembler read: a reader
 * may decode these alone (decodeDocumentFields) and skip the rest unread, such as `updateDescription`,
 * `fullDocumentBeforeChange`, `ns` and `wallTime`. A unit test holds this set to what they read.
 */
export const CHANGE_EVENT_FIELDS: ReadonlySet<string> = new Set([
  '_id',
  'operationType',
  'clusterTime',
  'fullDocument',
  'documentKey',
  'splitEvent',
]);

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

function fragmentOf(raw: Readonly<Record<string, unknown>>): { fragment: number; of: number } | undefined {
  const split = raw.splitEvent;
  if (split === undefined) return undefined;
  const fragment = isDocument(split) ? Number(split.fragment) : Number.NaN;
  const of = isDocument(split) ? Number(split.of) : Number.NaN;
  if (!Number.isInteger(fragment) || !Number.isInteger(of) || fragment < 1 || fragment > of) {
    throw new MalformedChangeEventError(
      `change event with an unreadable splitEvent (${JSON.stringify(split)})`,
    );
  }
  return { fragment, of };
}

/**
 * One change event from the fragments `$changeStreamSplitLargeEvent` cut it into: their top-level fields
 * together (the server splits by top-level field), without `splitEvent`, and with the last fragment's
 * resume token as `_id` (resuming after it continues with the next event).
 */
export function reassembleSplitEvent(
  fragments: readonly Readonly<Record<string, unknown>>[],
): Record<string, unknown> {
  const whole: Record<string, unknown> = {};
  for (const fragment of fragments) {
    for (const [key, value] of Object.entries(fragment)) {
      if (key !== 'splitEvent') defineDataProperty(whole, key, value);
    }
  }
  return whole;
}

/**
 * Hands over whole change events from a stream that may carry fragments of split ones (`splitEvent:
 * {fragment, of}`, MongoDB 7.0 and 6.0.9+): whole events pass through, fragments are held until the last
 * one arrives. Fragments out of order are refused rather than guessed around.
 */
export class SplitEventAssembler {
  #fragments: Readonly<Record<string, unknown>>[] = [];
  #of = 0;

  /** True while the fragments of an event are only partly in. */
  get pending(): boolean {
    return this.#fragments.length > 0;
  }

  /** The whole event, or undefined while fragments of it are still to come. */
  add(raw: Readonly<Record<string, unknown>>): Readonly<Record<string, unknown>> | undefined {
    const split = fragmentOf(raw);
    if (split === undefined) {
      if (this.pending) {
        throw new MalformedChangeEventError(
          `a whole change event arrived after fragment ${this.#fragments.length} of ${this.#of} of a split one`,
        );
      }
      return raw;
    }
    const expected = this.#fragments.length + 1;
    if (split.fragment !== expected || (this.pending && split.of !== this.#of)) {
      throw new MalformedChangeEventError(
        `change event fragment ${split.fragment} of ${split.of} arrived where fragment ${expected} was due`,
      );
    }
    this.#fragments.push(raw);
    this.#of = split.of;
    if (split.fragment < split.of) return undefined;
    const whole = reassembleSplitEvent(this.#fragments);
    this.#fragments = [];
    return whole;
  }

  /** Forgets fragments held (the stream is read again from a position before them). */
  reset(): void {
    this.#fragments = [];
  }
}
