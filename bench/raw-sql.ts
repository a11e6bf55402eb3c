/**
 * The hand-written side of the benchmark: the same questions the service answers, asked of
 * better-sqlite3 directly with statements prepared once. Shared by run.ts and the bare HTTP server.
 */
import type Database from 'better-sqlite3';

/** Columns of an opportunity record in the order the service returns its fields (seq is internal). */
export const OPP_COLUMNS = [
  'id',
  'created_at',
  'updated_at',
  'created_by',
  'name',
  'amount',
  'status',
  'close_date',
  'probability',
  'company',
  'contact',
  'owner',
  'source',
  'priority',
  'next_step',
  'lost_reason',
] as const;

export type RawRow = Record<string, string | number | null> & { seq: number };

/** Stored row -> API record: the only decoding opportunities need is CURRENCY cents -> decimal. */
export function toRecord(r: RawRow): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const c of OPP_COLUMNS) out[c] = r[c] ?? null;
  if (typeof out.amount === 'number') out.amount = out.amount / 100;
  return out;
}

/**
 * Same encoding as records-read.ts encodeCursor: base64url JSON {f, d, v, s}, with u: 1 when the row
 * after the last one (`next`, the row read past the page) holds another value than v.
 */
export function encodeCursor(f: string, d: 'asc' | 'desc', v: string | number | null, s: number, next?: string | number | null): string {
  return Buffer.from(JSON.stringify({ f, d, v, s, ...(v !== null && next !== undefined && next !== v ? { u: 1 } : {}) })).toString('base64url');
}

export interface RawPage {
  data: Record<string, unknown>[];
  total: number | null;
  nextCursor: string | null;
}

/** Rows read with LIMIT limit + 1 -> a page as listRecords answers it (the extra row says there is a next page). */
export function page(rows: RawRow[], limit: number, sortField: string, dir: 'asc' | 'desc', total: number | null): RawPage {
  let nextCursor: string | null = null;
  if (rows.length > limit) {
    const next = (rows[limit]![sortField] ?? null) as string | number | null;
    rows.length = limit;
    const last = rows[limit - 1]!;
    nextCursor = encodeCursor(sortField, dir, (last[sortField] ?? null) as string | number | null, last.seq, next);
  }
  return { data: rows.map(toRecord), total, nextCursor };
}

export interface FilterParams {
  statuses: [string, string];
  /** cents */
  minAmount: number;
  from: string;
  to: string;
}

/** The list statements of rawQueries in PostgreSQL's placeholders: bench/pg.ts and the bare PostgreSQL server. */
export function pgListSql(table: string) {
  const cols = ['seq', ...OPP_COLUMNS].join(', ');
  return {
    first: `SELECT ${cols} FROM ${table} ORDER BY created_at DESC, seq DESC LIMIT $1`,
    deep: `SELECT ${cols} FROM ${table} WHERE (created_at, seq) < ($1, $2) ORDER BY created_at DESC, seq DESC LIMIT $3`,
    count: `SELECT count(*) AS n FROM ${table}`,
    filtered: `SELECT ${cols} FROM ${table} WHERE status IN ($1, $2) AND amount >= $3 AND close_date BETWEEN $4 AND $5 ORDER BY amount DESC, seq DESC LIMIT $6`,
    filteredCount: `SELECT count(*) AS n FROM ${table} WHERE status IN ($1, $2) AND amount >= $3 AND close_date BETWEEN $4 AND $5`,
  };
}

/** The raw queries, prepared once per connection. Each returns the same shape as listRecords. */
export function rawQueries(sqlite: Database.Database, table: string) {
  const cols = ['seq', ...OPP_COLUMNS].join(', ');
  const q = (s: string) => sqlite.prepare(s);
  const sql = {
    first: `SELECT ${cols} FROM ${table} ORDER BY created_at DESC, seq DESC LIMIT ?`,
    deep: `SELECT ${cols} FROM ${table} WHERE (created_at, seq) < (?, ?) ORDER BY created_at DESC, seq DESC LIMIT ?`,
    count: `SELECT COUNT(*) AS n FROM ${table}`,
    filtered: `SELECT ${cols} FROM ${table} WHERE status IN (?, ?) AND amount >= ? AND close_date BETWEEN ? AND ? ORDER BY amount DESC, seq DESC LIMIT ?`,
    filteredCount: `SELECT COUNT(*) AS n FROM ${table} WHERE status IN (?, ?) AND amount >= ? AND close_date BETWEEN ? AND ?`,
    byCloseDate: `SELECT ${cols} FROM ${table} ORDER BY close_date ASC, seq ASC LIMIT ?`,
    byStatus: `SELECT ${cols} FROM ${table} ORDER BY status ASC, seq ASC LIMIT ?`,
  };
  const st = Object.fromEntries(Object.entries(sql).map(([k, s]) => [k, q(s)])) as Record<keyof typeof sql, Database.Statement>;
  const count = (s: Database.Statement, params: unknown[] = []) => (s.get(...params) as { n: number }).n;
  const fp = (f: FilterParams) => [f.statuses[0], f.statuses[1], f.minAmount, f.from, f.to];

  return {
    sql,
    /** (a) first page, created_at desc */
    first(limit: number, withTotal = true): RawPage {
      const rows = st.first.all(limit + 1) as RawRow[];
      return page(rows, limit, 'created_at', 'desc', withTotal ? count(st.count) : null);
    },
    /** (b) a page reached by keyset cursor (created_at, seq) */
    after(createdAt: string, seq: number, limit: number, withTotal = true): RawPage {
      const rows = st.deep.all(createdAt, seq, limit + 1) as RawRow[];
      return page(rows, limit, 'created_at', 'desc', withTotal ? count(st.count) : null);
    },
    /** (c) status IN + amount >= + close_date BETWEEN, amount desc */
    filtered(f: FilterParams, limit: number, withTotal = true): RawPage {
      const rows = st.filtered.all(...fp(f), limit + 1) as RawRow[];
      return page(rows, limit, 'amount', 'desc', withTotal ? count(st.filteredCount, fp(f)) : null);
    },
    /** (d) sort by close_date asc (SQLite puts NULLs first in ascending order, as the service does) */
    byCloseDate(limit: number, withTotal = true): RawPage {
      const rows = st.byCloseDate.all(limit + 1) as RawRow[];
      return page(rows, limit, 'close_date', 'asc', withTotal ? count(st.count) : null);
    },
    /** (e) sort by a low-cardinality SELECT field, status asc */
    byStatus(limit: number, withTotal = true): RawPage {
      const rows = st.byStatus.all(limit + 1) as RawRow[];
      return page(rows, limit, 'status', 'asc', withTotal ? count(st.count) : null);
    },
    /** Parameters of each statement above, for EXPLAIN QUERY PLAN. */
    params(f: FilterParams, limit: number, after: { created_at: string; seq: number }): Record<keyof typeof sql, unknown[]> {
      return {
        first: [limit + 1],
        deep: [after.created_at, after.seq, limit + 1],
        count: [],
        filtered: [...fp(f), limit + 1],
        filteredCount: fp(f),
        byCloseDate: [limit + 1],
        byStatus: [limit + 1],
      };
    },
  };
}

/** The pragmas the service's openSqlite sets, so both sides read the file with the same cache. */
export function applyServicePragmas(sqlite: Database.Database): void {
  sqlite.pragma('journal_mode = WAL');
  sqlite.pragma('busy_timeout = 5000');
  sqlite.pragma('synchronous = NORMAL');
  sqlite.pragma('cache_size = -65536');
  sqlite.pragma('temp_store = MEMORY');
  sqlite.pragma('mmap_size = 268435456');
}
