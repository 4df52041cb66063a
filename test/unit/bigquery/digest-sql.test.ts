import { describe, expect, it } from 'vitest';
import { canonicalPartsSql, inRangeSql, stringLiteral } from '../../../src/bigquery/digest-sql.js';
import { keyedRowsSql } from '../../../src/bigquery/view-reader.js';
import { IdentifierError } from '../../../src/errors.js';
import { tableRef } from '../../../src/schema/identifiers.js';
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

  it('reads a RECORD field by field, every nested name quoted and validated (review finding 1)', () => {
    const rec: ColumnSpec = {
      name: 'rec',
      type: 'RECORD',
      fields: [
        { name: 'a', type: 'INTEGER' },
        { name: 'pts', type: 'RECORD', mode: 'REPEATED', fields: [{ name: 'x', type: 'FLOAT' }] },
      ],
    };
    const [, part] = canonicalPartsSql([rec], 'w');
    expect(part).toContain('w.`rec`.`a`');
    expect(part).toContain('UNNEST(w.`rec`.`pts`) AS __mba_e0');
    expect(part).toContain('__mba_e0.`x`');
    const bad: ColumnSpec = { ...rec, fields: [{ name: 'a` OR 1=1 --', type: 'STRING' }] };
    expect(() => canonicalPartsSql([bad], 'w')).toThrow(IdentifierError);
  });

  it("uses none of the functions that make the test emulator lose the view's RECORD columns", () => {
    const columns: ColumnSpec[] = [
      { name: 'f', type: 'FLOAT' },
      { name: 't', type: 'TIME' },
      { name: 'dt', type: 'DATETIME' },
      { name: 'rec', type: 'RECORD', fields: [{ name: 's', type: 'STRING' }] },
    ];
    const sql = keyedRowsSql(tableRef('my-project', 'd', 't_view'), columns);
    for (const name of ['CONCAT(', 'BYTE_LENGTH(', 'FORMAT(', 'FORMAT_TIME(', 'REGEXP_EXTRACT('])
      expect(sql, name).not.toContain(name);
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
