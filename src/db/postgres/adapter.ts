import { sql, type Kysely } from 'kysely';
import type { DbErrorKind, DialectAdapter } from '../dialect.js';

/**
 * PostgreSQL's SQL pieces. Values are stored as on SQLite (text for dates and JSON, 0/1 integers for
 * booleans), so the services and the surfaces read the same values from both.
 */

/** SQLSTATEs (https://www.postgresql.org/docs/current/errcodes-appendix.html) that mean: try again later. */
const BUSY_STATES = new Set([
  '40001', // serialization_failure
  '40P01', // deadlock_detected
  '55P03', // lock_not_available
  '57014', // query_canceled (statement_timeout, lock_timeout)
  '53300', // too_many_connections
]);

function pgState(err: unknown): string | undefined {
  if (typeof err !== 'object' || err === null) return undefined;
  const { code, severity } = err as { code?: unknown; severity?: unknown };
  return typeof code === 'string' && typeof severity === 'string' && /^[0-9A-Z]{5}$/.test(code) ? code : undefined;
}

/** What a PostgreSQL error means, by its SQLSTATE and the constraint it names (never its message text). */
export function classifyPostgresError(err: unknown): DbErrorKind | null {
  const state = pgState(err);
  if (!state) return null;
  if (BUSY_STATES.has(state)) return { kind: 'busy' };
  if (state === '23505') {
    const e = err as { table?: string; detail?: string };
    // detail: 'Key (workspace_id, name)=(1, Acme) already exists.'
    const m = /^Key \(([^)]*)\)=/.exec(e.detail ?? '');
    return { kind: 'unique', table: e.table ?? null, columns: m ? m[1]!.split(',').map((c) => c.trim().replace(/^"|"$/g, '')) : [] };
  }
  return null;
}

export const postgresAdapter: DialectAdapter = {
  name: 'postgres',
  idType: 'bigint',
  identity: (c) => c.primaryKey().generatedByDefaultAsIdentity(),
  columnType: (s) => (s === 'text' ? 'text' : s === 'real' ? 'double precision' : 'bigint'),
  // LIKE with lower() on both sides: ILIKE's folding follows the database's locale and ctype.
  ilike: (ref, pattern) => sql`lower(${ref}) LIKE lower(${pattern}) ESCAPE '\\'`,
  jsonArrayHas: (ref, value) => sql`jsonb_exists(CAST(${ref} AS jsonb), ${value})`,
  jsonArrayHasAny: (ref, values) => sql`jsonb_exists_any(CAST(${ref} AS jsonb), ARRAY[${sql.join(values)}]::text[])`,
  isUniqueViolation: (err) => classifyPostgresError(err)?.kind === 'unique',
  classifyError: classifyPostgresError,
  secondsBetween: (from, to) => sql<number>`EXTRACT(EPOCH FROM (CAST(${to} AS timestamptz) - CAST(${from} AS timestamptz)))::double precision`,
  async prepare(db) {
    // The schema the connection's search_path names first (the URL's ?schema=), if it is not there yet.
    const path = (await sql<{ p: string }>`SELECT current_setting('search_path') AS p`.execute(db)).rows[0]!.p;
    const first = path.split(',')[0]!.trim().replace(/^"|"$/g, '');
    if (first && first !== '$user') await sql`CREATE SCHEMA IF NOT EXISTS ${sql.id(first)}`.execute(db);
  },
  async analyze(db: Kysely<any>, full: boolean) {
    // autovacuum keeps statistics current as tables grow; after a bulk load they are refreshed at once.
    if (full) await sql`ANALYZE`.execute(db);
  },
  async secondaryIndexes(db, table) {
    const r = await sql<{ name: string; create: string }>`
      SELECT indexname AS name, indexdef AS "create" FROM pg_indexes
      WHERE schemaname = current_schema() AND tablename = ${table} AND indexdef NOT LIKE 'CREATE UNIQUE%'`.execute(db);
    return r.rows;
  },
};
