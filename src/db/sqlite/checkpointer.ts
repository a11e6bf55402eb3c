import { Worker } from 'node:worker_threads';
import type Database from 'better-sqlite3';

/**
 * Checkpoints off the request path. In WAL mode with synchronous = NORMAL a COMMIT only appends
 * its pages to the log; SQLite's automatic checkpoint, run by the COMMIT that takes the log past
 * 1,000 pages, copies them into the file and syncs both, on the thread that committed. A single
 * create writes about 30 pages, so every thirty-third create stopped the event loop for a
 * checkpoint and its syncs. Here a worker thread with a connection of its own runs a PASSIVE
 * checkpoint every `intervalMs` while the log grows, and up to a second apart while it does not
 * (never waiting for a lock, never blocking a writer). The main connection's automatic checkpoint
 * moves to `FALLBACK_PAGES`: while writes go on, the log is never wholly copied at the moment a
 * write begins, so SQLite does not start it over; the fallback does that every 16,384 pages, with
 * little left to copy. It also bounds the log, as before, should the thread fall behind (a long
 * read pinning old pages, a slow disk). Measured in docs/benchmarks.md ("Checkpoints off the
 * request path").
 *
 * Started by a process's `START_AFTER_WRITES`th write transaction (a CLI command or a test that
 * writes a few times keeps SQLite's own checkpoints and starts no thread), or at once by a bulk load
 * (Db.bulk: an import's batches write tens of thousands of pages, and the load's own checkpoint,
 * every 16,384 pages, stopped the import for the copy and its syncs).
 */
export const FALLBACK_PAGES = 16_384;
export const START_AFTER_WRITES = 100;
const INTERVAL_MS = 100;

export interface CheckpointStats {
  /** Checkpoints the worker ran. */
  runs: number;
  /** The most pages the log held at one of them. */
  frames: number;
}

export class Checkpointer {
  #worker: Worker | undefined;
  /** Settles when the worker has exited, whatever ended it. */
  #exited: Promise<unknown> = Promise.resolve();
  #writes = 0;
  #closed = false;

  constructor(
    private readonly file: string,
    private readonly sqlite: Database.Database,
    private readonly opts: { startAfterWrites?: number; intervalMs?: number } = {},
  ) {}

  /** Counts a write transaction; the one that reaches the threshold starts the worker. */
  wrote(): void {
    if (this.#worker || this.#closed || ++this.#writes < (this.opts.startAfterWrites ?? START_AFTER_WRITES)) return;
    this.start();
  }

  get running(): boolean {
    return this.#worker !== undefined;
  }

  /** Starts the worker now (a bulk load), whatever the count of writes. */
  start(): void {
    if (this.#worker || this.#closed) return;
    const worker = new Worker(new URL('./checkpoint-worker.js', import.meta.url), {
      workerData: { file: this.file, intervalMs: this.opts.intervalMs ?? INTERVAL_MS },
    });
    this.#exited = new Promise((resolve) =>
      worker.once('exit', (code) => {
        // Gone other than by close() (it could not open the file, say): SQLite's own checkpoints take over.
        if (this.#worker === worker) {
          this.#worker = undefined;
          this.autocheckpoint(1000);
        }
        resolve(code);
      }),
    );
    // Its error ends it ('exit' follows); handled here so that it does not end the process.
    worker.on('error', () => {});
    // A process with nothing else to do exits; close() stops it otherwise.
    worker.unref();
    this.#worker = worker;
    this.autocheckpoint(FALLBACK_PAGES);
  }

  private autocheckpoint(pages: number): void {
    try {
      if (this.sqlite.open) this.sqlite.pragma(`wal_autocheckpoint = ${pages}`);
    } catch {
      /* closed meanwhile */
    }
  }

  /** The worker's counts (tests, diagnosis); undefined while it has not started. */
  async stats(): Promise<CheckpointStats | undefined> {
    const worker = this.#worker;
    if (!worker) return undefined;
    return new Promise((resolve) => {
      worker.once('message', (m: CheckpointStats) => resolve(m));
      worker.postMessage('stats');
    });
  }

  /** Stops the worker and closes its connection (before the main one closes: that one's close checkpoints last). */
  async close(): Promise<void> {
    this.#closed = true;
    const worker = this.#worker;
    this.#worker = undefined;
    if (!worker) return;
    // Unreferenced, its exit would not keep the process alive for this wait: a process with nothing
    // else to do (a CLI command, a script closing its database last) ended with the close unsettled.
    worker.ref();
    worker.postMessage('stop');
    await this.#exited;
  }
}
