import { describe, expect, it } from 'vitest';
import { formatTable } from '../../../src/cli/text-table.js';

describe('issue 13: formatTable (the demo prints BigQuery rows without an (index) column)', () => {
  it('aligns columns under a header and a rule, numbers to the right, with no index column', () => {
    const rows = [
      { operationType: 'insert', tracking_code: 48_201, spend: 28.5, _seq: 1 },
      { operationType: 'update', tracking_code: 48_209, spend: 172, _seq: 12 },
    ];
    expect(formatTable(rows, { indent: '   ' }).split('\n')).toEqual([
      '   operationType  tracking_code  spend  _seq',
      '   -------------  -------------  -----  ----',
      '   insert                 48201   28.5     1',
      '   update                 48209    172    12',
    ]);
  });

  it('writes null as NULL, a BigQuery timestamp by its text, an object as JSON, and the given columns only', () => {
    const rows = [
      { a: null, t: { value: '2026-12-06T12:00:00.000Z' }, o: { x: 1 }, hidden: 'no' },
      { a: 'b', t: null, o: null, hidden: 'no' },
    ];
    expect(formatTable(rows, { columns: ['a', 't', 'o'] }).split('\n')).toEqual([
      'a     t                         o',
      '----  ------------------------  -------',
      'NULL  2026-12-06T12:00:00.000Z  {"x":1}',
      'b     NULL                      NULL',
    ]);
  });

  it('says when there are no rows', () => {
    expect(formatTable([], { indent: '  ' })).toBe('  (no rows)');
  });
});
