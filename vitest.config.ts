import os from 'node:os';
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Builds dist/ once when it is stale: the CLI tests spawn it.
    globalSetup: ['test/global-setup.ts'],
    // Before each file: state the service layer keeps per process (the pinned clock) starts clean.
    setupFiles: ['test/setup-file.ts'],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    pool: 'forks',
    // vitest's default is one worker less than the CPUs: on a 2-CPU machine one file at a time.
    // Much of the suite waits (spawned CLI processes, PostgreSQL, timers): two files at once at least.
    maxWorkers: Math.max(2, os.availableParallelism() - 1),
    // A worker's module graph (src/, kysely, fastify, the MCP SDK…) is loaded once, not once per file:
    // that import took 78 s of a 347 s run. Every file opens databases of its own (freshDb/testApp)
    // and process-wide state is reset by test/setup-file.ts.
    isolate: false,
  },
});
