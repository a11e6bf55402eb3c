import { type CompiledQuery, Kysely, PostgresDialect, sql } from 'kysely';
import pg from 'pg';
import type { Db } from '../database.js';
import type { Tables } from '../tables.js';
import { postgresAdapter } from './adapter.js';
import { ChangeListener } from './notify.js';
import { postgresSearch } from './search.js';
import { TokenVersionReader } from './token-version.js';

/**
 * The snapshot a statement runs on, as text (Db.stampExpression): the same for two statements only
 * while no writing transaction began or ended between them. A scalar subquery, so it is read once a
 * statement (an InitPlan), not once a row.
 */
const SNAPSHOT = sql<string>`(SELECT pg_current_snapshot()::text)`;

/**
 * int8 (COUNT(*), SUM of integers, identity keys) and numeric arrive as strings from node-postgres;
 * the services read numbers, as from SQLite. Values past 2^53 lose precision, as they do in SQLite's
 * driver without safeIntegers.
 */
export const numberTypes = {
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

/**
 * The schema named by the URL's `schema` parameter, the URL's own session `options` (`?options=-c
 * statement_timeout=5000`), and the URL node-postgres is given without either: node-postgres lets a
 * URL's options replace the ones the code gives, which dropped the search path (the tables went to
 * public) and the UTC time zone; they are joined instead, the server's own last.
 */
export function splitSchema(url: string): { url: string; schema: string | undefined; options: string | undefined } {
  const u = new URL(url);
  const schema = u.searchParams.get('schema') ?? undefined;
  const options = u.searchParams.get('options') ?? undefined;
  u.searchParams.delete('schema');
  u.searchParams.delete('options');
  // 48 at most: each workspace's schema is this name and '_w' and its id, within PostgreSQL's 63 bytes.
  if (schema !== undefined && !/^[a-z_][a-z0-9_]{0,47}$/.test(schema)) throw new Error(`Invalid schema name in the database URL: '${schema}' (lower-case letters, digits and _, at most 48)`);
  return { url: u.toString(), schema, options };
}

/**
 * Where a workspace's tables live: a schema of its own beside the shared one, `<shared>_w<id>`
 * (see docs/postgres.md, "Workspaces"). Its search path puts that schema first, then the shared
 * schema (workspaces, users, tokens) and public.
 */
export const workspaceSchema = (shared: string, workspaceId: number) => `${shared}_w${workspaceId}`;
const pathOf = (...schemas: string[]) => schemas.map((s) => `"${s}"`).join(', ');
export const workspacePath = (shared: string, workspaceId: number) => pathOf(workspaceSchema(shared, workspaceId), shared, 'public');

/**
 * A pool for one search path over the process's one pg.Pool: a connection whose session has
 * another path (it last served another workspace) is set to this one when handed out, so a pooled
 * connection costs a SET only when it moves between workspaces.
 */
const sessionPath = new WeakMap<pg.PoolClient, string>();
function pathPool(pool: pg.Pool, path: string, initial: string, end: () => Promise<void>) {
  return {
    async connect() {
      const client = await pool.connect();
      if ((sessionPath.get(client) ?? initial) !== path) {
        try {
          await client.query(`SET search_path TO ${path}`);
        } catch (e) {
          client.release(e as Error);
          throw e;
        }
        sessionPath.set(client, path);
      }
      return client;
    },
    end,
  };
}

export function openPostgres(opts: PostgresOptions): Db {
  const { url, schema: named, options: own } = splitSchema(opts.url);
  // The shared tables' schema: the URL's, else public.
  const shared = named ?? 'public';
  const sharedPath = shared === 'public' ? pathOf('public') : pathOf(shared, 'public');
  // UTC sessions: a date without a time is midnight UTC, as the services read it.
  // public stays on the path, where extensions are usually installed.
  // crm.shared_schema: the deployment, in the keys of its advisory locks (adapter.ts, lockKey).
  const options = [...(own ? [own] : []), `-c lock_timeout=${opts.lockWaitMs ?? 30_000}`, '-c TimeZone=UTC', `-c search_path=${sharedPath.replace(/ /g, '')}`, `-c crm.shared_schema=${shared}`];
  // A server that does not answer fails a request within 10 s (503 with Retry-After), not never.
  const pool = new pg.Pool({ connectionString: url, max: opts.poolSize ?? 10, types: numberTypes, options: options.join(' '), connectionTimeoutMillis: 10_000 });
  // An idle connection's error (the server restarted) must not crash the process; the pool replaces it.
  pool.on('error', () => {});
  // A transaction aborted by a deadlock is not run again here, under every service: a transaction
  // body may keep state outside the database (a review found an upsert answering its rows twice
  // after a retry). The record writes, whose bodies are written to run again, are re-run by
  // inTransaction (services/records-write.ts; the adapter classifies 40P01 and 40001 as 'busy',
  // aborted); any other write answers 503 with Retry-After, and the client sends it again.
  /** A handle's connections (its search path) and its Kysely over them. */
  const on = (path: string, end: () => Promise<void>) => {
    const connections = pathPool(pool, path, sharedPath, end);
    return { kysely: new Kysely<Tables>({ dialect: new PostgresDialect({ pool: connections }) }), connections };
  };
  const sharedHandle = on(sharedPath, () => pool.end());
  const kysely = sharedHandle.kysely;
  let closed = false;
  const listener = new ChangeListener(
    () => new pg.Client({ connectionString: url, types: numberTypes, options: options.join(' '), keepAlive: true }),
    async () => shared,
  );
  const tokens = new TokenVersionReader(pool, shared);
  const bound = new Map<number, Db>();
  let origin: Db;
  const handle = ({ kysely: k, connections }: ReturnType<typeof on>): Db => ({
    kysely: k,
    get origin() {
      return origin;
    },
    adapter: postgresAdapter,
    search: postgresSearch,
    file: opts.url,
    sharedSchema: shared,
    heavyConcurrency: opts.heavyConcurrency ?? 2,
    bulk: (fn) => fn(),
    // One statement, one round trip, on a connection of its own: past `ms` the server is asked to
    // cancel it (a cancel request on a new connection, as psql's Ctrl-C), and it fails with 57014,
    // the SQLSTATE of statement_timeout (classified 'timeout'). A read-only transaction with
    // SET LOCAL statement_timeout took three more round trips per heavy statement (BEGIN, the
    // setting, COMMIT): up to a third of a 15 ms aggregate.
    boundedRead: <R>(q: CompiledQuery, ms: number, signal?: AbortSignal) => boundedRead<R>(connections, url, options.join(' '), q, ms, signal),
    // Other processes' writes are heard through LISTEN/NOTIFY (notify.ts).
    dataVersion: () => listener.wordsVersion(),
    schemaToken: (workspaceId) => listener.schemaToken(workspaceId),
    tokenVersion: () => tokens.read(),
    // The handle's own Kysely, `this`'s: a copy made for a transaction (its kysely the transaction) gives null.
    stampExpression(this: Db) {
      return this.kysely.isTransaction ? null : SNAPSHOT;
    },
    async enterWorkspace(trx, id) {
      await sql`CREATE SCHEMA IF NOT EXISTS ${sql.id(workspaceSchema(shared, id))}`.execute(trx);
      await sql`SELECT set_config('search_path', ${workspacePath(shared, id)}, true)`.execute(trx);
    },
    forWorkspace(id) {
      let db = bound.get(id);
      if (!db) bound.set(id, (db = handle(on(workspacePath(shared, id), async () => {}))));
      return db;
    },
    releaseCache() {},
    async close() {
      if (closed) return;
      closed = true;
      await listener.close();
      await kysely.destroy();
    },
  });
  origin = handle(sharedHandle);
  return origin;
}

/**
 * A statement stopped by the server once `ms` have passed, or at once when `signal` aborts (the
 * client hung up: its read must not go on using the server until the deadline): a second connection
 * asks the server to cancel it (pg_cancel_backend), and it fails with 57014 (query_canceled). A connection
 * that was sent a cancel is closed rather than given back to the pool, so a late cancel can never
 * reach the next statement that would run on it.
 */
async function boundedRead<R>(connections: { connect(): Promise<pg.PoolClient> }, url: string, options: string, q: CompiledQuery, ms: number, signal?: AbortSignal): Promise<R[]> {
  signal?.throwIfAborted();
  // The handle's connections: its workspace's search path is set on the one handed out.
  const client = await connections.connect();
  let cancelling: Promise<void> | undefined;
  let settle!: () => void;
  const settled = new Promise<void>((resolve) => (settle = resolve));
  const cancel = () => {
    cancelling ??= cancelBackend(url, options, client, settled);
  };
  const timer = setTimeout(cancel, Math.max(1, Math.ceil(ms)));
  signal?.addEventListener('abort', cancel, { once: true });
  try {
    if (signal?.aborted) cancel();
    return (await client.query({ text: q.sql, values: q.parameters as unknown[] })).rows as R[];
  } finally {
    clearTimeout(timer);
    signal?.removeEventListener('abort', cancel);
    settle();
    if (cancelling) {
      await cancelling;
      client.release(true);
    } else client.release();
  }
}

/**
 * Asks the server to cancel the statement running on `client` until it ends: a cancel that arrives
 * before the server has begun the statement is ignored, so it is asked again every 100 ms, five
 * times at most. When it cannot be asked (no connection), or the statement still runs, the
 * connection is closed: the server stops the statement when it next writes to it.
 */
async function cancelBackend(url: string, options: string, client: pg.PoolClient, settled: Promise<void>): Promise<void> {
  const pid = (client as unknown as { processID: number | null }).processID;
  const other = new pg.Client({ connectionString: url, options, connectionTimeoutMillis: 10_000 });
  other.on('error', () => {});
  let done = false;
  settled.then(() => (done = true));
  try {
    await other.connect();
    for (let i = 0; i < 5 && !done; i++) {
      await other.query('SELECT pg_cancel_backend($1)', [pid]);
      await Promise.race([settled, new Promise((resolve) => setTimeout(resolve, 100).unref())]);
    }
  } catch {
    // The server cannot be reached on a second connection: closing this one is all that is left.
  } finally {
    await other.end().catch(() => {});
  }
  if (done) return;
  // Its statement fails with 'Connection terminated'; the client's own error event must not go unheard.
  client.on('error', () => {});
  (client as unknown as { connection?: { stream?: { destroy(): void } } }).connection?.stream?.destroy();
}
