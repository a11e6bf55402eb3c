import type Database from 'better-sqlite3';
import { CompiledQuery, type DatabaseConnection, type DialectAdapter, type Driver, type QueryResult, SqliteAdapter, SqliteDialect, type SqliteDialectConfig, SqliteDriver } from 'kysely';

/**
 * Kysely's SQLite dialect, changed so that several processes can write to one file (servers behind
 * one load balancer, a CLI import beside them) without "database is locked" errors:
 *
 * - Transactions begin IMMEDIATE, taking the write lock up front. Kysely's plain `begin` is
 *   deferred: a transaction that read first and then wrote had to upgrade its lock, and when another
 *   process had committed meanwhile SQLite answers SQLITE_BUSY at once, without waiting out
 *   busy_timeout (the snapshot the transaction read is stale; waiting cannot help). Every
 *   transaction in this code base writes (reads run outside transactions), so nothing is lost by
 *   taking the lock first. Savepoints (a nested transaction(), dry runs) are unchanged.
 * - Waiting for the lock happens here, asynchronously, not inside SQLite: better-sqlite3 is
 *   synchronous, and SQLite's busy handler would sleep on the event loop, stalling every other
 *   request of the process (health checks included) for as long as another process's import batch
 *   holds the lock. The connection's busy_timeout is 0; a BEGIN IMMEDIATE or a statement outside a
 *   transaction that finds the file locked is retried with a growing pause (up to 50 ms), until
 *   `lockWaitMs` has passed. Then the SQLITE_BUSY error goes up, and the surfaces answer 503 with
 *   Retry-After (see classifySqliteError), never 500.
 *
 * A statement inside a transaction is never retried: the transaction holds the write lock, so the
 * only way for it to fail busy would be a bug worth seeing.
 */

export interface LockWaitOptions {
  /** The better-sqlite3 handle under the dialect: whether a transaction is open. */
  sqlite: Database.Database;
  /** How long a write waits for another connection's write lock before giving up. */
  lockWaitMs: number;
  /** Called as each write transaction has begun (the checkpointer counts them). */
  onBegin?: () => void;
}

export function isSqliteBusy(err: unknown): boolean {
  const code = typeof err === 'object' && err !== null ? (err as { code?: unknown }).code : undefined;
  return typeof code === 'string' && code.startsWith('SQLITE_BUSY');
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Runs `run` again while the database is locked by another connection, for at most `waitMs`;
 * `pause` waits between tries (giving the connection to others meanwhile).
 */
async function whileBusy<T>(sqlite: Database.Database, waitMs: number, run: () => Promise<T>, pause: (ms: number) => Promise<void>): Promise<T> {
  const deadline = Date.now() + waitMs;
  let wait = 1;
  for (;;) {
    try {
      return await run();
    } catch (e) {
      if (!isSqliteBusy(e) || sqlite.inTransaction || Date.now() >= deadline) throw e;
      // Jittered, so two processes waiting on a third do not wake in step.
      await pause(Math.min(wait, Math.max(1, deadline - Date.now())) * (0.5 + Math.random() / 2));
      wait = Math.min(wait * 2, 50);
    }
  }
}

class WaitingConnection implements DatabaseConnection {
  constructor(
    private readonly inner: DatabaseConnection,
    private readonly opts: LockWaitOptions,
    /** Waits `ms` without holding the connection (see ImmediateSqliteDriver.pause). */
    readonly pause: (ms: number) => Promise<void>,
  ) {}

  executeQuery<R>(query: CompiledQuery): Promise<QueryResult<R>> {
    // Inside a transaction: no retry (see above), and no extra promise on the hot path.
    if (this.opts.sqlite.inTransaction) return this.inner.executeQuery<R>(query);
    return whileBusy(this.opts.sqlite, this.opts.lockWaitMs, () => this.inner.executeQuery<R>(query), this.pause);
  }

  streamQuery<R>(query: CompiledQuery, chunkSize?: number): AsyncIterableIterator<QueryResult<R>> {
    return this.inner.streamQuery<R>(query, chunkSize);
  }
}

class ImmediateSqliteDriver extends SqliteDriver {
  #connections = new WeakMap<DatabaseConnection, WaitingConnection>();

  constructor(
    config: SqliteDialectConfig,
    private readonly opts: LockWaitOptions,
  ) {
    super(config);
  }

  override async acquireConnection(): Promise<DatabaseConnection> {
    const inner = await super.acquireConnection();
    let c = this.#connections.get(inner);
    if (!c) this.#connections.set(inner, (c = new WaitingConnection(inner, this.opts, (ms) => this.pause(ms))));
    return c;
  }

  /**
   * Kysely shares the one connection through a lock (its driver's mutex), held from acquire to
   * release. A write waiting for another process's lock holds no transaction (its BEGIN or
   * statement failed), so it lets the connection go while it waits: this process's reads and
   * other requests go on instead of queueing behind it for as long as the other process writes.
   */
  private async pause(ms: number): Promise<void> {
    await super.releaseConnection();
    try {
      await sleep(ms);
    } finally {
      await super.acquireConnection();
    }
  }

  override async beginTransaction(connection: DatabaseConnection): Promise<void> {
    await connection.executeQuery(CompiledQuery.raw('begin immediate'));
    this.opts.onBegin?.();
  }
}

/**
 * Kysely's SQLite adapter says DDL is not transactional, so its migrator runs each migration
 * outside any transaction, and its migration lock does nothing (one connection is assumed): two
 * processes starting on one new file (servers behind a load balancer, an import beside a server)
 * both ran every pending migration, and the second crashed on "table already exists". SQLite's DDL
 * is transactional: saying so makes the migrator run the whole upgrade in one transaction, which
 * this dialect begins IMMEDIATE (waiting its turn for the write lock, off the event loop), and it
 * reads which migrations have run only once inside it. The process that comes second waits, then
 * finds nothing pending; a migration that fails leaves the file as it was.
 */
class TransactionalDdlSqliteAdapter extends SqliteAdapter {
  override get supportsTransactionalDdl(): boolean {
    return true;
  }
}

export class ImmediateSqliteDialect extends SqliteDialect {
  readonly #config: SqliteDialectConfig;

  constructor(
    config: SqliteDialectConfig,
    private readonly opts: LockWaitOptions,
  ) {
    super(config);
    this.#config = config;
  }

  override createDriver(): Driver {
    return new ImmediateSqliteDriver(this.#config, this.opts);
  }

  override createAdapter(): DialectAdapter {
    return new TransactionalDdlSqliteAdapter();
  }
}

/**
 * What a driver error means for the caller: 'busy' (a lock held past the wait), 'unique' (a unique
 * constraint), 'timeout' (a statement stopped by its time limit: PostgreSQL's statement_timeout).
 */
export type DbErrorKind =
  /**
   * `aborted`: the database ended the transaction to break a conflict with another one (PostgreSQL's
   * deadlock and serialization failures): nothing of it was written, and running it again soon
   * should succeed. Without it, a lock held past the wait or a server out of reach.
   */
  | { kind: 'busy'; aborted?: true }
  | { kind: 'timeout' }
  /** A value the database cannot hold or compute (too long to index, a number out of range): the client's to change. */
  | { kind: 'value'; what: string }
  | { kind: 'unique'; table: string | null; columns: string[] };

export function classifySqliteError(err: unknown): DbErrorKind | null {
  if (typeof err !== 'object' || err === null) return null;
  if (isSqliteBusy(err)) return { kind: 'busy' };
  const code = (err as { code?: unknown }).code;
  if (code === 'SQLITE_CONSTRAINT_UNIQUE' || code === 'SQLITE_CONSTRAINT_PRIMARYKEY') {
    // "UNIQUE constraint failed: workspaces.name" or "...: fields.object_id, fields.name"
    const m = /constraint failed: (.+)$/.exec(String((err as Error).message));
    const cols = m ? m[1]!.split(',').map((s) => s.trim()) : [];
    const table = cols[0]?.includes('.') ? cols[0].split('.')[0]! : null;
    return { kind: 'unique', table, columns: cols.map((c) => c.split('.').pop()!) };
  }
  return null;
}
