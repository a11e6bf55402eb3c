// Runs read-only SQL on its own SQLite connection in a worker thread, so a heavy aggregate
// never blocks the event loop. Plain JavaScript so the same file loads from src/ (tests) and dist/.
import fs from 'node:fs';
import os from 'node:os';
import Database, { registerFunctions } from './driver.js';

// Heavy reads yield the CPU to the main thread, which answers light requests (get, list, /health):
// on Linux a thread has its own nice value, set through its thread id. Elsewhere this is skipped.
try {
  const tid = Number(fs.readlinkSync('/proc/thread-self').split('/').pop());
  if (tid > 0) os.setPriority(tid, 10);
} catch {
  /* not Linux, or not allowed: run at the process's priority */
}

/** The message of a statement stopped by its deadline. */
export const BUDGET_EXCEEDED = 'crm_budget: time limit exceeded';

/** @type {Map<string, { db: import('better-sqlite3').Database, stmts: Map<string, import('better-sqlite3').Statement> }>} */
const connections = new Map();

function connection(file) {
  let c = connections.get(file);
  if (!c) {
    const db = new Database(file, { readonly: true, fileMustExist: true });
    db.pragma('busy_timeout = 5000');
    db.pragma('cache_size = -65536');
    // No memory map: pages mapped here count in the process's RSS once per connection, and stay
    // there long after the read (measured with mmap_size = 256 MiB: file pages held 157-180 MiB of
    // RSS after idle). Reads go through the OS page cache instead, which the kernel can reclaim.
    db.pragma('mmap_size = 0');
    // better-sqlite3 has no sqlite3_interrupt(). A heavy read's WHERE calls this as it visits rows
    // (see budgetCondition in read-pool.ts): past the deadline (epoch ms) the statement fails
    // at once instead of running on, and when Piscina terminates this thread (the caller gave up),
    // the next call into JavaScript fails and ends the statement too; a thread stuck in SQLite
    // would otherwise keep its CPU until the statement finished. The condition calls this only for
    // about one row in 128 (budgetCondition), so each call reads the clock.
    registerFunctions(db);
    db.function('crm_budget', { deterministic: false }, (deadline) => {
      if (Date.now() > deadline) throw new Error(BUDGET_EXCEEDED);
      return 1;
    });
    c = { db, stmts: new Map() };
    connections.set(file, c);
  }
  return c;
}

/**
 * After a burst of heavy reads, give memory back once the thread has been idle a while: SQLite's
 * page cache (up to 64 MiB a connection) and this thread's V8 heap (the result arrays it built) would
 * otherwise stay at their peak until the thread ends, which Piscina does only for threads beyond the first.
 */
const IDLE_RELEASE_MS = 3000;
/** @type {ReturnType<typeof setTimeout> | undefined} */
let idleTimer;
function releaseWhenIdle() {
  if (idleTimer) clearTimeout(idleTimer);
  idleTimer = setTimeout(() => {
    idleTimer = undefined;
    for (const c of connections.values()) c.db.pragma('shrink_memory');
    /** @type {any} */ (globalThis).gc?.();
  }, IDLE_RELEASE_MS);
  idleTimer.unref();
}

/** @param {{ file: string, sql: string, parameters: unknown[] }} task */
export default function run(task) {
  releaseWhenIdle();
  const c = connection(task.file);
  let stmt = c.stmts.get(task.sql);
  if (!stmt) {
    stmt = c.db.prepare(task.sql);
    if (c.stmts.size > 200) c.stmts.clear();
    c.stmts.set(task.sql, stmt);
  }
  return stmt.all(...task.parameters);
}
