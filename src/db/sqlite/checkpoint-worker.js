// Copies the write-ahead log back into the database file (a PASSIVE checkpoint) on a connection of
// its own in a worker thread, so that no request's COMMIT does it (see checkpointer.ts). Plain
// JavaScript so the same file loads from src/ (tests, tsx) and dist/.
import { parentPort, workerData } from 'node:worker_threads';
import Database from './driver.js';

/** @type {{ file: string, intervalMs: number }} */
const { file, intervalMs } = workerData;
const db = new Database(file, { fileMustExist: true });
// A PASSIVE checkpoint never waits for a lock; another connection's checkpoint running answers busy.
db.pragma('busy_timeout = 0');
const checkpoint = db.prepare('PRAGMA wal_checkpoint(PASSIVE)');

let runs = 0;
let frames = 0;
/** The log's size at the last checkpoint, and the pause before the next: doubled while nothing is written, up to a second. */
let lastLog = -1;
let wait = intervalMs;
const IDLE_MAX_MS = 1000;
/** @type {ReturnType<typeof setTimeout> | undefined} */
let timer;

function tick() {
  timer = undefined;
  try {
    const r = /** @type {{ busy: number, log: number, checkpointed: number }} */ (checkpoint.get());
    runs++;
    frames = Math.max(frames, r.log);
    wait = r.log === lastLog && r.checkpointed === r.log ? Math.min(wait * 2, Math.max(IDLE_MAX_MS, intervalMs)) : intervalMs;
    lastLog = r.log;
  } catch (e) {
    // Busy: another connection (another process) is checkpointing; it does the work.
    if (!String(/** @type {{ code?: unknown }} */ (e)?.code ?? '').startsWith('SQLITE_BUSY')) throw e;
  }
  timer = setTimeout(tick, wait);
}

parentPort?.on('message', (/** @type {string} */ m) => {
  if (m === 'stats') parentPort?.postMessage({ runs, frames });
  else if (m === 'stop') {
    if (timer) clearTimeout(timer);
    db.close();
    parentPort?.close();
  }
});

tick();
