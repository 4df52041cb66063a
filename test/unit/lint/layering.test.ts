import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ESLint } from 'eslint';
import { beforeAll, describe, expect, it } from 'vitest';

const ROOT = join(import.meta.dirname, '..', '..', '..');
/** Type-aware linting builds a TypeScript program once: the first file takes seconds. */
const LINT_TIMEOUT_MS = 120_000;

/**
 * Lints an existing source file with one import line added, through the project's own eslint.config.js, and
 * returns the no-restricted-imports messages.
 */
async function layeringErrors(eslint: ESLint, file: string, importLine: string): Promise<string[]> {
  const text = `${importLine}\n${readFileSync(join(ROOT, file), 'utf8')}`;
  const [result] = await eslint.lintText(text, { filePath: join(ROOT, file) });
  return (result?.messages ?? []).filter((m) => m.ruleId === 'no-restricted-imports').map((m) => m.message);
}

describe('issue 11: lint keeps src/ layered (dependencies point down)', () => {
  let eslint: ESLint;
  beforeAll(() => {
    eslint = new ESLint({ cwd: ROOT });
  });

  it.each([
    // The folder-level circles and upward imports the tree had before issue 11.
    ['src/core/supervisor.ts', "import { parseMappingSettings } from '../config/settings.js';", 'src/core/'],
    ['src/config/settings.ts', "import { WRITER_KINDS } from '../bigquery/writer.js';", 'src/config/'],
    ['src/config/bootstrap.ts', "import { tableRef } from '../bigquery/views.js';", 'src/config/'],
    [
      'src/mongodb/lease-store.ts',
      "import { DEFAULT_CONFIG_PATH } from '../config/bootstrap.js';",
      'src/mongodb/',
    ],
    ['src/schema/infer.ts', "import { toWireValue } from '../transform/values.js';", 'src/schema/'],
    [
      'src/bigquery/sink.ts',
      "import { MongoSettingsStore } from '../mongodb/settings-store.js';",
      'src/bigquery/',
    ],
    ['src/base/bson-kind.ts', "import { type ColumnSpec } from '../schema/types.js';", 'src/base/'],
    ['src/core/stream-loop.ts', "import { MongoClient } from 'mongodb';", 'database driver'],
    ['src/core/stream-loop.ts', "import { BigQuery } from '@google-cloud/bigquery';", 'database driver'],
    ['src/mongodb/fence.ts', "import { BigQuery } from '@google-cloud/bigquery';", 'database driver'],
    ['src/schema/names.ts', "import { type Document } from 'mongodb/lib/bson';", 'database driver'],
    // Build 6: the workers sit between the adapters and app/, and use no driver themselves.
    ['src/core/stream-loop.ts', "import { EncoderPool } from '../workers/prepare.js';", 'src/core/'],
    [
      'src/mongodb/raw-change-source.ts',
      "import { EncoderPool } from '../workers/prepare.js';",
      'src/mongodb/',
    ],
    ['src/workers/prepare.ts', "import { MappingRun } from '../app/mapping-runner.js';", 'src/workers/'],
    ['src/workers/encode-tasks.ts', "import { MongoClient } from 'mongodb';", 'database driver'],
  ])(
    'issue 11: %s may not add `%s`',
    async (file, importLine, says) => {
      const errors = await layeringErrors(eslint, file, importLine);
      expect(errors).toHaveLength(1);
      expect(errors[0]).toContain(says);
    },
    LINT_TIMEOUT_MS,
  );

  it.each([
    ['src/transform/row-mapper.ts', "import { type ColumnSpec } from '../schema/types.js';"],
    ['src/config/settings.ts', "import { type MappingSettings } from '../core/settings.js';"],
    ['src/app/archiver.ts', "import { MongoClient } from 'mongodb';"],
    ['src/workers/encode-tasks.ts', "import { compileRowEncoder } from '../bigquery/proto-encoder.js';"],
    ['src/app/mapping-runner.ts', "import { EncoderPool } from '../workers/prepare.js';"],
  ])(
    'issue 11: %s may add the downward `%s`',
    async (file, importLine) => {
      expect(await layeringErrors(eslint, file, importLine)).toEqual([]);
    },
    LINT_TIMEOUT_MS,
  );
});
