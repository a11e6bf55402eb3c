import { type Expression, type RawBuilder, type SqlBool, sql } from 'kysely';
import type { Interval, ZoneSegment } from '../../services/time-buckets.js';
import type { DialectAdapter } from '../dialect.js';
import { classifySqliteError, isSqliteBusy } from './dialect.js';
import { analyzeStatementsFor, LIST_STALE_ALL, staleTablesFrom } from './statistics.js';

/** SQLite's SQL pieces (the interface: ../dialect.ts; PostgreSQL's: ../postgres/adapter.ts). */

/** Local calendar bucket start (YYYY-MM-DD) of a UTC ISO text column, shifted by a modifier. */
function bucketAt(col: Expression<unknown>, interval: Interval, modifier: string): RawBuilder<unknown> {
  switch (interval) {
    case 'day':
      return sql`date(${col}, ${modifier})`;
    case 'week': // ISO weeks start on Monday
      return sql`date(${col}, ${modifier}, '-6 days', 'weekday 1')`;
    case 'month':
      return sql`strftime('%Y-%m-01', ${col}, ${modifier})`;
    case 'quarter':
      // || keeps an empty date empty (printf alone would turn NULL into '-00-01').
      return sql`strftime('%Y', ${col}, ${modifier}) || printf('-%02d-01', ((CAST(strftime('%m', ${col}, ${modifier}) AS INTEGER) - 1) / 3) * 3 + 1)`;
    case 'year':
      return sql`strftime('%Y-01-01', ${col}, ${modifier})`;
  }
}

function bucketExpression(col: Expression<unknown>, interval: Interval, tz: string, segments: ZoneSegment[]): RawBuilder<unknown> {
  const bucket = (s: ZoneSegment) => (s.modifier === null ? bucketAt(sql`crm_zone_shifted(${col}, ${tz})`, interval, '+0 minutes') : bucketAt(col, interval, s.modifier));
  if (segments.length === 1) return bucket(segments[0]!);
  const branches = segments.map((s) => (s.until === null ? sql`ELSE ${bucket(s)}` : sql`WHEN ${col} < ${s.until} THEN ${bucket(s)}`));
  return sql`CASE ${sql.join(branches, sql` `)} END`;
}

/**
 * Two letters lowercase to ASCII (in JavaScript, as crm_lower, and in PostgreSQL's ICU lower()): the
 * Kelvin sign to k, and İ to i with a combining dot. LIKE folds ASCII only, so an ASCII pattern that
 * could meet them compares the text with those two folded first, natively (no function call a row).
 */
function asciiFolded(ref: Expression<unknown>, pattern: string): Expression<unknown> {
  let r = ref;
  if (/k/i.test(pattern)) r = sql`replace(${r}, '\u212A', 'k')`;
  if (/[i_]/i.test(pattern)) r = sql`replace(${r}, 'İ', 'i\u0307')`;
  return r;
}

export const sqliteAdapter: DialectAdapter = {
  name: 'sqlite',
  idType: 'integer',
  identity: (c, neverReused) => (neverReused ? c.primaryKey().autoIncrement() : c.primaryKey()),
  workspaceKey: (c) => c.notNull().references('workspaces.id').onDelete('cascade'),
  keyOrdered: (t) => t.modifyEnd(sql`WITHOUT ROWID`),
  columnType: (s) => s,
  // SQLite's LIKE folds the case of ASCII letters only: a pattern with other letters compares the
  // text folded by crm_lower (JavaScript's toLowerCase, registered on every connection), as
  // PostgreSQL does. ESCAPE makes % and _ in user input literal.
  ilike: (ref, pattern) =>
    /^[\x00-\x7f]*$/.test(pattern) ? sql<SqlBool>`${asciiFolded(ref, pattern)} LIKE ${pattern} ESCAPE '\\'` : sql<SqlBool>`crm_lower(${ref}) LIKE ${pattern.toLowerCase()} ESCAPE '\\'`,
  jsonArrayHas: (ref, value) => sql<SqlBool>`EXISTS (SELECT 1 FROM json_each(${ref}) WHERE value = ${value})`,
  textIn: (ref, values) => sql<SqlBool>`${ref} IN (${sql.join(values)})`,
  textInMax: 500,
  // At most 500 rows and 30,000 parameters a statement (SQLite allows 32,766).
  rowsPerInsert: (columns) => Math.max(1, Math.min(500, Math.floor(30000 / columns))),
  overlapsStatements: false,
  jsonArrayHasAny: (ref, values) => sql<SqlBool>`EXISTS (SELECT 1 FROM json_each(${ref}) WHERE value IN (${sql.join(values)}))`,
  // json_each is a table-valued function: its argument may name the columns of the tables before it.
  leftJoinJsonArray: (qb, array, alias) => qb.leftJoin(sql`json_each(${array})`.as(alias), (j) => j.onTrue()) as typeof qb,
  jsonArrayExtreme: (array, which) => sql<string | null>`(SELECT ${sql.raw(which === 'min' ? 'MIN' : 'MAX')}(e.value) FROM json_each(${array}) AS e)`,
  textBefore: (ref, sep) => sql<string>`substr(${ref}, 1, instr(${ref}, ${sep}) - 1)`,
  // What INTEGER PRIMARY KEY gives a row inserted without one (max + 1); read by its index's last entry.
  nextRowNumber: async (trx, table) => (await sql<{ next: number }>`SELECT coalesce(max(seq), 0) + 1 AS next FROM ${sql.table(table)}`.execute(trx)).rows[0]!.next,
  isUniqueViolation: (err) => classifySqliteError(err)?.kind === 'unique',
  attempt: (_trx, fn) => fn(),
  feedOrder: async () => {},
  // json_patch onto an empty object drops the fields left NULL (unchanged): RFC 7396's merge.
  changesPayload: (fields) => {
    const pairs = sql.join(fields.map((f) => sql`${sql.lit(f.name)}, CASE WHEN ${f.column} IS NOT ${f.value} THEN json_array(${f.column}, ${f.value}) END`));
    return sql<string>`json_object('changes', ${fields.length > 1 ? sql`json_patch('{}', json_object(${pairs}))` : sql`json_object(${pairs})`})`;
  },
  classifyError: classifySqliteError,
  secondsBetween: (from, to) => sql<number>`((julianday(${to}) - julianday(${from})) * 86400.0)`,
  timeBucket: (col, interval, tz, segments) => bucketExpression(col, interval, tz, segments),
  zoneSegments: true,
  // SQLite divides a REAL width as real, and floor() is exact for the integers stored.
  histogramBucket: (col, width) => sql`floor(${col} / ${width}) * ${width}`,
  async analyze(db, full, tables) {
    // Without statistics, or with sampled ones, SQLite can pick a poor index for a filtered, sorted
    // page (330-410 ms instead of a few ms at 1M rows in the bench): see ./statistics.ts. Whole
    // indexes, one per statement, with a pause between them, so writers wait at most one index's
    // scan. Best effort: it runs after a load has committed, and needs the write lock; another
    // process holding it past the wait must not turn the finished load into a failure.
    // Listing takes the write lock too (PRAGMA optimize begins a write): a lock held past the wait lists none.
    const stale = async () => {
      try {
        return staleTablesFrom((await sql.raw<{ optimize: string }>(`PRAGMA optimize(${LIST_STALE_ALL})`).execute(db)).rows);
      } catch (e) {
        if (!isSqliteBusy(e)) throw e;
        return [];
      }
    };
    let list: string[];
    if (full && !tables) list = (await sql<{ name: string }>`SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'`.execute(db)).rows.map((r) => r.name);
    else {
      // The tables loaded, then those the database finds stale (never analysed, or grown tenfold).
      const known = new Set((await sql<{ name: string }>`SELECT name FROM sqlite_schema WHERE type = 'table'`.execute(db)).rows.map((r) => r.name));
      list = [...new Set([...(full ? tables! : []).filter((t) => known.has(t)), ...(await stale())])];
    }
    for (const t of list) {
      const indexes = (await sql<{ name: string }>`SELECT name FROM pragma_index_list(${t}) ORDER BY name`.execute(db)).rows.map((r) => r.name);
      for (const s of analyzeStatementsFor(t, indexes)) {
        try {
          await sql.raw(s).execute(db);
        } catch (e) {
          if (!isSqliteBusy(e)) throw e;
          return;
        }
        // Between two indexes, the event loop serves others (each statement is synchronous).
        await new Promise((r) => setImmediate(r));
      }
    }
  },
  async secondaryIndexes(db, table) {
    const r = await sql<{ name: string; sql: string }>`
      SELECT name, sql FROM sqlite_master
      WHERE type = 'index' AND tbl_name = ${table} AND sql IS NOT NULL AND sql NOT LIKE 'CREATE UNIQUE%'`.execute(db);
    return r.rows.map((x) => ({ name: x.name, create: x.sql }));
  },
};
