import type Database from 'better-sqlite3';
import { isSqliteBusy } from './dialect.js';

/**
 * Planner statistics that match the data.
 *
 * SQLite's ANALYZE with an analysis_limit (and PRAGMA optimize, which sets a temporary limit of its
 * own) reads only the first rows of each index, in index order: on an index of a column with few
 * values those rows all hold the first value, so the statistics say "about 1,000 rows per status"
 * where there are 166,667, and SQLite reads the status index and sorts 250,000 rows for a filtered
 * list that the amount index answers in a few ms (issue 16). So statistics are always gathered
 * whole (analysis_limit 0), and kept bounded another way:
 *
 * - one index per statement: ANALYZE holds the write lock while it reads, so a writer waits at most
 *   for one index's scan, never a whole table's or database's;
 * - only the tables that need it: those a bulk load just filled (their names are known), and those
 *   SQLite itself finds stale (PRAGMA optimize's own test, run in its debugging mode, which lists
 *   the tables without running anything: never analysed, or grown or shrunk tenfold since). A table
 *   is then analysed again only when it has grown tenfold, so the reading it costs over its life
 *   stays below 1.12 times its final size per index;
 * - best effort: a statement that finds the file locked by another connection is skipped (the
 *   statistics stay as they were, the next refresh takes the table again), never an error.
 */

/** SQLite's debugging mode of PRAGMA optimize: 0x1 list instead of run, 0x2 the ANALYZE test, 0x10000 every table (not only those this connection used). */
export const LIST_STALE_ALL = 0x10003;
const LIST_STALE_USED = 0x00003;

/** The tables SQLite finds stale: never analysed, or grown or shrunk tenfold since. `all`: every table, not only the ones this connection queried. */
export function staleTables(sqlite: Database.Database, all: boolean): string[] {
  return staleTablesFrom(sqlite.pragma(`optimize(${all ? LIST_STALE_ALL : LIST_STALE_USED})`) as { optimize: string }[]);
}

/** The table names in PRAGMA optimize's debugging output (ANALYZE "main"."table" lines). */
export function staleTablesFrom(rows: { optimize: string }[]): string[] {
  const out: string[] = [];
  for (const r of rows) {
    // ANALYZE "main"."table"
    const m = /^ANALYZE "main"\."((?:[^"]|"")+)"$/.exec(r.optimize);
    if (m) out.push(m[1]!.replace(/""/g, '"'));
  }
  return out;
}

/**
 * A table's indexes, its primary key's included: a WITHOUT ROWID table's is the table itself, absent
 * from sqlite_schema (analysing only the listed indexes left it never analysed, stale at every check).
 */
const INDEXES_OF = 'SELECT name FROM pragma_index_list(?) ORDER BY name';

/** The statements that analyse a table whole, one index each (a table without indexes: the table, for its row count). */
export function analyzeStatements(sqlite: Database.Database, table: string): string[] {
  return analyzeStatementsFor(table, sqlite.prepare(INDEXES_OF).pluck().all(table) as string[]);
}

export function analyzeStatementsFor(table: string, indexes: string[]): string[] {
  const q = (s: string) => `"${s.replace(/"/g, '""')}"`;
  return indexes.length ? indexes.map((i) => `ANALYZE main.${q(i)}`) : [`ANALYZE main.${q(table)}`];
}

export interface RefreshResult {
  tables: string[];
  statements: number;
  /** Statements skipped because another connection held the write lock. */
  busy: number;
  ms: number;
}

/**
 * Analyses `tables` whole, one index per statement, synchronously (for opening and closing a
 * database). Stops at the first statement that finds the file locked, or once `budgetMs` is spent
 * (checked between tables): what is left stays stale, and is taken at the next refresh.
 */
export function analyzeTablesSync(sqlite: Database.Database, tables: string[], budgetMs = Number.POSITIVE_INFINITY): RefreshResult {
  const t0 = performance.now();
  const res: RefreshResult = { tables: [], statements: 0, busy: 0, ms: 0 };
  if (sqlite.readonly || !tables.length) return res;
  const limit = sqlite.pragma('analysis_limit', { simple: true }) as number;
  const timeout = sqlite.pragma('busy_timeout', { simple: true }) as number;
  // Whole indexes; and without waiting inside SQLite (that would sleep on the event loop).
  if (limit !== 0) sqlite.pragma('analysis_limit = 0');
  if (timeout !== 0) sqlite.pragma('busy_timeout = 0');
  try {
    outer: for (const t of tables) {
      if (performance.now() - t0 > budgetMs) break;
      for (const s of analyzeStatements(sqlite, t)) {
        try {
          sqlite.exec(s);
          res.statements++;
        } catch (e) {
          if (!isSqliteBusy(e)) throw e;
          res.busy++;
          break outer;
        }
      }
      res.tables.push(t);
    }
  } finally {
    if (limit !== 0) sqlite.pragma(`analysis_limit = ${limit}`);
    if (timeout !== 0) sqlite.pragma(`busy_timeout = ${timeout}`);
  }
  res.ms = performance.now() - t0;
  return res;
}

/** The stale tables (see staleTables), analysed whole within `budgetMs`. */
export function refreshStaleSync(sqlite: Database.Database, all: boolean, budgetMs?: number): RefreshResult {
  if (sqlite.readonly) return { tables: [], statements: 0, busy: 0, ms: 0 };
  // Even listing takes the write lock (PRAGMA optimize begins a write): without waiting either.
  const timeout = sqlite.pragma('busy_timeout', { simple: true }) as number;
  let stale: string[];
  try {
    if (timeout !== 0) sqlite.pragma('busy_timeout = 0');
    stale = staleTables(sqlite, all);
  } catch (e) {
    if (!isSqliteBusy(e)) throw e;
    return { tables: [], statements: 0, busy: 1, ms: 0 };
  } finally {
    if (timeout !== 0) sqlite.pragma(`busy_timeout = ${timeout}`);
  }
  return analyzeTablesSync(sqlite, stale, budgetMs);
}
