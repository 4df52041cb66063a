import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** Short content hash of files and strings, used to key a cache folder on everything that shapes it. */
export function contentKey(parts: readonly string[], files: readonly string[] = []): string {
  const hash = createHash('sha256');
  for (const part of parts) hash.update(part).update('\0');
  for (const file of files) hash.update(readFileSync(file)).update('\0');
  return hash.digest('hex').slice(0, 12);
}

/**
 * Runs `build` into `dir` unless a completed build is already there. A build that fails or is interrupted
 * leaves no marker, so the next call starts it over from an empty folder.
 */
export async function buildOnce(dir: string, build: (dir: string) => Promise<void>): Promise<boolean> {
  const marker = join(dir, '.complete');
  if (existsSync(marker)) return false;
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  await build(dir);
  writeFileSync(marker, new Date().toISOString());
  return true;
}
