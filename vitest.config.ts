import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: 'unit',
          include: ['test/unit/**/*.test.ts'],
          environment: 'node',
        },
      },
      {
        test: {
          name: 'integration',
          include: ['test/integration/**/*.test.ts'],
          environment: 'node',
          // The emulators are shared, stateful servers: one test file at a time.
          fileParallelism: false,
          testTimeout: 60_000,
          hookTimeout: 120_000,
          setupFiles: ['test/integration/setup-env.ts'],
        },
      },
      {
        test: {
          // Dockerfile and Kubernetes manifests, checked by pinned linters (no peers, no Docker engine).
          name: 'deploy',
          include: ['test/deploy/**/*.test.ts'],
          environment: 'node',
          globalSetup: ['test/deploy/global-setup.ts'],
          testTimeout: 60_000,
        },
      },
    ],
  },
});
