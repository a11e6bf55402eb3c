import pg from 'pg';
import { Kysely, PostgresDialect, sql, type CompiledQuery } from 'kysely';
import type { Tables } from '../tables.js';
import type { Db } from '../database.js';
import { postgresAdapter } from './adapter.js';
import { postgresSearch } from './search.js';

/**
 * int8 (COUNT(*), SUM of integers, identity keys) and numeric arrive as strings from node-postgres;
 * the services read numbers, as from SQLite. Values past 2^53 lose precision, as they do in SQLite's
 * driver without safeIntegers.
 */
const types = {
  getTypeParser(oid: number, format?: 'text' | 'binary') {
    if (oid === pg.types.builtins.INT8 || oid === pg.types.builtins.NUMERIC) return (v: string) => (v === null ? null : Number(v));
    return pg.types.getTypeParser(oid, format);
  },
};

export interface PostgresOptions {
  /** postgres://user@host:port/database (the URL's `?schema=name` sets the schema the tables live in). */
  url: string;
  /** Connections of this process (default 10). */
  poolSize?: number;
  /** Heavy reads (aggregates, exports) at once: connections of the pool they may hold (default 2). */
  heavyConcurrency?: number;
  /** How long a statement may wait for a lock before it fails busy (503 with Retry-After). */
  lockWaitMs?: number;
}

/** The schema named by the URL's `schema` parameter, and the URL node-postgres is given without it. */
export function splitSchema(url: string): { url: string; schema: string | undefined } {
  const u = new URL(url);
  const schema = u.searchParams.get('schema') ?? undefined;
  u.searchParams.delete('schema');
  if (schema !== undefined && !/^[a-z_][a-z0-9_]{0,62}$/.test(schema)) throw new Error(`Invalid schema name in the database URL: '${schema}' (lower-case letters, digits and _)`);
  return { url: u.toString(), schema };
}

export function openPostgres(opts: PostgresOptions): Db {
  const { url, schema } = splitSchema(opts.url);
  // UTC sessions: a date without a time is midnight UTC, as the services read it.
  const options = [`-c lock_timeout=${opts.lockWaitMs ?? 30_000}`, "-c TimeZone=UTC"];
  // public stays on the path: the extensions (unaccent, pg_trgm) live there.
  if (schema) options.push(`-c search_path=${schema},public`);
  const pool = new pg.Pool({ connectionString: url, max: opts.poolSize ?? 10, types, options: options.join(' ') });
  // An idle connection's error (the server restarted) must not crash the process; the pool replaces it.
  pool.on('error', () => {});
  const kysely = new Kysely<Tables>({ dialect: new PostgresDialect({ pool }) });
  let closed = false;
  return {
    kysely,
    adapter: postgresAdapter,
    search: postgresSearch,
    file: opts.url,
    heavyConcurrency: opts.heavyConcurrency ?? 2,
    bulk: (fn) => fn(),
    // Its own read-only transaction, so the time limit applies to this statement alone.
    boundedRead: <R>(q: CompiledQuery, ms: number) =>
      kysely.transaction().setAccessMode('read only').execute(async (trx) => {
        await sql`SELECT set_config('statement_timeout', ${String(Math.max(1, Math.ceil(ms)))}, true)`.execute(trx);
        return (await trx.executeQuery<R>(q)).rows;
      }),
    // Other processes' writes are not seen through a counter here: the vocabulary is not kept (issue 14 item 5: LISTEN/NOTIFY).
    dataVersion: () => null,
    releaseCache() {},
    async close() {
      if (closed) return;
      closed = true;
      await kysely.destroy();
    },
  };
}
