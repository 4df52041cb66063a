import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The name under which the package is published, and the command it installs. */
export const PACKAGE_NAME = 'mongo-bigquery-archiver';

export interface PackageInfo {
  readonly version: string;
  /** The project's page (package.json `homepage`), for pointers to the documentation. */
  readonly homepage: string | undefined;
}

/**
 * The version and homepage of this installation, read from its package.json at run time so that the
 * version is written once. The file sits at a different depth from a clone (`src/cli/`, run through tsx)
 * and from the build (`dist/src/cli/`), so the nearest package.json of this package is looked for upwards.
 */
export function packageInfo(from: string = dirname(fileURLToPath(import.meta.url))): PackageInfo {
  for (let dir = from; ; dir = dirname(dir)) {
    const manifest = readManifest(join(dir, 'package.json'));
    if (manifest?.name === PACKAGE_NAME && typeof manifest.version === 'string') {
      return {
        version: manifest.version,
        homepage: typeof manifest.homepage === 'string' ? manifest.homepage : undefined,
      };
    }
    if (dirname(dir) === dir) throw new Error(`no package.json of ${PACKAGE_NAME} above ${from}`);
  }
}

function readManifest(path: string): Record<string, unknown> | undefined {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
  const parsed: unknown = JSON.parse(text);
  return typeof parsed === 'object' && parsed !== null ? (parsed as Record<string, unknown>) : undefined;
}
