import { sql, type Expression, type RawBuilder, type SqlBool } from 'kysely';

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
  isUniqueViolation(err: unknown): boolean;
}

export const sqliteAdapter: DialectAdapter = {
  name: 'sqlite',
  columnType: (s) => s,
  // SQLite's LIKE is case-insensitive for ASCII; ESCAPE makes % and _ in user input literal.
  ilike: (ref, pattern) => sql<SqlBool>`${ref} LIKE ${pattern} ESCAPE '\\'`,
  jsonArrayHas: (ref, value) => sql<SqlBool>`EXISTS (SELECT 1 FROM json_each(${ref}) WHERE value = ${value})`,
  jsonArrayHasAny: (ref, values) =>
    sql<SqlBool>`EXISTS (SELECT 1 FROM json_each(${ref}) WHERE value IN (${sql.join(values)}))`,
  isUniqueViolation: (err) =>
    typeof err === 'object' && err !== null && (err as { code?: string }).code === 'SQLITE_CONSTRAINT_UNIQUE',
};

/** Escape LIKE metacharacters so user text matches literally. */
export function escapeLike(text: string): string {
  return text.replace(/[\\%_]/g, (c) => `\\${c}`);
}
