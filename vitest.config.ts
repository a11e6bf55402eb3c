import os from 'node:os';
import path from 'node:path';
import { defineConfig } from 'vitest/config';
import { BaseSequencer, type TestSpecification } from 'vitest/node';

/**
 * The files that take longest (spawned CLI processes, large fixtures), slowest first. Without
 * vitest's timing cache (a clean clone: CI) files start largest first, which left some of these to
 * start late and run on alone at the end; started first, the short files fill in beside them.
 */
const SLOW = ['import-cli', 'copy', 'aggregate-datetime-buckets', 'multi-process', 'cli', 'fuzz.property', 'filters.property', 'http-hardening', 'mcp-stdio'];

class SlowFirst extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const rank = (f: TestSpecification) => {
      const i = SLOW.indexOf(path.basename(f.moduleId, '.test.ts'));
      return i < 0 ? SLOW.length : i;
    };
    // Array sort is stable: the others keep vitest's order (by cached duration, else by size).
    return (await super.sort(files)).sort((a, b) => rank(a) - rank(b));
  }
}

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
    // vitest's default is one worker less than the CPUs: on a 2-CPU machine, one file at a time.
    // Much of the suite waits (spawned CLI processes, PostgreSQL, timers): two files at once at least.
    maxWorkers: Math.max(2, os.availableParallelism() - 1),
    // A worker's module graph (src/, kysely, fastify, the MCP SDK…) is loaded once, not once per
    // file: that import took 78 s of a 347 s run. Every file opens databases of its own
    // (freshDb/testApp), and test/setup-file.ts resets what the process itself keeps.
    isolate: false,
    sequence: { sequencer: SlowFirst },
  },
});
