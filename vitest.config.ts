import { defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    setupFiles: ['./bin/polyfill.js'],
    // The summary reporter ends every run with one plain `vitest: N passed, M failed` line for CI logs.
    reporters: ['default', './test/helpers/summary-reporter.ts'],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    // Two cores: keep parallel files low so timing-sensitive suites are not starved.
    maxWorkers: 2,
    projects: [
      {
        extends: true,
        test: {
          name: 'unit',
          include: [
            'protocol/**/*.test.ts',
            'registry/**/*.test.ts',
            'tracker/**/*.test.ts',
            'peer-agent/**/*.test.ts',
            'cli/**/*.test.ts',
            'bench/**/*.test.ts',
            'test/*.test.ts',
          ],
        },
      },
      { extends: true, test: { name: 'integration', include: ['test/integration/**/*.test.ts'] } },
      {
        extends: true,
        test: {
          name: 'e2e',
          include: ['test/e2e/**/*.test.ts', 'test/testbed/**/*.test.ts'],
          testTimeout: 300_000,
          hookTimeout: 300_000,
          fileParallelism: false,
        },
      },
    ],
  },
})
