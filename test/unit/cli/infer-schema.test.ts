import { type Db } from 'mongodb';
import { describe, expect, it } from 'vitest';
import { missingCollectionProblem } from '../../../src/cli/infer-schema.js';

/** A database whose listCollections answers `names`, or refuses as a server does without the privilege. */
function database(names: readonly string[] | 'refused', asked: unknown[] = []): Db {
  return {
    databaseName: 'bidding',
    listCollections: (_filter: unknown, options: unknown) => {
      asked.push(options);
      return {
        toArray: () =>
          names === 'refused'
            ? Promise.reject(new Error('not authorized on bidding to execute command { listCollections: 1 }'))
            : Promise.resolve(names.map((name) => ({ name }))),
      };
    },
  } as unknown as Db;
}

describe('infer-schema: a collection that is not there (issue 13)', () => {
  it('names the collection probably meant, asking only for the collections the user may read', async () => {
    const asked: unknown[] = [];
    expect(await missingCollectionProblem(database(['ad_cpta'], asked), 'ad_cpt')).toBe(
      'no collection ad_cpt in database bidding; did you mean bidding.ad_cpta?',
    );
    expect(asked).toEqual([{ nameOnly: true, authorizedCollections: true }]);
    expect(await missingCollectionProblem(database(['ad_cpta']), 'ad_cpta')).toBeUndefined();
  });

  it('issue 13 review: a user who may not list the collections still gets the sample', async () => {
    expect(await missingCollectionProblem(database('refused'), 'ad_cpta')).toBeUndefined();
  });
});
