import { Worker } from 'node:worker_threads';
import type Database from 'better-sqlite3';

/**
 * Checkpoints off the request path. In WAL mode with synchronous = NORMAL a COMMIT only appends
 * its pages to the log; SQLite's automatic checkpoint, run by the COMMIT that takes the log past
 * 1,000 pages, copies them into the file and syncs both, on the thread that committed. A single
 * create writes about 30 pages, so every thirty-third create paid for a checkpoint and its two
 * syncs, on the event loop: `/tmp` A/B of 500 creates at a time, in turn (2026-12-01, load 3-4):
 * 913-1,366 µs a create by the clock against 742-847 µs with no checkpoint on that thread, the CPU
 * the same. Here a worker thread with a connection of its own runs a PASSIVE checkpoint every
 * `intervalMs` (never waiting for a lock, never blocking a writer), and the main connection's
 * automatic checkpoint moves to `FALLBACK_PAGES`: it runs only if the worker falls that far
 * behind (a long read pinning old pages, a slow disk), so the log stays bounded as before.
 *
 * Started by a process's `START_AFTER_WRITES`th write transaction: a CLI command or a test that
 * writes a few times keeps SQLite's own checkpoints and starts no thread. Paused during a bulk
 * load (Db.bulk), which checkpoints once at its end.
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
  #writes = 0;
  #paused = 0;
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

  private start(): void {
    const worker = new Worker(new URL('./checkpoint-worker.js', import.meta.url), {
      workerData: { file: this.file, intervalMs: this.opts.intervalMs ?? INTERVAL_MS },
    });
    // A process with nothing else to do exits; close() stops it otherwise.
    worker.unref();
    worker.on('error', () => {
      // The worker is gone (it could not open the file, say): SQLite's own checkpoints take over.
      if (this.#worker === worker) this.#worker = undefined;
      this.autocheckpoint(1000);
    });
    for (let i = 0; i < this.#paused; i++) worker.postMessage('pause');
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

  pause(): void {
    this.#paused++;
    this.#worker?.postMessage('pause');
  }

  resume(): void {
    this.#paused = Math.max(0, this.#paused - 1);
    this.#worker?.postMessage('resume');
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
    const exited = new Promise((resolve) => worker.once('exit', resolve));
    worker.postMessage('stop');
    await exited;
  }
}
