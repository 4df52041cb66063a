// Review finding 1: verification cannot see changes inside some JSON values; a mapping whose repair or
// background verifier relies on it must be told, once per start, which values those are. Issue 14: JSON
// columns and `_unmapped` are compared by content, and (issue 14, REPEATED JSON) REPEATED JSON columns and
// JSON fields of REPEATED RECORDs too: only a list inside a list is still compared by presence.
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
    { name: 'tags', type: 'JSON', mode: 'REPEATED' },
    {
      name: 'items',
      type: 'RECORD',
      mode: 'REPEATED',
      fields: [
        { name: 'raw', type: 'JSON' },
        { name: 'notes', type: 'JSON', mode: 'REPEATED' },
        {
          name: 'parts',
          type: 'RECORD',
          mode: 'REPEATED',
          fields: [{ name: 'raw', type: 'JSON' }],
        },
        { name: 'sub', type: 'RECORD', fields: [{ name: 'raw', type: 'JSON' }] },
      ],
    },
  ],
};

/** The columns whose JSON verify compares by content: REPEATED JSON ones and JSON in REPEATED RECORDs too. */
const comparedOnly = [
  ...base.columns.slice(0, 4),
  {
    name: 'items',
    type: 'RECORD',
    mode: 'REPEATED',
    fields: [
      { name: 'raw', type: 'JSON' },
      { name: 'sub', type: 'RECORD', fields: [{ name: 'raw', type: 'JSON' }] },
    ],
  },
];

describe('digestGaps', () => {
  it('names what relies on verification and the lists inside lists it compares by presence only', () => {
    expect(digestGaps(parseMappingSettings({ ...base, on_history_lost: 'repair' }))).toEqual({
      relying: ['on_history_lost: repair'],
      unseen: ['items.notes', 'items.parts.raw'],
    });
    expect(digestGaps(parseMappingSettings({ ...base, verify: { share: 0.5 } }))).toEqual({
      relying: ['verify'],
      unseen: ['items.notes', 'items.parts.raw'],
    });
  });

  it('is silent when nothing relies on verification, or when it sees every value', () => {
    expect(digestGaps(parseMappingSettings(base))).toBeUndefined();
    // JSON columns, inside RECORDs too, REPEATED JSON columns, JSON fields of REPEATED RECORDs (inside a
    // RECORD of the element too), and `_unmapped` (capture_unmapped on) are compared by content.
    expect(
      digestGaps(
        parseMappingSettings({
          ...base,
          columns: comparedOnly,
          on_history_lost: 'repair',
          verify: { share: 1 },
        }),
      ),
    ).toBeUndefined();
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
