import os from 'node:os';
import { type RawBuilder, type SqlBool, sql } from 'kysely';
import { Piscina } from 'piscina';

/**
 * Give back the main connection's page cache (SQLite frees what it can; the next reads take their
 * pages from the OS cache). For idle moments after heavy work.
 */
export function releaseCache(sqlite: { pragma(source: string): unknown }): void {
  try {
    sqlite.pragma('shrink_memory');
  } catch {
    /* closed meanwhile */
  }
}

/** A statement stopped by budgetCondition's deadline (the message read-worker.js throws). */
export function isBudgetStop(e: unknown): boolean {
  return e instanceof Error && e.message.includes('crm_budget: time limit exceeded');
}

/** The condition calls into JavaScript for rows whose rowid is a multiple of this (a power of two). */
const BUDGET_EVERY_ROWS = 128;

/**
 * A WHERE condition that lets a heavy read on the pool be stopped: true for every row until the
 * deadline (epoch ms) passes, then the statement fails (see read-worker.js). A call into
 * JavaScript for every row was not free: on 200,000 contacts a COUNT(*) went from 0.1 ms to 17 ms
 * and a GROUP BY status from 8 ms to 24 ms (`node --import tsx bench/guard-cost.ts`). SQLite
 * evaluates the native `rowid & 127` first and calls the function only where it is 0, about one row
 * in 128: 6 ms and 12 ms (a COUNT(*) with any WHERE loses SQLite's shortcut, which counts a
 * b-tree's entries page by page without visiting rows). Rows visited in any order (an index, a
 * filter) meet such a rowid about every 128 rows: the same reach as before, when the function read
 * the clock on every 1,024th call. Unqualified `rowid`: the heavy reads select from one table (the record
 * table), with related values in correlated subqueries, so it names that table's rows.
 */
export function budgetCondition(deadline: number): RawBuilder<SqlBool> {
  return sql<SqlBool>`((rowid & ${sql.lit(BUDGET_EVERY_ROWS - 1)}) <> 0 OR crm_budget(${deadline}))`;
}

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
      // Threads end after 10 s without work: a thread keeps its SQLite page cache, its V8 heap and
      // its malloc arenas at their peak while it lives (measured, 50,000 contacts under mixed load:
      // RSS 516 MiB 15 s after the load with one thread kept, 324 MiB with none, start 363 MiB).
      // The first heavy read after a pause starts a thread again (tens of ms).
      minThreads: 0,
      maxThreads: threads,
      idleTimeout: 10_000,
    });
  }

  async all<R>(sql: string, parameters: readonly unknown[], signal?: AbortSignal): Promise<R[]> {
    return (await this.pool.run({ file: this.file, sql, parameters }, signal ? { signal } : {})) as R[];
  }

  async close(): Promise<void> {
    await this.pool.destroy();
  }
}
