import { readFileSync } from 'node:fs';
import { EJSON } from 'bson';
import {
  type ChangeStreamOptions,
  type Collection,
  type Document,
  type MongoClient,
  MongoServerError,
} from 'mongodb';
import { describe, expect, it } from 'vitest';
import { type Position } from '../../../src/core/model.js';
import { HistoryLostError, MongoChangeSource } from '../../../src/mongodb/change-source.js';

const real = EJSON.parse(
  readFileSync(new URL('../../fixtures/change-events/real-mongodb-7.json', import.meta.url), 'utf8'),
  { relaxed: true },
) as Record<string, Document>;

/**
 * MongoDB's answer to `resumeAfter` with the token of an invalidate event (MongoDB 4.2 to 8.x,
 * document_source_change_stream.cpp): InvalidResumeToken, no error label. mongo-java-server never says it.
 */
const RESUME_AFTER_INVALIDATE = {
  ok: 0,
  errmsg:
    "Attempting to resume a change stream using 'resumeAfter' is not allowed from an invalidate notification",
  code: 260,
  codeName: 'InvalidResumeToken',
};

const tokenOf = (event: Document | undefined): string => String((event?._id as Document)._data);

/**
 * A collection whose change streams behave like real MongoDB's after a drop: `resumeAfter` the invalidate
 * token is refused, `startAfter` it continues with the re-created collection's changes.
 */
function droppedCollection(invalidateToken: string, after: readonly Document[]) {
  const opened: ChangeStreamOptions[] = [];
  const collection = {
    watch(_pipeline: Document[], options: ChangeStreamOptions) {
      opened.push(options);
      const refused = (options.resumeAfter as Document | undefined)?._data === invalidateToken;
      const events = refused ? [] : [...after];
      let last: unknown = options.startAfter ?? options.resumeAfter;
      return {
        tryNext() {
          if (refused) return Promise.reject(new MongoServerError(RESUME_AFTER_INVALIDATE));
          const next = events.shift() ?? null;
          if (next) last = next._id;
          return Promise.resolve(next);
        },
        bufferedCount: () => events.length,
        get resumeToken() {
          return last;
        },
        close: () => Promise.resolve(),
      };
    },
  };
  return { collection: collection as unknown as Collection, opened };
}

describe('change source after a drop (recorded real-MongoDB shapes)', () => {
  it('issue 10 item 14: a restart from the invalidate that followed a drop continues with startAfter, not as a lost history', async () => {
    const invalidate: Position = { token: tokenOf(real.invalidate), clusterTime: { t: 1_705_095_881, i: 1 } };
    const { collection, opened } = droppedCollection(invalidate.token, [real.insert ?? {}]);
    const source = new MongoChangeSource({} as unknown as MongoClient, collection, { maxAwaitMs: 0 });
    const signal = new AbortController().signal;

    // What a restart opens from a checkpoint saved on the invalidate (as the previous release saved it).
    const cursor = await source.open({ kind: 'resumeAfter', position: invalidate }, signal);
    const batch = await cursor.next(10, signal).catch((error: unknown) => error);
    await cursor.close();

    expect(batch).not.toBeInstanceOf(HistoryLostError);
    expect(batch).toMatchObject({ events: [{ kind: 'upsert', operationType: 'insert' }] });
    expect(opened.at(-1)).toMatchObject({ startAfter: { _data: invalidate.token } });
  });

  it('still reports a lost history for a token MongoDB cannot resume from at all', async () => {
    const signal = new AbortController().signal;
    for (const refusal of [
      {
        code: 286,
        codeName: 'ChangeStreamHistoryLost',
        errmsg:
          'Resume of change stream was not possible, as the resume point may no longer be in the oplog.',
      },
      {
        code: 260,
        codeName: 'InvalidResumeToken',
        errmsg:
          'Attempted to resume a single-collection stream, but the resume token does not include a UUID',
      },
    ]) {
      const opened: ChangeStreamOptions[] = [];
      const collection = {
        watch(_pipeline: Document[], options: ChangeStreamOptions) {
          opened.push(options);
          return {
            tryNext: () => Promise.reject(new MongoServerError({ ok: 0, ...refusal })),
            bufferedCount: () => 0,
            resumeToken: undefined,
            close: () => Promise.resolve(),
          };
        },
      } as unknown as Collection;
      const source = new MongoChangeSource({} as unknown as MongoClient, collection, { maxAwaitMs: 0 });
      const position: Position = { token: tokenOf(real.update), clusterTime: { t: 1_705_095_876, i: 1 } };
      const cursor = await source.open({ kind: 'resumeAfter', position }, signal);
      await expect(cursor.next(10, signal)).rejects.toBeInstanceOf(HistoryLostError);
      expect(opened).toHaveLength(1);
    }
  });
});
