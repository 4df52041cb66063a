import { describe, expect, it } from 'vitest';
import { canonicalPartsSql, inRangeSql, stringLiteral } from '../../../src/bigquery/digest-sql.js';
import { IdentifierError } from '../../../src/errors.js';
import { type ColumnSpec } from '../../../src/schema/types.js';

const KEY = { rank: 'k_rank', number: 'k_number', text: 'k_text' };

describe('the SQL of the digest', () => {
  it('refuses a column name that is not a BigQuery column name before any SQL exists', () => {
    const columns: ColumnSpec[] = [{ name: 'a` OR 1=1 --', type: 'STRING' }];
    expect(() => canonicalPartsSql(columns, 'w')).toThrow(IdentifierError);
  });

  it('quotes every column it reads', () => {
    const parts = canonicalPartsSql([{ name: 'select', type: 'INTEGER' }], 'w');
    expect(parts[1]).toContain('w.`select`');
  });

  it('escapes a string bound so that no id can end the literal', () => {
    expect(stringLiteral("a'b\\c\nd")).toBe("'a\\'b\\\\c\\x0ad'");
    const sql = inRangeSql(KEY, { after: JSON.stringify({ id: "x' OR TRUE --" }), upTo: undefined });
    expect(sql).toContain("k_text > 'x\\' OR TRUE --'");
  });

  it('compares an integer bound exactly and a double bound as FLOAT64', () => {
    expect(
      inRangeSql(KEY, {
        after: '{"id":{"$numberLong":"9007199254740993"}}',
        upTo: '{"id":{"$numberDouble":"1.5e20"}}',
      }),
    ).toBe(
      "k_rank IS NOT NULL AND (k_rank > 2 OR (k_rank = 2 AND k_number > 9007199254740993)) AND NOT (k_rank > 2 OR (k_rank = 2 AND k_number > CAST('150000000000000000000' AS FLOAT64)))",
    );
  });
});
