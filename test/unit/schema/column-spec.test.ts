import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { SettingsError } from '../../../src/errors.js';
import { parseColumnSpecs } from '../../../src/schema/column-spec.js';
import { historyTableSchema } from '../../../src/schema/table-schema.js';

const settings = JSON.parse(
  readFileSync(new URL('../../fixtures/original-readme-settings.json', import.meta.url), 'utf8'),
) as { columns: unknown };

function problemsOf(columns: unknown): string[] {
  try {
    parseColumnSpecs(columns);
  } catch (error) {
    if (error instanceof SettingsError) return [...error.issues];
    throw error;
  }
  return [];
}

describe('column specs in the original format', () => {
  it('accepts the original README example and derives the history table schema (golden)', () => {
    const { columns, warnings } = parseColumnSpecs(settings.columns);
    expect(warnings).toEqual([]);
    expect(
      historyTableSchema(columns).map((f) => [
        f.name,
        f.type,
        f.mode,
        f.fields?.map((s) => `${s.name}:${s.type}`),
      ]),
    ).toEqual([
      ['tracking_code', 'INTEGER', 'NULLABLE', undefined],
      [
        'midnight_to_timestamp',
        'RECORD',
        'NULLABLE',
        ['cpta:FLOAT', 'activations:INTEGER', 'spend:FLOAT', 'date_start:STRING', 'ad_spend_id:STRING'],
      ],
      ['created_on_timestamp', 'FLOAT', 'NULLABLE', undefined],
      ['lifetime_to_timestamp', 'RECORD', 'NULLABLE', ['cpta:FLOAT', 'activations:INTEGER', 'spend:FLOAT']],
      ['time_archived', 'TIMESTAMP', 'NULLABLE', undefined],
      ['operationType', 'STRING', 'NULLABLE', undefined],
      ['_cluster_time', 'TIMESTAMP', 'NULLABLE', undefined],
      ['_seq', 'STRING', 'NULLABLE', undefined],
      ['_doc_id', 'STRING', 'NULLABLE', undefined],
      ['_event_id', 'STRING', 'NULLABLE', undefined],
      ['_unmapped', 'JSON', 'NULLABLE', undefined],
    ]);
  });

  it('names the path of a wrong nested type', () => {
    const columns = structuredClone(settings.columns) as { fields?: { type: string }[] }[];
    const third = columns[3];
    if (third?.fields?.[0]) third.fields[0].type = 'FLOATY';
    expect(problemsOf(columns)).toEqual([
      'columns[3].fields[0].type: expected one of STRING, BYTES, INTEGER, FLOAT, BOOLEAN, TIMESTAMP, DATE, TIME, DATETIME, RECORD, NUMERIC, BIGNUMERIC, JSON',
    ]);
  });

  it('reports every problem at once, each with its path', () => {
    expect(
      problemsOf([
        { name: 'a', type: 'STRING', mode: 'SOMETIMES' },
        { type: 'STRING' },
        { name: 'r', type: 'RECORD' },
        { name: 'A', type: 'INTEGER' },
        { name: 'a', type: 'INTEGER', fields: [{ name: 'x', type: 'STRING' }] },
      ]),
    ).toEqual([
      'columns[0].mode: expected one of NULLABLE, REQUIRED, REPEATED',
      'columns[1].name: expected a string',
    ]);
    expect(
      problemsOf([
        { name: 'r', type: 'RECORD' },
        { name: 'A', type: 'INTEGER' },
        { name: 'a', type: 'INTEGER', fields: [{ name: 'x', type: 'STRING' }] },
        { name: '_seq', type: 'STRING' },
      ]),
    ).toEqual([
      'columns[0].fields: a RECORD needs at least one field',
      'columns[2].fields: only a RECORD column has fields (type is INTEGER)',
      'columns[2].name: "a" duplicates columns[1].name (names are case-insensitive)',
      'columns[3].name: "_seq" is reserved for archiver metadata',
    ]);
  });

  it('accepts standard-SQL type spellings and lower case, normalised to the original names', () => {
    const { columns } = parseColumnSpecs([
      { name: 'a', type: 'int64' },
      { name: 'b', type: 'FLOAT64' },
      { name: 'c', type: 'bool', mode: 'repeated' },
      { name: 'd', type: 'STRUCT', fields: [{ name: 'e', type: 'decimal' }] },
    ]);
    expect(columns.map((c) => c.type)).toEqual(['INTEGER', 'FLOAT', 'BOOLEAN', 'RECORD']);
    expect(columns[2]?.mode).toBe('REPEATED');
    expect(columns[3]?.fields?.[0]?.type).toBe('NUMERIC');
  });

  it('warns about unknown keys instead of failing', () => {
    const { warnings } = parseColumnSpecs([
      { name: 'a', type: 'STRING', description: 'x', fields: undefined },
      { name: 'r', type: 'RECORD', fields: [{ name: 'b', type: 'STRING', colour: 'red' }] },
    ]);
    expect(warnings).toEqual([
      'columns[0].description: unknown key ignored',
      'columns[1].fields[0].colour: unknown key ignored',
    ]);
  });

  it('rejects RECORD nesting past 15 levels', () => {
    let column: Record<string, unknown> = { name: 'leaf', type: 'STRING' };
    for (let i = 0; i < 15; i++) column = { name: `r${i}`, type: 'RECORD', fields: [column] };
    expect(problemsOf([column]).join('\n')).toMatch(/nesting deeper than BigQuery's limit of 15/);
  });

  // Defect 7 of the original: the primary key name was concatenated into view SQL unquoted.
  it('defect 7: rejects a column name crafted as SQL before any SQL is built', () => {
    const problems = problemsOf([{ name: 'x` ; DROP TABLE t; --', type: 'STRING', primary_key: true }]);
    expect(problems).toEqual([
      'columns[0].name: "x` ; DROP TABLE t; --" must contain only letters, digits and underscores, and not start with a digit',
    ]);
  });

  it("reserves the views' row-number column like the metadata names", () => {
    expect(problemsOf([{ name: '_MBA_RN', type: 'INTEGER' }])).toEqual([
      'columns[0].name: "_MBA_RN" is reserved for archiver metadata',
    ]);
  });

  it('rejects reserved prefixes and names longer than 300 characters', () => {
    expect(problemsOf([{ name: '_PARTITIONTIME', type: 'STRING' }])).toEqual([
      'columns[0].name: "_PARTITIONTIME" must not start with the reserved prefix _PARTITION',
    ]);
    expect(problemsOf([{ name: 'a'.repeat(301), type: 'STRING' }])[0]).toMatch(/at most 300 characters/);
  });

  it('only lets a top-level scalar be a primary key', () => {
    expect(
      problemsOf([
        {
          name: 'r',
          type: 'RECORD',
          primary_key: true,
          fields: [{ name: 'x', type: 'STRING', primary_key: true }],
        },
      ]),
    ).toEqual([
      'columns[0].primary_key: a primary key must be a single scalar value (not RECORD, JSON or REPEATED)',
      'columns[0].fields[0].primary_key: only a top-level column can be a primary key',
    ]);
  });
});
