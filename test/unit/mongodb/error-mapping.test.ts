import { type Collection, MongoNetworkError, MongoServerError, MongoServerSelectionError } from 'mongodb';
import { describe, expect, it } from 'vitest';
import { ArchiverError, dispositionOf, FencedOutError } from '../../../src/errors.js';
import {
  classifyMongoError,
  HistoryLostError,
  MongoDbError,
  mongoBoundary,
  toMongoError,
} from '../../../src/mongodb/error-mapping.js';
import { MongoCheckpointStore } from '../../../src/mongodb/checkpoint-store.js';
import { MongoLeaseStore } from '../../../src/mongodb/lease-store.js';
import { sampleDocuments } from '../../../src/mongodb/sampler.js';
import { SnapshotReader } from '../../../src/mongodb/snapshot-reader.js';
import { defaultRestartDelayMs } from '../../../src/core/supervisor.js';

/** A server error as the driver builds it from a reply (`ok: 0`, code, codeName, errorLabels, errmsg). */
function serverError(
  code: number,
  codeName: string,
  errmsg: string,
  errorLabels: string[] = [],
): MongoServerError {
  return new MongoServerError({ ok: 0, code, codeName, errmsg, errorLabels });
}

describe('issue 11: the MongoDB code table classifies recorded server error shapes once', () => {
  it.each([
    [
      serverError(13, 'Unauthorized', 'not authorized on shop to execute command { find: "orders" }'),
      'fatal',
    ],
    [serverError(18, 'AuthenticationFailed', 'Authentication failed.'), 'fatal'],
    [serverError(73, 'InvalidNamespace', "Invalid namespace specified 'shop.'"), 'fatal'],
    [
      serverError(
        286,
        'ChangeStreamHistoryLost',
        'Resume of change stream was not possible, as the resume point may no longer be in the oplog.',
      ),
      'history-lost',
    ],
    [
      serverError(280, 'ChangeStreamFatalError', 'cannot resume stream; the resume token was not found.'),
      'history-lost',
    ],
    [
      serverError(
        260,
        'InvalidResumeToken',
        'Attempted to resume a stream on a collection which has been dropped.',
      ),
      'history-lost',
    ],
    [serverError(10_107, 'NotWritablePrimary', 'not primary', ['RetryableWriteError']), 'retryable'],
    [
      serverError(189, 'PrimarySteppedDown', 'primary stepped down', ['ResumableChangeStreamError']),
      'retryable',
    ],
    [serverError(11_602, 'InterruptedDueToReplStateChange', 'operation was interrupted'), 'retryable'],
    [serverError(91, 'ShutdownInProgress', 'The server is in quiesce mode and will shut down'), 'retryable'],
    [serverError(43, 'CursorNotFound', 'cursor id 123 not found'), 'retryable'],
    [serverError(2, 'BadValue', 'an unknown code'), 'retryable'],
    [new MongoNetworkError('connection 3 to 127.0.0.1:27017 closed'), 'retryable'],
    [
      new MongoServerSelectionError('Server selection timed out after 30000 ms', {
        type: 'Unknown',
        servers: new Map(),
        stale: false,
        compatible: true,
        heartbeatFrequencyMS: 10_000,
        localThresholdMS: 15,
        setName: null,
        maxElectionId: null,
        maxSetVersion: null,
        commonWireVersion: 0,
        logicalSessionTimeoutMinutes: null,
      } as never),
      'retryable',
    ],
  ] as const)('%s -> %s', (error, disposition) => {
    expect(classifyMongoError(error)).toBe(disposition);
    const wrapped = toMongoError(error);
    expect(dispositionOf(wrapped)).toBe(disposition);
    expect(wrapped).toBeInstanceOf(ArchiverError);
    expect(wrapped.cause).toBe(error);
  });

  it('a retryable label wins over a code the table does not know; our own errors and signal reasons pass unchanged', () => {
    expect(
      classifyMongoError(serverError(112, 'WriteConflict', 'conflict', ['TransientTransactionError'])),
    ).toBe('retryable');
    const fenced = new FencedOutError('a newer owner wrote');
    expect(toMongoError(fenced)).toBe(fenced);
    const abort = new DOMException('aborted', 'AbortError');
    expect(toMongoError(abort)).toBe(abort);
    // A bookkeeping write given up on its bound (`within`) keeps the signal's reason.
    const timeout = new DOMException('The operation was aborted due to timeout', 'TimeoutError');
    expect(toMongoError(timeout)).toBe(timeout);
  });

  it('a lost history becomes HistoryLostError naming the code; other errors keep their message', () => {
    const lost = toMongoError(serverError(286, 'ChangeStreamHistoryLost', 'Resume point lost'));
    expect(lost).toBeInstanceOf(HistoryLostError);
    expect(lost.message).toMatch(/no longer in the oplog \(code 286: Resume point lost\)/);
    const denied = toMongoError(serverError(13, 'Unauthorized', 'not authorized'));
    expect(denied).toBeInstanceOf(MongoDbError);
    expect(denied.message).toBe('not authorized');
  });

  it('issue 11: a MongoDB auth error from the backfill reader reaches the core wrapped, and the mapping waits for new settings instead of restarting for ever', async () => {
    const denied = serverError(
      13,
      'Unauthorized',
      'not authorized on shop to execute command { find: "orders" }',
    );
    const collection = {
      find: () => {
        // A cursor whose first read is refused, read by iteration (chunks end early on their size).
        const cursor = {
          sort: () => cursor,
          limit: () => cursor,
          close: () => Promise.resolve(),
          [Symbol.asyncIterator]: () => ({ next: () => Promise.reject(denied) }),
        };
        return cursor;
      },
      estimatedDocumentCount: () => Promise.reject(denied),
    } as unknown as Collection;
    const reader = new SnapshotReader(collection);
    const error: unknown = await reader
      .nextChunk(undefined, new AbortController().signal)
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(MongoDbError);
    expect(dispositionOf(error)).toBe('fatal');
    expect((error as Error).cause).toBe(denied);
    expect(defaultRestartDelayMs(1, error)).toBeUndefined();
    await expect(mongoBoundary(() => reader.estimatedCount())).rejects.toBeInstanceOf(MongoDbError);
  });

  it('issue 11: the checkpoint and lease stores and the sampler wrap driver errors too: elections retry, a failed authentication is fatal', async () => {
    const steppedDown = serverError(189, 'PrimarySteppedDown', 'primary stepped down', [
      'RetryableWriteError',
    ]);
    const authFailed = serverError(18, 'AuthenticationFailed', 'Authentication failed.');
    const refusing = (error: Error) =>
      ({
        findOne: () => Promise.reject(error),
        updateOne: () => Promise.reject(error),
        updateMany: () => Promise.reject(error),
        find: () => ({ toArray: () => Promise.reject(error) }),
      }) as unknown as Collection;
    const signal = new AbortController().signal;
    const checkpoints = new MongoCheckpointStore({
      checkpoints: refusing(steppedDown),
      settings: refusing(steppedDown),
      settingsId: 'orders',
      scope: 'shop.orders',
    });
    const loaded: unknown = await checkpoints.load(signal).catch((e: unknown) => e);
    expect(loaded).toBeInstanceOf(MongoDbError);
    expect(dispositionOf(loaded)).toBe('retryable');
    expect((loaded as Error).cause).toBe(steppedDown);
    const leases = new MongoLeaseStore(refusing(authFailed), { owner: 'test' });
    const renewed: unknown = await leases
      .renewAll([{ mappingId: 'orders', token: 1 }], signal)
      .catch((e: unknown) => e);
    expect(dispositionOf(renewed)).toBe('fatal');
    const held: unknown = await leases.holders().catch((e: unknown) => e);
    expect((held as Error).cause).toBe(authFailed);
    const sampled: unknown = await sampleDocuments(
      { estimatedDocumentCount: () => Promise.reject(authFailed) } as unknown as Collection,
      { signal },
    ).catch((e: unknown) => e);
    expect(dispositionOf(sampled)).toBe('fatal');
  });
});
