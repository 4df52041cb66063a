import { describe, expect, it } from 'vitest';
import {
  availableCores,
  configuredSemiSpaceMb,
  missingV8Flags,
  NO_PRETENURING_FLAG,
  pretenuringDisabled,
  SEMI_SPACE_FLAG,
  SEMI_SPACE_MB,
  V8_FLAGS,
  type ReadSystemFile,
} from '../../../src/observability/runtime.js';

describe('configuredSemiSpaceMb', () => {
  it('reads the flag from the node arguments, in both spellings and forms', () => {
    expect(configuredSemiSpaceMb([SEMI_SPACE_FLAG], undefined)).toBe(SEMI_SPACE_MB);
    expect(configuredSemiSpaceMb(['--max_semi_space_size=32'], undefined)).toBe(32);
    expect(configuredSemiSpaceMb(['--max-semi-space-size', '48', '--import', 'tsx'], undefined)).toBe(48);
  });

  it('reads NODE_OPTIONS, and the command line wins over it as in node', () => {
    expect(configuredSemiSpaceMb([], '--enable-source-maps --max-semi-space-size=16')).toBe(16);
    expect(configuredSemiSpaceMb(['--max-semi-space-size=64'], '--max-semi-space-size=16')).toBe(64);
  });

  it('is undefined when node runs with the default, or the value is not a size', () => {
    expect(configuredSemiSpaceMb(['--import', 'tsx'], undefined)).toBeUndefined();
    expect(configuredSemiSpaceMb(['--max-semi-space-size=lots'], '')).toBeUndefined();
    expect(configuredSemiSpaceMb(['--max-semi-space-size'], undefined)).toBeUndefined();
  });

  it('knows whether pretenuring was turned off, the last word winning', () => {
    expect(pretenuringDisabled([NO_PRETENURING_FLAG], undefined)).toBe(true);
    expect(pretenuringDisabled(['--no_allocation_site_pretenuring'], undefined)).toBe(true);
    expect(pretenuringDisabled(['--allocation-site-pretenuring'], NO_PRETENURING_FLAG)).toBe(false);
    expect(pretenuringDisabled([], undefined)).toBe(false);
  });

  it('names the recommended flags a process lacks, a smaller semi-space included', () => {
    expect(missingV8Flags([...V8_FLAGS], undefined)).toEqual([]);
    expect(missingV8Flags([], V8_FLAGS.join(' '))).toEqual([]);
    expect(missingV8Flags(['--import', 'tsx'], undefined)).toEqual([SEMI_SPACE_FLAG, NO_PRETENURING_FLAG]);
    expect(missingV8Flags(['--max-semi-space-size=16', NO_PRETENURING_FLAG], undefined)).toEqual([
      SEMI_SPACE_FLAG,
    ]);
  });

  it('sees what this test process was started with', () => {
    expect(configuredSemiSpaceMb()).toBe(configuredSemiSpaceMb(process.execArgv, process.env.NODE_OPTIONS));
  });
});

describe('availableCores (issue 11 review: a container CPU limit)', () => {
  const files =
    (entries: Record<string, string>): ReadSystemFile =>
    (path) =>
      entries[path];

  it('takes a cgroup v2 or v1 quota, rounded down, and the cores the process may run on otherwise', () => {
    expect(availableCores(files({ '/sys/fs/cgroup/cpu.max': '100000 100000\n' }), 8)).toBe(1);
    expect(availableCores(files({ '/sys/fs/cgroup/cpu.max': '250000 100000' }), 8)).toBe(2);
    expect(availableCores(files({ '/sys/fs/cgroup/cpu.max': '50000 100000' }), 8)).toBe(1);
    expect(availableCores(files({ '/sys/fs/cgroup/cpu.max': 'max 100000' }), 8)).toBe(8);
    expect(availableCores(files({ '/sys/fs/cgroup/cpu.max': '800000 100000' }), 2)).toBe(2);
    expect(
      availableCores(
        files({
          '/sys/fs/cgroup/cpu/cpu.cfs_quota_us': '200000',
          '/sys/fs/cgroup/cpu/cpu.cfs_period_us': '100000',
        }),
        16,
      ),
    ).toBe(2);
    expect(availableCores(files({ '/sys/fs/cgroup/cpu/cpu.cfs_quota_us': '-1' }), 4)).toBe(4);
    expect(availableCores(files({}), 3)).toBe(3);
  });
});
