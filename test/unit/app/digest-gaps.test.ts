// Review finding 1: verification cannot see changes inside JSON values; a mapping whose repair or
// background verifier relies on it must be told, once per start, which values those are.
import { describe, expect, it } from 'vitest';
import { digestGaps } from '../../../src/app/digest-gaps.js';
import { parseMappingSettings } from '../../../src/config/settings.js';

const base = {
  _id: 'ads',
  mongo_database: 'shop',
  mongo_collection: 'ads',
  bigquery_table: 'ads',
  columns: [
    { name: 'n', type: 'INTEGER' },
    { name: 'meta', type: 'RECORD', fields: [{ name: 'raw', type: 'JSON' }] },
    { name: 'doc', type: 'JSON' },
  ],
};

describe('digestGaps', () => {
  it('names what relies on verification and the JSON values it compares by presence only', () => {
    expect(digestGaps(parseMappingSettings({ ...base, on_history_lost: 'repair' }))).toEqual({
      relying: ['on_history_lost: repair'],
      unseen: ['_unmapped', 'meta.raw', 'doc'],
    });
    expect(
      digestGaps(parseMappingSettings({ ...base, capture_unmapped: false, verify: { share: 0.5 } })),
    ).toEqual({ relying: ['verify'], unseen: ['meta.raw', 'doc'] });
  });

  it('is silent when nothing relies on verification, or when it sees every value', () => {
    expect(digestGaps(parseMappingSettings(base))).toBeUndefined();
    expect(digestGaps(parseMappingSettings({ ...base, on_history_lost: 'resnapshot' }))).toBeUndefined();
    expect(
      digestGaps(
        parseMappingSettings({
          ...base,
          columns: [{ name: 'sub', type: 'RECORD', fields: [{ name: 'n', type: 'INTEGER' }] }],
          capture_unmapped: false,
          on_history_lost: 'repair',
        }),
      ),
    ).toBeUndefined();
  });
});
