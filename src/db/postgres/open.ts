import { type CompiledQuery, Kysely, PostgresDialect, sql } from 'kysely';
import pg from 'pg';
import type { Db } from '../database.js';
import { overriding } from '../overriding.js';
import type { Tables } from '../tables.js';
import { postgresAdapter } from './adapter.js';
import { ChangeListener } from './notify.js';
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

/** SQLSTATEs after which a whole transaction may simply run again: deadlock_detected, serialization_failure. */
const RETRIED = new Set(['40P01', '40001']);
const RETRIES = 5;

/**
 * Two transactions that lock the same rows in another order (a bulk update and a single update
 * beside it, each also writing its derived rows) may deadlock; PostgreSQL then aborts one of them.
 * It has written nothing, so `transaction().execute(fn)` runs fn again, from the start, after a
 * short random pause, a few times before the error goes up (503 with Retry-After).
 */
function retryingTransactions<T extends object>(builder: T): T {
  return new Proxy(builder, {
    get(target, prop) {
      const v = Reflect.get(target, prop, target) as unknown;
      if (typeof v !== 'function') return v;
      if (prop === 'execute')
        return async (fn: unknown) => {
          for (let attempt = 1; ; attempt++) {
            try {
              return await (v as (f: unknown) => Promise<unknown>).call(target, fn);
            } catch (e) {
              const state = (e as { code?: unknown } | null)?.code;
              if (typeof state !== 'string' || !RETRIED.has(state) || attempt >= RETRIES) throw e;
              await new Promise((r) => setTimeout(r, Math.random() * 20 * attempt));
            }
          }
        };
      // setAccessMode, setIsolationLevel: a new builder, retried the same way.
      return (...args: unknown[]) => retryingTransactions((v as (...a: unknown[]) => object).apply(target, args));
    },
  });
}

export function openPostgres(opts: PostgresOptions): Db {
  const { url, schema } = splitSchema(opts.url);
  // UTC sessions: a date without a time is midnight UTC, as the services read it.
  const options = [`-c lock_timeout=${opts.lockWaitMs ?? 30_000}`, '-c TimeZone=UTC'];
  // public stays on the path: the extensions (unaccent, pg_trgm) live there.
  if (schema) options.push(`-c search_path=${schema},public`);
  const pool = new pg.Pool({ connectionString: url, max: opts.poolSize ?? 10, types, options: options.join(' ') });
  // An idle connection's error (the server restarted) must not crash the process; the pool replaces it.
  pool.on('error', () => {});
  const plain = new Kysely<Tables>({ dialect: new PostgresDialect({ pool }) });
  const kysely = overriding(plain, { transaction: () => retryingTransactions(plain.transaction()) });
  let closed = false;
  const listener = new ChangeListener(
    () => new pg.Client({ connectionString: url, types, options: options.join(' ') }),
    async () => schema ?? (await sql<{ s: string }>`SELECT current_schema() AS s`.execute(kysely)).rows[0]!.s,
  );
  return {
    kysely,
    adapter: postgresAdapter,
    search: postgresSearch,
    file: opts.url,
    heavyConcurrency: opts.heavyConcurrency ?? 2,
    bulk: (fn) => fn(),
    // Its own read-only transaction, so the time limit applies to this statement alone.
    boundedRead: <R>(q: CompiledQuery, ms: number) =>
      kysely
        .transaction()
        .setAccessMode('read only')
        .execute(async (trx) => {
          await sql`SELECT set_config('statement_timeout', ${String(Math.max(1, Math.ceil(ms)))}, true)`.execute(trx);
          return (await trx.executeQuery<R>(q)).rows;
        }),
    // Other processes' writes are heard through LISTEN/NOTIFY (notify.ts).
    dataVersion: () => listener.wordsVersion(),
    schemaToken: (workspaceId) => listener.schemaToken(workspaceId),
    releaseCache() {},
    async close() {
      if (closed) return;
      closed = true;
      await listener.close();
      await kysely.destroy();
    },
  };
}
