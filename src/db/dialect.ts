import { sql, type Expression, type Kysely, type RawBuilder, type SelectQueryBuilder, type SqlBool } from 'kysely';
import { classifySqliteError, isSqliteBusy, type DbErrorKind } from './sqlite-dialect.js';

export type { DbErrorKind } from './sqlite-dialect.js';

/**
 * Everything that differs between SQLite and PostgreSQL lives behind this interface,
 * so services stay dialect-neutral. Only SQLite is implemented today.
 */
export interface DialectAdapter {
  name: 'sqlite' | 'postgres';
  /** SQL column type for a storage class. */
  columnType(storage: 'text' | 'real' | 'integer'): 'text' | 'real' | 'integer' | 'double precision' | 'bigint';
  /** Case-insensitive LIKE (pattern already escaped with backslash). */
  ilike(ref: Expression<unknown>, pattern: string): RawBuilder<SqlBool>;
  /** A JSON-array text column holds the value. */
  jsonArrayHas(ref: Expression<unknown>, value: string): RawBuilder<SqlBool>;
  /** A JSON-array text column holds any of the values. */
  jsonArrayHasAny(ref: Expression<unknown>, values: string[]): RawBuilder<SqlBool>;
  /** The text before the first `sep` in a text column (every value holds one): a key's leading part. */
  textBefore(ref: Expression<unknown>, sep: string): RawBuilder<string>;
  /**
   * Each element of a JSON-array text column as a row beside its record, as `${alias}.value` (text);
   * a record with none (NULL) keeps one row whose value is NULL. (PostgreSQL: LEFT JOIN LATERAL
   * jsonb_array_elements_text(array::jsonb) AS alias ON true.)
   */
  leftJoinJsonArray<QB extends SelectQueryBuilder<any, any, any>>(qb: QB, array: Expression<unknown>, alias: string): QB;
  /** The smallest or largest element of a JSON-array text column, compared as text; NULL when it has none. */
  jsonArrayExtreme(array: Expression<unknown>, which: 'min' | 'max'): RawBuilder<string | null>;
  isUniqueViolation(err: unknown): boolean;
  /**
   * What a driver error means, for the surfaces: 'busy' (another process holds the write lock
   * longer than the wait allows: 503, retry), 'unique' (a unique constraint or index: 409, with the
   * table and columns it named). Null for anything else (a bug: 500).
   */
  classifyError(err: unknown): DbErrorKind | null;
  /** Seconds from one ISO-8601 timestamp (text) to another. */
  secondsBetween(from: Expression<unknown>, to: Expression<unknown>): RawBuilder<number>;
  /** Refresh the planner's statistics: after a bulk load (full) or now and then (cheap). */
  analyze(db: Kysely<any>, full: boolean): Promise<void>;
  /** Secondary (non-unique) indexes of a table with the statements that recreate them: bulk loads drop and rebuild them. */
  secondaryIndexes(db: Kysely<any>, table: string): Promise<{ name: string; create: string }[]>;
}

export const sqliteAdapter: DialectAdapter = {
  name: 'sqlite',
  columnType: (s) => s,
  // SQLite's LIKE is case-insensitive for ASCII; ESCAPE makes % and _ in user input literal.
  ilike: (ref, pattern) => sql<SqlBool>`${ref} LIKE ${pattern} ESCAPE '\\'`,
  jsonArrayHas: (ref, value) => sql<SqlBool>`EXISTS (SELECT 1 FROM json_each(${ref}) WHERE value = ${value})`,
  jsonArrayHasAny: (ref, values) =>
    sql<SqlBool>`EXISTS (SELECT 1 FROM json_each(${ref}) WHERE value IN (${sql.join(values)}))`,
  // json_each is a table-valued function: its argument may name the columns of the tables before it.
  leftJoinJsonArray: (qb, array, alias) => qb.leftJoin(sql`json_each(${array})`.as(alias), (j) => j.onTrue()) as typeof qb,
  jsonArrayExtreme: (array, which) => sql<string | null>`(SELECT ${sql.raw(which === 'min' ? 'MIN' : 'MAX')}(e.value) FROM json_each(${array}) AS e)`,
  textBefore: (ref, sep) => sql<string>`substr(${ref}, 1, instr(${ref}, ${sep}) - 1)`,
  isUniqueViolation: (err) => classifySqliteError(err)?.kind === 'unique',
  classifyError: classifySqliteError,
  secondsBetween: (from, to) => sql<number>`((julianday(${to}) - julianday(${from})) * 86400.0)`,
  async analyze(db, full) {
    // Without statistics SQLite can pick a poor index for a filtered, sorted page (650 ms instead of
    // under 1 ms at 1M rows in the bench).
    // Best effort: it runs after a load has committed, and needs the write lock; another process
    // holding it past the wait must not turn the finished load into a failure.
    try {
      await sql.raw(full ? 'ANALYZE' : 'PRAGMA optimize').execute(db);
    } catch (e) {
      if (!isSqliteBusy(e)) throw e;
    }
  },
  async secondaryIndexes(db, table) {
    const r = await sql<{ name: string; sql: string }>`
      SELECT name, sql FROM sqlite_master
      WHERE type = 'index' AND tbl_name = ${table} AND sql IS NOT NULL AND sql NOT LIKE 'CREATE UNIQUE%'`.execute(db);
    return r.rows.map((x) => ({ name: x.name, create: x.sql }));
  },
};

/** Escape LIKE metacharacters so user text matches literally. */
export function escapeLike(text: string): string {
  return text.replace(/[\\%_]/g, (c) => `\\${c}`);
}

/**
 * The driver error's meaning, whatever the dialect that raised it: for the surfaces' error
 * handlers, which map it once (busy: 503 with Retry-After; unique: 409).
 */
export function classifyDbError(err: unknown): DbErrorKind | null {
  return sqliteAdapter.classifyError(err);
}
