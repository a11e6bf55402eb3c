import os from 'node:os';
import { Piscina } from 'piscina';

/**
 * Worker threads with their own read-only SQLite connections. WAL lets them read while the main
 * connection writes; the event loop stays free for other requests while a heavy query runs.
 */
export class ReadPool {
  private readonly pool: Piscina;

  constructor(
    private readonly file: string,
    /** Threads that run heavy reads: also how many the heavy lane lets run at once. */
    readonly threads = Math.max(1, Math.min(4, os.availableParallelism())),
  ) {
    this.pool = new Piscina({
      filename: new URL('./read-worker.js', import.meta.url).href,
      minThreads: 1,
      maxThreads: threads,
      idleTimeout: 60_000,
    });
  }

  async all<R>(sql: string, parameters: readonly unknown[], signal?: AbortSignal): Promise<R[]> {
    return (await this.pool.run({ file: this.file, sql, parameters }, signal ? { signal } : {})) as R[];
  }

  async close(): Promise<void> {
    await this.pool.destroy();
  }
}
