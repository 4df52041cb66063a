// Lease renewal rounds against a fake collection (issue 12 review): one `updateMany` renews every lease, and
// the driver does not retry an `updateMany` (it is not a retryable write), as it did the per-lease `updateOne`
// before it. A primary stepping down during the round must not lose every lease of the instance.
import {
  type Abortable,
  type Collection,
  type Document,
  MongoNetworkError,
  MongoServerError,
  type UpdateOptions,
} from 'mongodb';
import { describe, expect, it } from 'vitest';
import { MongoLeaseStore } from '../../../src/mongodb/lease-store.js';
import { type Lease } from '../../../src/core/ports.js';

const LEASES: readonly Lease[] = [
  { mappingId: 'orders', token: 3 },
  { mappingId: 'users', token: 1 },
];

interface Call {
  readonly update: Document;
  readonly signal: AbortSignal | undefined;
}

/** A leases collection whose `updateMany` fails with `failures`, in turn, before it matches every lease. */
function collectionFailing(failures: readonly Error[]) {
  const calls: Call[] = [];
  const pending = [...failures];
  const collection = {
    updateMany(_filter: Document, update: Document, options: UpdateOptions & Abortable = {}) {
      calls.push({ update, signal: options.signal });
      const failure = pending.shift();
      if (failure !== undefined) return Promise.reject(failure);
      return Promise.resolve({ matchedCount: LEASES.length, modifiedCount: LEASES.length });
    },
  };
  return { collection: collection as unknown as Collection, calls };
}

function notWritablePrimary(): MongoServerError {
  return new MongoServerError({ code: 10_107, codeName: 'NotWritablePrimary', errmsg: 'not primary' });
}

function labelledRetryable(): MongoServerError {
  const error = new MongoServerError({ code: 91, codeName: 'ShutdownInProgress', errmsg: 'shutting down' });
  error.addErrorLabel('RetryableWriteError');
  return error;
}

const renew = (collection: Collection) =>
  new MongoLeaseStore(collection, { owner: 'me', ttlMs: 15_000 }).renewAll(
    LEASES,
    new AbortController().signal,
  );

describe('MongoLeaseStore.renewAll: a round retried once on a retryable write error (issue 12 review)', () => {
  it.each([
    ['NotWritablePrimary (a step-down)', notWritablePrimary],
    ['a network error', () => new MongoNetworkError('connection reset')],
    ['the RetryableWriteError label', labelledRetryable],
  ])('issue 12 review: renews every lease when the first update fails with %s', async (_name, failure) => {
    const { collection, calls } = collectionFailing([failure()]);

    expect(await renew(collection)).toEqual(new Set(['orders', 'users']));
    expect(calls).toHaveLength(2);
    // The same round: the same expiry, within the same TTL bound.
    expect(calls[1]?.update).toEqual(calls[0]?.update);
    expect(calls[1]?.signal).toBe(calls[0]?.signal);
  });

  it('issue 12 review: retries once only; a second failure fails the round as retryable', async () => {
    const { collection, calls } = collectionFailing([notWritablePrimary(), notWritablePrimary()]);

    await expect(renew(collection)).rejects.toMatchObject({ disposition: 'retryable' });
    expect(calls).toHaveLength(2);
  });

  it('issue 12 review: an error that is no retryable write (unauthorized) is not retried', async () => {
    const unauthorized = new MongoServerError({ code: 13, codeName: 'Unauthorized', errmsg: 'not allowed' });
    const { collection, calls } = collectionFailing([unauthorized]);

    await expect(renew(collection)).rejects.toMatchObject({ disposition: 'fatal' });
    expect(calls).toHaveLength(1);
  });
});
