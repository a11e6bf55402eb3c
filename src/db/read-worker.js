// Runs read-only SQL on its own SQLite connection in a worker thread, so a heavy aggregate
// never blocks the event loop. Plain JavaScript so the same file loads from src/ (tests) and dist/.
import Database from './sqlite-driver.js';

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
    db.pragma('mmap_size = 268435456');
    // better-sqlite3 has no sqlite3_interrupt(). A heavy read's WHERE calls this for every row it
    // visits (see budgetCondition in read-pool.ts): past the deadline (epoch ms) the statement fails
    // at once instead of running on, and when Piscina terminates this thread (the caller gave up),
    // the next call into JavaScript fails and ends the statement too; a thread stuck in SQLite
    // would otherwise keep its CPU until the statement finished. The clock is read every 1,024 rows.
    let calls = 0;
    db.function('crm_budget', { deterministic: false }, (deadline) => {
      if ((++calls & 1023) === 0 && Date.now() > deadline) throw new Error(BUDGET_EXCEEDED);
      return 1;
    });
    c = { db, stmts: new Map() };
    connections.set(file, c);
  }
  return c;
}

/** @param {{ file: string, sql: string, parameters: unknown[] }} task */
export default function run(task) {
  const c = connection(task.file);
  let stmt = c.stmts.get(task.sql);
  if (!stmt) {
    stmt = c.db.prepare(task.sql);
    if (c.stmts.size > 200) c.stmts.clear();
    c.stmts.set(task.sql, stmt);
  }
  return stmt.all(...task.parameters);
}
