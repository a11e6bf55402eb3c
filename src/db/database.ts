import type { CompiledQuery, Expression, Kysely } from 'kysely';
import type { DialectAdapter } from './dialect.js';
import { openPostgres } from './postgres/open.js';
import type { SearchBackend } from './search.js';
import type { GroupCommit } from './sqlite/group-commit.js';
import { openSqliteDatabase } from './sqlite/open.js';
import type { ReadPool } from './sqlite/read-pool.js';
import type { Tables } from './tables.js';

export { openSqlite, openSqliteDatabase, type SqliteDb } from './sqlite/open.js';

export interface Db {
  kysely: Kysely<Tables>;
  adapter: DialectAdapter;
  /** Full-text search backend of this dialect. */
  search: SearchBackend;
  /** Where the database is: the SQLite file (or ':memory:'), or the postgres:// URL it was opened with. */
  file: string;
  /**
   * A number that changes when another connection commits (SQLite's data_version), for caches
   * that must follow other processes' writes; null where the dialect has none (nothing is kept).
   */
  dataVersion(): number | null;
  /**
   * A value that changes whenever any connection, this one included, may have changed the database,
   * for caches of query answers (a list's total); null when no such value can be given now (a
   * transaction is open on this connection) or ever (PostgreSQL: absent). SQLite: data_version
   * (other connections' commits) with this connection's total_changes(), which a write raises
   * before it commits and a rollback never lowers. `dataVersion`: data_version as read at the start
   * of the request asking (Ctx.dataVersion), instead of reading it again: the request is answered as
   * the database stood when it began, and this connection's own writes since still move the value.
   */
  changeVersion?(dataVersion?: number): string | null;
  /**
   * changeVersion's part where the database tells it in a statement (PostgreSQL: the snapshot the
   * statement runs on, `pg_current_snapshot()`, as text): an expression to select beside a query's
   * own columns, so that reading the state costs no statement of its own. Two equal snapshots see
   * the same committed data: any write's transaction takes a transaction id, which moves the
   * snapshot's end for good, and its commit takes it out of the running list. Null inside a
   * transaction (its own writes are not the database's); absent where changeVersion is given (SQLite).
   */
  stampExpression?(): Expression<string> | null;
  /**
   * A token that changes when the workspace's schema may have changed in any process, without a
   * query (PostgreSQL: LISTEN/NOTIFY); absent or null: read the schema version from the database.
   */
  schemaToken?(workspaceId: number): string | null;
  /**
   * The version of who the API tokens act as (PostgreSQL: advanced in the transaction of any change to
   * a token, a user or a workspace's deletion), read by a statement sent after this call: a cached
   * token whose version it still is acts as it did. Absent (SQLite): a token is looked up again once
   * anything was written since its last lookup (changeVersion).
   */
  tokenVersion?(): Promise<number>;
  /**
   * The database as workspace `id` sees it, for every query on its tables (objects, fields, records,
   * notes, activity, search, …). PostgreSQL: its own schema (`<shared>_w<id>`) first on the search
   * path. SQLite: this same handle (its workspaces' tables share one file, keyed by workspace_id).
   * The shared tables (workspaces, users, api_tokens) read the same through either.
   */
  forWorkspace(id: number): Db;
  /**
   * The handle openDatabase returned, the same through every workspace's view of it (and through
   * a copy made for a transaction): what belongs to the database and not to one view (the heavy lane).
   */
  origin: Db;
  /** PostgreSQL: the schema of the shared tables, whose name each workspace's schema extends. */
  sharedSchema?: string;
  /**
   * In a transaction begun on this handle, the statements after this one work in workspace `id`'s
   * tables (PostgreSQL: its schema, created if new, first on the transaction's search path):
   * creating or migrating a workspace, with its row, in one transaction. Absent on SQLite.
   */
  enterWorkspace?(trx: Kysely<any>, id: number): Promise<void>;
  /** Give back the memory of the main connection's page cache (after a burst of heavy reads). */
  releaseCache(): void;
  /**
   * A read stopped by the database itself past `ms`, or as soon as `signal` aborts (PostgreSQL: cancelled
   * then, failing as statement_timeout does), for heavy reads
   * without read workers. Absent (SQLite): the time limit is checked between statements, and inside
   * them by the read workers' crm_budget.
   */
  boundedRead?<R>(q: CompiledQuery, ms: number, signal?: AbortSignal): Promise<R[]>;
  /** Heavy reads that may run at once where there are no read workers (PostgreSQL: connections of the pool they may hold). */
  heavyConcurrency?: number;
  /** Worker threads for heavy reads (file databases only); absent: heavy reads run on the main connection. */
  readPool?: ReadPool;
  /**
   * Run a long series of large write transactions (an import, a seed, an index rebuild). SQLite:
   * the write-ahead log may grow to 64 MiB before it is copied back into the database, instead of
   * 4 MiB (a checkpoint after nearly every commit of a few thousand rows), and is checkpointed at
   * the end; the page cache is 256 MiB instead of 64 meanwhile. Readers and other writers are
   * unaffected.
   */
  bulk<T>(fn: () => Promise<T>): Promise<T>;
  /**
   * SQLite: record writes that queue behind each other commit together (see sqlite/group-commit.ts),
   * each atomic in a savepoint of its own. Only for a handle whose `kysely` is `groupWrite.kysely`
   * (not a dry run's transaction). Absent on PostgreSQL, whose concurrent transactions commit on
   * connections of their own.
   */
  groupWrite?: GroupCommit<Tables>;
  close(): Promise<void>;
}

export interface OpenOptions {
  /** Path of the SQLite file, ':memory:', or a postgres:// URL. */
  file: string;
  readonly?: boolean;
  /** Threads for heavy reads (aggregates); 0 keeps them on the main connection. Ignored for ':memory:'. PostgreSQL: heavy reads at once. */
  readWorkers?: number;
  /**
   * How long a write waits for another process's write lock (a CLI import's batch, another server's
   * transaction) before it fails busy (503 with Retry-After). Default 30 s: well above the longest
   * write batch (an import batch of 5,000 rows, a custom field's table rewrite).
   */
  lockWaitMs?: number;
}

export const DEFAULT_LOCK_WAIT_MS = 30_000;

/** Whether a database location names a PostgreSQL server (postgres:// or postgresql://) rather than a SQLite file. */
export const isPostgresUrl = (location: string) => /^postgres(ql)?:\/\//i.test(location);

/** Opens the database at `opts.file`: a SQLite file (or ':memory:'), or a postgres:// URL. */
export function openDatabase(opts: OpenOptions): Db {
  if (isPostgresUrl(opts.file))
    return openPostgres({ url: opts.file, ...(opts.lockWaitMs !== undefined ? { lockWaitMs: opts.lockWaitMs } : {}), ...(opts.readWorkers ? { heavyConcurrency: opts.readWorkers } : {}) });
  return openSqliteDatabase(opts);
}
