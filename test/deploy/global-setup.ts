import { type TestProject } from 'vitest/node';
import { installDeployLinters, type DeployLinters } from '../../scripts/tools/deploy-linters.js';

declare module 'vitest' {
  export interface ProvidedContext {
    deployLinters: DeployLinters;
  }
}

/** Installs the pinned linters once per run (a marker check when they are cached) and hands their paths to the tests. */
export async function setup(project: TestProject): Promise<void> {
  project.provide('deployLinters', await installDeployLinters());
}
