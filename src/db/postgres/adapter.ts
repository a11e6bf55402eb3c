import { type Kysely, type SqlBool, sql } from 'kysely';
import type { DbErrorKind, DialectAdapter } from '../dialect.js';
import { changeNotifications } from './notify.js';
import { tokenVersion } from './token-version.js';

/**
 * PostgreSQL's SQL pieces. Values are stored as on SQLite (text for dates and JSON, 0/1 integers for
 * booleans), so the services and the surfaces read the same values from both.
 */

/** SQLSTATEs (https://www.postgresql.org/docs/current/errcodes-appendix.html) that mean: try again later. */
const BUSY_STATES = new Set([
  '55P03', // lock_not_available
  '53300', // too_many_connections
  '57P01', // admin_shutdown (the server restarting)
  '57P02', // crash_shutdown
  '57P03', // cannot_connect_now (starting up)
]);

/** SQLSTATEs of a transaction the server rolled back to break a conflict with another: run it again. */
const ABORTED_STATES = new Set([
  '40001', // serialization_failure
  '40P01', // deadlock_detected
]);

/** The driver's own errors when the server cannot be reached or the connection dropped: try again later too. */
const UNREACHABLE = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'ENOTFOUND', 'EAI_AGAIN']);
const CONNECTION_LOST = /^(Connection terminated|Client has encountered a connection error|timeout exceeded when trying to connect)/;

function pgState(err: unknown): string | undefined {
  if (typeof err !== 'object' || err === null) return undefined;
  const { code, severity } = err as { code?: unknown; severity?: unknown };
  return typeof code === 'string' && typeof severity === 'string' && /^[0-9A-Z]{5}$/.test(code) ? code : undefined;
}

/** What a PostgreSQL error means, by its SQLSTATE and the constraint it names (never its message text). */
export function classifyPostgresError(err: unknown): DbErrorKind | null {
  const state = pgState(err);
  if (!state) {
    const code = (err as { code?: unknown } | null)?.code;
    if (typeof code === 'string' && UNREACHABLE.has(code)) return { kind: 'busy' };
    return err instanceof Error && CONNECTION_LOST.test(err.message) ? { kind: 'busy' } : null;
  }
  if (ABORTED_STATES.has(state)) return { kind: 'busy', aborted: true };
  if (BUSY_STATES.has(state) || state.startsWith('08')) return { kind: 'busy' }; // class 08: connection exception
  if (state === '54000') return { kind: 'value', what: 'A value is too long to index (at most about 2,700 bytes in an indexed field or a search word)' };
  // A cursor or a value of the wrong type or with a NUL byte reached a typed parameter: the client's to fix.
  if (state === '22P02' || state === '22021' || state === '22007' || state === '22008') return { kind: 'value', what: 'A value is not valid for its field (its type, or a character it cannot hold)' };
  if (state === '22003') return { kind: 'value', what: 'A number is out of range for this computation (a histogram interval too small for the values, or a value too large)' };
  if (state === '57014') return { kind: 'timeout' }; // query_canceled: statement_timeout, or a heavy read's cancel at its deadline (open.ts)
  if (state === '23505') {
    const e = err as { table?: string; detail?: string };
    // detail: 'Key (workspace_id, name)=(1, Acme) already exists.'
    const m = /^Key \(([^)]*)\)=/.exec(e.detail ?? '');
    return { kind: 'unique', table: e.table ?? null, columns: m ? m[1]!.split(',').map((c) => c.trim().replace(/^"|"$/g, '')) : [] };
  }
  return null;
}

/**
 * An error of a catalog scan that raced another session's DDL: a schema, table or column dropped
 * between the scan's snapshot and its lookups (Kysely's migrator lists every schema's tables; other
 * processes create and drop workspace schemas, copy --replace drops them). Reading again succeeds.
 */
export function isCatalogRace(err: unknown): boolean {
  const state = pgState(err);
  return state === '3F000' || state === '42P01' || state === '42703' || (state === 'XX000' && /cache lookup failed|could not open relation with OID/.test((err as Error).message));
}

const canonicalZone = (tz: string) => new Intl.DateTimeFormat('en-US', { timeZone: tz }).resolvedOptions().timeZone;

let savepoints = 0;
/**
 * The first key of an advisory lock of class `cls` (the second is the workspace): the class and the
 * deployment's shared schema (every connection carries it as crm.shared_schema, postgres/open.ts),
 * hashed. Advisory locks belong to the whole database: keyed by the workspace alone, two deployments
 * on one database (two shared schemas) would wait on each other's workspace 1. Two keys that hash
 * alike only make their holders take turns.
 */
export const lockKey = (cls: string) => sql<number>`hashtext(CAST(${cls} AS text) || ':' || coalesce(current_setting('crm.shared_schema', true), ''))`;

/**
 * The oid of the connection's current schema, for catalog reads that must stay in it: filtered on
 * `relnamespace` before anything is written out or sized (pg_get_indexdef, pg_relation_size), so
 * that no other schema's same-named table is touched (one dropped meanwhile fails the statement,
 * one locked makes it wait). Every workspace's tables have the same names.
 */
export const currentSchemaOid = sql`(SELECT oid FROM pg_namespace WHERE nspname = current_schema())`;

export const postgresAdapter: DialectAdapter = {
  name: 'postgres',
  idType: 'bigint',
  identity: (c) => c.primaryKey().generatedByDefaultAsIdentity(),
  workspaceKey: (c) => c.notNull(),
  keyOrdered: (t) => t,
  columnType: (s) => (s === 'text' ? sql`text COLLATE "C"` : s === 'real' ? 'double precision' : 'bigint'),
  // Case folded by Unicode's rules (ICU's root locale), whatever the column's or database's collation,
  // as crm_lower does on SQLite; the pattern is folded here.
  ilike: (ref, pattern) => sql`lower(${ref} COLLATE "und-x-icu") LIKE ${pattern.toLowerCase()} ESCAPE '\\'`,
  jsonArrayHas: (ref, value) => sql`jsonb_exists(CAST(${ref} AS jsonb), ${value})`,
  textIn: (ref, values) => sql<SqlBool>`${ref} = ANY(CAST(${values} AS text[]))`,
  textInMax: 10_000,
  // bulkInsert's JSON parameter, itself split past 16 MB of text.
  rowsPerInsert: () => 10_000,
  overlapsStatements: true,
  jsonArrayHasAny: (ref, values) => sql`jsonb_exists_any(CAST(${ref} AS jsonb), ARRAY[${sql.join(values)}]::text[])`,
  leftJoinJsonArray: (qb, array, alias) => qb.leftJoin(sql`LATERAL jsonb_array_elements_text(CAST(${array} AS jsonb))`.as(alias), (j) => j.onTrue()) as typeof qb,
  jsonArrayExtreme: (array, which) => sql<string | null>`(SELECT ${sql.raw(which === 'min' ? 'MIN' : 'MAX')}(e.value COLLATE "C") FROM jsonb_array_elements_text(CAST(${array} AS jsonb)) AS e)`,
  // A literal separator: grouped by, the expression must be the same text in SELECT and GROUP BY.
  textBefore: (ref, sep) => sql<string>`substr(${ref}, 1, strpos(${ref}, ${sql.lit(sep)}) - 1)`,
  isUniqueViolation: (err) => classifyPostgresError(err)?.kind === 'unique',
  // Appenders of one workspace's feed take turns until their commits: ids follow commit order.
  async feedOrder(trx, workspaceId) {
    await sql`SELECT pg_advisory_xact_lock(${lockKey('feed')}, ${workspaceId})`.execute(trx);
  },
  async attempt(trx, fn, opts) {
    const name = sql.id(`crm_attempt_${++savepoints}`);
    await sql`SAVEPOINT ${name}`.execute(trx);
    try {
      const r = await fn();
      // Kept, it stays open under the next ones (each name is new: ROLLBACK TO finds the right one).
      if (!opts?.keep) await sql`RELEASE SAVEPOINT ${name}`.execute(trx);
      return r;
    } catch (e) {
      await sql`ROLLBACK TO SAVEPOINT ${name}`.execute(trx);
      throw e;
    }
  },
  classifyError: classifyPostgresError,
  secondsBetween: (from, to) => sql<number>`EXTRACT(EPOCH FROM (CAST(${to} AS timestamptz) - CAST(${from} AS timestamptz)))::double precision`,
  changeNotifications,
  tokenVersion,
  async prepare(db) {
    // The schema the connection's search_path names first (the URL's ?schema=), if it is not there yet.
    const path = (await sql<{ p: string }>`SELECT current_setting('search_path') AS p`.execute(db)).rows[0]!.p;
    const first = path.split(',')[0]!.trim().replace(/^"|"$/g, '');
    if (!first || first === '$user') return (await sql<{ s: string }>`SELECT current_schema() AS s`.execute(db)).rows[0]!.s;
    try {
      await sql`CREATE SCHEMA IF NOT EXISTS ${sql.id(first)}`.execute(db);
    } catch (e) {
      // Another process created it at the same moment (IF NOT EXISTS does not cover that race).
      if (classifyPostgresError(e)?.kind !== 'unique') throw e;
    }
    return first;
  },
  // Local time through PostgreSQL's own time zone database; a date (no time) is taken at UTC midnight.
  // Literals, not parameters: a grouped expression repeated in a window's ORDER BY must be the same
  // text, and $1 and $5 are not (the interval is one of five words; the zone was checked by name).
  // The zone by its canonical name: PostgreSQL 15 lacks some of the aliases Node accepts (US/Pacific-New).
  timeBucket: (col, interval, tz) => sql`to_char(date_trunc(${sql.lit(interval)}, CAST(${col} AS timestamptz) AT TIME ZONE ${sql.lit(canonicalZone(tz))}), 'YYYY-MM-DD')`,
  zoneSegments: false,
  // Integer columns divide as integers (-5 / 10 = 0): as double precision, -5 falls in the bucket of -10.
  histogramBucket: (col, width) => sql`floor(CAST(${col} AS double precision) / ${sql.lit(width)}) * ${sql.lit(width)}`,
  async analyze(db: Kysely<any>, full: boolean, tables?: string[]) {
    // autovacuum keeps statistics current as tables grow; after a bulk load they are refreshed at once.
    // Best effort, as on SQLite: another connection holding a conflicting lock past lock_timeout must
    // not turn a finished load into a failure (autovacuum refreshes the statistics later).
    if (!full) return;
    // This schema's tables only: a bare ANALYZE would read every schema of a shared database. Of
    // them, as on SQLite: the tables the load names (its records and what is derived from them: match
    // keys, search, activity), and those the database finds stale: never analysed (reltuples -1: the
    // companies an import made by name, a new object's table) or grown tenfold since (pages now
    // against relpages then). Not every other object's records, which a workspace of a million
    // opportunities would read again for an import of contacts. Without `tables`: every table.
    // The largest first, each table a statement, two at a time on connections of their own (ANALYZE
    // takes a lock that lets writes go on): on a busy machine a pair of statements gets the work done
    // sooner than one statement reading every table in turn. (Given a transaction, they take turns.)
    const named = tables ?? [];
    // This schema's tables with their sizes (MATERIALIZED: sized after the schema's filter, never
    // before it): joined to pg_namespace, the planner sized every table of the database, taking a
    // lock on each, so an import waited on another workspace's schema change.
    const list = (
      await sql<{ t: string }>`WITH own AS MATERIALIZED (
          SELECT relname, reltuples, relpages, pg_relation_size(oid) AS bytes FROM pg_class
          WHERE relnamespace = ${currentSchemaOid} AND relkind = 'r'
        )
        SELECT relname AS t FROM own
        WHERE ${tables === undefined} OR relname = ANY(${named}::text[]) OR reltuples < 0
          OR bytes / current_setting('block_size')::int > 10 * greatest(relpages, 1)
        ORDER BY bytes DESC, relname`.execute(db)
    ).rows.map((r) => r.t);
    await Promise.all(
      [0, 1].map(async () => {
        for (let t = list.shift(); t !== undefined; t = list.shift()) {
          try {
            await sql`ANALYZE ${sql.id(t)}`.execute(db);
          } catch (e) {
            if (classifyPostgresError(e)?.kind !== 'busy') throw e;
          }
        }
      }),
    );
  },
  async secondaryIndexes(db, table) {
    // The table's own indexes chosen first (MATERIALIZED), then written out: pg_indexes filtered on
    // its indexdef column wrote out every same-named table's indexes in the database, and one of
    // another schema dropped meanwhile failed the statement ("could not open relation with OID").
    const r = await sql<{ name: string; create: string }>`
      WITH own AS MATERIALIZED (
        SELECT i.oid, i.relname FROM pg_index x
        JOIN pg_class c ON c.oid = x.indrelid
        JOIN pg_class i ON i.oid = x.indexrelid
        WHERE c.relname = ${table} AND NOT x.indisunique
          AND c.relnamespace = ${currentSchemaOid}
      )
      SELECT relname AS name, pg_get_indexdef(oid) AS "create" FROM own ORDER BY relname`.execute(db);
    return r.rows;
  },
};
