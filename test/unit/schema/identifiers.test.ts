import { describe, expect, it } from 'vitest';
import {
  assertDatasetId,
  assertProjectId,
  assertTableId,
  quoteColumn,
  tableRef,
} from '../../../src/schema/identifiers.js';
import { IdentifierError } from '../../../src/errors.js';

const SQL_NAME = 'x` ; DROP TABLE t; --';

describe('BigQuery identifiers', () => {
  it.each(['mba-test', 'my-project-123', 'abcdef', 'example.com:my-project', `a${'b'.repeat(28)}c`])(
    'accepts the project id %s',
    (id) => {
      expect(assertProjectId(id)).toBe(id);
    },
  );

  it.each([
    ['too short', 'abcde'],
    ['too long', `a${'b'.repeat(29)}c`],
    ['upper case', 'My-Project'],
    ['starting with a digit', '1project'],
    ['ending with a hyphen', 'project-'],
    ['with an underscore', 'my_project'],
    ['with a backtick', 'proj`ect'],
    ['with a dot (outside a domain prefix)', 'my.project'],
    ['crafted as SQL', SQL_NAME],
    ['empty', ''],
  ])('refuses a project id %s', (_why, id) => {
    expect(() => assertProjectId(id)).toThrow(IdentifierError);
  });

  it.each(['archive', 'Archive_2026', '_x', '1', 'a'.repeat(1024)])('accepts the dataset id %s', (id) => {
    expect(assertDatasetId(id)).toBe(id);
  });

  it.each([
    ['empty', ''],
    ['too long', 'a'.repeat(1025)],
    ['with a hyphen', 'my-dataset'],
    ['with a dot', 'a.b'],
    ['with a space', 'a b'],
    ['with a backtick', 'a`b'],
    ['crafted as SQL', SQL_NAME],
  ])('refuses a dataset id %s', (_why, id) => {
    expect(() => assertDatasetId(id)).toThrow(IdentifierError);
  });

  it.each(['orders', 'Orders-2026', 'order history', 'café_commandes', '注文', 'a‿b'])(
    'accepts the table name %s',
    (id) => {
      expect(assertTableId(id)).toBe(id);
    },
  );

  it.each([
    ['empty', ''],
    ['with a dot', 'a.b'],
    ['with a backtick', 'a`b'],
    ['with a backslash', 'a\\b'],
    ['with a semicolon', 'a;b'],
    ['with a newline', 'a\nb'],
    ['with a quote', "a'b"],
    ['crafted as SQL', SQL_NAME],
    // The longest derived name, `<table>_latest_view`, must stay within BigQuery's 1,024 bytes.
    ['too long for its derived views', 'a'.repeat(1024 - '_latest_view'.length + 1)],
    ['too long in bytes (multi-byte letters)', 'é'.repeat(507)],
  ])('refuses a table name %s', (_why, id) => {
    expect(() => assertTableId(id)).toThrow(IdentifierError);
  });

  it('accepts the longest table name whose views still fit', () => {
    const id = 'a'.repeat(1024 - '_latest_view'.length);
    expect(assertTableId(id)).toBe(id);
  });

  it('builds a backtick-quoted table path from three valid parts', () => {
    expect(tableRef('mba-test', 'archive', 'order history')).toEqual({
      projectId: 'mba-test',
      datasetId: 'archive',
      tableId: 'order history',
      sql: '`mba-test.archive.order history`',
    });
    expect(tableRef('example.com:my-project', 'ds', 't').sql).toBe('`example.com:my-project.ds.t`');
  });

  it('refuses a table path when any part is invalid, naming that part', () => {
    expect(() => tableRef('Bad_Project', 'ds', 't')).toThrow(/project "Bad_Project"/);
    expect(() => tableRef('mba-test', 'd-s', 't')).toThrow(/dataset "d-s"/);
    expect(() => tableRef('mba-test', 'ds', SQL_NAME)).toThrow(/table "x` ; DROP TABLE t; --"/);
  });

  it('quotes legal column names with backticks', () => {
    expect(quoteColumn('_id')).toBe('`_id`');
    expect(quoteColumn('operationType')).toBe('`operationType`');
    // Reserved words are legal names; quoting keeps them from being read as keywords.
    expect(quoteColumn('select')).toBe('`select`');
  });

  it.each([
    ['crafted as SQL', SQL_NAME],
    ['with a backtick', 'a`b'],
    ['with a space', 'a b'],
    ['with a hyphen', 'a-b'],
    ['starting with a digit', '1a'],
    ['empty', ''],
    ['with a reserved prefix', '_PARTITIONTIME'],
    ['too long', 'a'.repeat(301)],
  ])('refuses a column name %s', (_why, name) => {
    expect(() => quoteColumn(name)).toThrow(IdentifierError);
  });
});
