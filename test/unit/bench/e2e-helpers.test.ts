import { Decimal128, Int32, ObjectId } from 'bson';
import { describe, expect, it } from 'vitest';
import {
  flattenDocument,
  histogramTotals,
  parseProcStat,
  seriesTotal,
  round3,
  writePlan,
} from '../../../bench/e2e/helpers.js';

describe('flattenDocument', () => {
  it('spreads nested objects and arrays into top-level fields and keeps BSON values whole', () => {
    const id = new ObjectId();
    const budget = Decimal128.fromString('12.50');
    const when = new Date(0);
    expect(
      flattenDocument({
        _id: id,
        campaign: { name: 'x', budget, tags: ['a', 'b'] },
        items: [{ sku: 's', qty: new Int32(2) }],
        updated: when,
        empty: {},
      }),
    ).toEqual({
      _id: id,
      campaign_name: 'x',
      campaign_budget: budget,
      campaign_tags_0: 'a',
      campaign_tags_1: 'b',
      items_0_sku: 's',
      items_0_qty: new Int32(2),
      updated: when,
    });
  });
});

describe('writePlan', () => {
  it('makes exactly the events asked for: half inserts, 30% updates, 20% deletes of distinct documents', () => {
    const rounds = writePlan(2_500, 1_000, 1_000);
    expect(rounds).toHaveLength(3);
    const inserts = rounds.reduce((n, r) => n + r.inserts[1] - r.inserts[0], 0);
    const updates = rounds.flatMap((r) => [...r.updates]);
    const deletes = rounds.flatMap((r) => [...r.deletes]);
    expect([inserts, updates.length, deletes.length]).toEqual([1_250, 750, 500]);
    // Inserted ranges follow one another; deleted documents are distinct and never updated afterwards.
    expect(rounds.map((r) => r.inserts)).toEqual([
      [0, 416],
      [416, 833],
      [833, 1_250],
    ]);
    expect(new Set(deletes).size).toBe(deletes.length);
    expect(updates.every((i) => i >= 500 && i < 1_000)).toBe(true);
  });

  it('refuses a plan that would delete the whole collection', () => {
    expect(() => writePlan(5_000, 1_000)).toThrow(/needs more than 1000/);
  });
});

describe('parseProcStat', () => {
  it('reads the process group and user + system ticks, whatever the command name holds', () => {
    const fields = [
      'S',
      '1',
      '4242',
      '4242',
      '0',
      '-1',
      '4194560',
      '0',
      '0',
      '0',
      '0',
      '1500',
      '250',
      '3',
      '4',
    ];
    expect(parseProcStat(`4243 (python3 (x) y) ${fields.join(' ')} 20 0 1\n`)).toEqual({
      pgrp: 4242,
      ticks: 1_750,
    });
  });

  it('refuses a line that is not a stat line', () => {
    expect(() => parseProcStat('garbage')).toThrow(/not a \/proc/);
  });
});

describe('round3', () => {
  it('keeps three significant digits below 100 and integers above', () => {
    expect([round3(0.123456), round3(12.345), round3(1234.5)]).toEqual([0.123, 12.3, 1235]);
  });
});

describe('histogramTotals', () => {
  it('adds up the sum and count of every label set of the named histogram only', () => {
    const text = [
      '# HELP mba_batch_duration_seconds x',
      'mba_batch_duration_seconds_bucket{le="0.5",mapping="a"} 3',
      'mba_batch_duration_seconds_sum{mapping="a"} 1.5',
      'mba_batch_duration_seconds_count{mapping="a"} 4',
      'mba_batch_duration_seconds_sum{mapping="b"} 0.5',
      'mba_batch_duration_seconds_count{mapping="b"} 1',
      'other_seconds_sum 9',
      'other_seconds_count 9',
    ].join('\n');
    expect(histogramTotals(text, 'mba_batch_duration_seconds')).toEqual({ sum: 2, count: 5 });
  });
});

describe('seriesTotal', () => {
  it('adds up a counter over its label sets, and is 0 for a series that is absent', () => {
    const text =
      'mba_change_events_total{mapping="a",operation="insert"} 5\nmba_change_events_total{mapping="a",operation="delete"} 2\n';
    expect(seriesTotal(text, 'mba_change_events_total')).toBe(7);
    expect(seriesTotal(text, 'mba_rows_written_total')).toBe(0);
  });
});
