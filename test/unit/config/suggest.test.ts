import { describe, expect, it } from 'vitest';
import { closestName, editDistance } from '../../../src/config/suggest.js';

describe('did you mean', () => {
  it('counts a swap of two neighbouring letters as one edit', () => {
    expect(editDistance('dyrrun', 'dryrun')).toBe(1);
    expect(editDistance('backfil_full_collection', 'backfill_full_collection')).toBe(1);
    expect(editDistance('abc', 'xyz')).toBe(3);
    expect(editDistance('', 'abc')).toBe(3);
  });

  it('suggests a name within two edits or another case, one edit for short names, nothing further', () => {
    const known = ['dryrun', 'writer', 'columns', 'LEASE_TTL_MS'];
    expect(closestName('DryRun', known)).toBe('dryrun');
    expect(closestName('lease_ttl_sm', known)).toBe('LEASE_TTL_MS');
    expect(closestName('colums', known)).toBe('columns');
    expect(closestName('owner', known)).toBeUndefined();
    expect(closestName('notes', ['nodes', 'name'])).toBe('nodes');
    expect(closestName('note', ['name'])).toBeUndefined();
  });
});
