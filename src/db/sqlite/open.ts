import fs from 'node:fs';
import path from 'node:path';
import type Database from 'better-sqlite3';
import { Kysely, type SqliteDatabase, type SqliteStatement } from 'kysely';
import { type Db, DEFAULT_LOCK_WAIT_MS, isPostgresUrl, type OpenOptions } from '../database.js';
import type { Tables } from '../tables.js';
import { sqliteAdapter } from './adapter.js';
import { Checkpointer, FALLBACK_PAGES } from './checkpointer.js';
import { ImmediateSqliteDialect, isSqliteBusy } from './dialect.js';
import BetterSqlite, { registerFunctions } from './driver.js';
import { groupCommit } from './group-commit.js';
import { ReadPool, releaseCache } from './read-pool.js';
import { sqliteSearch } from './search.js';
import { refreshStaleSync } from './statistics.js';

/** How long opening or closing a database may spend refreshing stale statistics (checked between tables). */
const OPEN_ANALYZE_MS = 1000;

/**
 * Kysely's SQLite driver prepares every statement anew. Preparing is a large share of a
 * fast indexed query, so keep prepared statements by SQL text. A statement that is still
 * being iterated (a stream) is busy and cannot be shared: those get a fresh one.
 */
function cachingDatabase(sqlite: Database.Database, max = 500): SqliteDatabase {
  const cache = new Map<string, Database.Statement>();
  return {
    close: () => sqlite.close(),
    prepare(sqlText: string): SqliteStatement {
      let stmt = cache.get(sqlText);
      if (stmt && !stmt.busy) return stmt as unknown as SqliteStatement;
      stmt = sqlite.prepare(sqlText);
      if (!cache.has(sqlText)) {
        if (cache.size >= max) cache.delete(cache.keys().next().value as string);
        cache.set(sqlText, stmt);
      }
      return stmt as unknown as SqliteStatement;
    },
  };
}

/** A SQLite database (openSqliteDatabase), with its better-sqlite3 handle: for benchmarks' raw baselines. */
export interface SqliteDb extends Db {
  sqlite: Database.Database;
  /** Checkpoints off the request path once the process writes (a file opened for writing). */
  checkpointer?: Checkpointer;
}

export function openSqlite(file: string, readonly = false): Database.Database {
  if (file !== ':memory:' && !readonly) fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
  const sqlite = new BetterSqlite(file, { readonly });
  registerFunctions(sqlite);
  // First: switching a new file to WAL takes a lock for a moment, and two processes may open it at once.
  sqlite.pragma('busy_timeout = 5000');
  if (!readonly) sqlite.pragma('journal_mode = WAL');
  sqlite.pragma('foreign_keys = ON');
  // WAL makes NORMAL durable against application crashes; only a power loss can drop the last commits.
  sqlite.pragma('synchronous = NORMAL');
  sqlite.pragma('cache_size = -65536'); // 64 MiB page cache
  // A large write (a bulk load) may grow the write-ahead log; once it is reset, keep at most 64 MiB of it on disk.
  if (!readonly) sqlite.pragma('journal_size_limit = 67108864');
  sqlite.pragma('temp_store = MEMORY');
  sqlite.pragma('mmap_size = 268435456');
  // Lets SQLite sort with a helper thread when it builds an index (bulk loads).
  sqlite.pragma('threads = 2');
  if (!readonly) {
    // Statistics for the planner, whole and only for the tables SQLite finds stale (never analysed,
    // or grown tenfold since): see statistics.ts. Best effort, without waiting: analysing writes
    // statistics, so it needs the write lock, and another process (an import's batch) may hold it for
    // longer than any busy timeout; a process that waited here started 5 s late and then crashed on
    // "database is locked". Statistics left stale are refreshed at the next start, at close, or
    // after a bulk load. Bounded: a table at a time, until OPEN_ANALYZE_MS is spent.
    refreshStaleSync(sqlite, true, OPEN_ANALYZE_MS);
  }
  return sqlite;
}

/** Page cache of a bulk load (Db.bulk), in KiB: 1 GiB at most, taken only as pages are read. */
const BULK_CACHE_KIB = 1 << 20;
/**
 * Documents FTS5 holds in memory before it writes them out as a segment, during a bulk load: 64 MiB
 * (its default is 1 MiB, about 3,000 contacts). Each segment written is one more to merge later:
 * with a rebuild's transactions of 50,000 documents, a million contacts make 20 segments instead of
 * hundreds, and their merges rewrite the index fewer times.
 */
const BULK_FTS_PENDING_BYTES = 64 << 20;
const FTS_DEFAULT_PENDING_BYTES = 1 << 20;

/**
 * Sets the full-text index's 'hashsize' (pending bytes before a segment is written); returns the
 * value to restore, or undefined when there is no index (before migrations) or the write lock is
 * another process's (best effort: the default only means smaller segments).
 */
function ftsHashsize(sqlite: Database.Database, bytes: number): number | undefined {
  try {
    if (!sqlite.prepare(`SELECT 1 FROM sqlite_schema WHERE name = 'search_index'`).get()) return undefined;
    // A special INSERT of FTS5's: its value cannot be a bound parameter.
    sqlite.exec(`INSERT INTO search_index(search_index, rank) VALUES ('hashsize', ${Math.trunc(bytes)})`);
    return FTS_DEFAULT_PENDING_BYTES;
  } catch (e) {
    if (isSqliteBusy(e)) return undefined;
    throw e;
  }
}

/** Opens a SQLite file (or ':memory:'). */
export function openSqliteDatabase(opts: OpenOptions): SqliteDb {
  if (isPostgresUrl(opts.file)) throw new Error('openSqliteDatabase opens SQLite files; use openDatabase for a postgres:// URL');
  const sqlite = openSqlite(opts.file, opts.readonly);
  // The dialect waits for other processes' write locks itself, off the event loop (see
  // dialect.ts): SQLite's own busy handler would block this thread while it waits.
  sqlite.pragma('busy_timeout = 0');
  const checkpointer = opts.readonly || opts.file === ':memory:' ? undefined : new Checkpointer(opts.file, sqlite);
  const dialect = new ImmediateSqliteDialect(
    { database: cachingDatabase(sqlite) },
    { sqlite, lockWaitMs: opts.lockWaitMs ?? DEFAULT_LOCK_WAIT_MS, ...(checkpointer ? { onBegin: () => checkpointer.wrote() } : {}) },
  );
  const kysely = new Kysely<Tables>({ dialect });
  let closed = false;
  const totalChanges = sqlite.prepare('SELECT total_changes()').pluck();
  // Read on every request by the caches that follow the file (counts, schema, tokens): prepared once
  // (better-sqlite3's pragma() prepares its statement anew on each call).
  const dataVersion = sqlite.prepare('PRAGMA data_version').pluck();
  const readPool = opts.file !== ':memory:' && (opts.readWorkers ?? 0) > 0 ? new ReadPool(opts.file, opts.readWorkers) : undefined;
  const db: SqliteDb = {
    kysely,
    // One file, one set of tables: every workspace's rows in them, keyed by workspace_id.
    forWorkspace: () => db,
    get origin() {
      return db;
    },
    adapter: sqliteAdapter,
    search: sqliteSearch,
    file: opts.file,
    sqlite,
    dataVersion: () => dataVersion.get() as number,
    changeVersion: (seen) => (sqlite.inTransaction ? null : `${seen ?? dataVersion.get()}:${totalChanges.get()}`),
    releaseCache: () => releaseCache(sqlite),
    ...(readPool ? { readPool } : {}),
    ...(checkpointer ? { checkpointer } : {}),
    ...(opts.readonly ? {} : { groupWrite: groupCommit(kysely) }),
    async bulk(fn) {
      if (opts.readonly || opts.file === ':memory:') return fn();
      const before = sqlite.pragma('wal_autocheckpoint', { simple: true }) as number;
      const cache = sqlite.pragma('cache_size', { simple: true }) as number;
      sqlite.pragma('wal_autocheckpoint = 16384');
      // The full-text index merges its segments as it grows: with a million documents those merges
      // read far more than 64 MiB, and a cache that small rereads the same pages from the file
      // (measured: 5,000 documents in 0.9 s instead of 0.14 s). 256 MiB was not enough either: past
      // about 800,000 contacts the index and the records read beside it outgrew it, and the build
      // fell from 7,000-8,000 to 1,000-1,500 documents/s (bench:search, issue 16). The cache takes
      // pages as they are read, so the limit costs memory only on a load that large.
      sqlite.pragma(`cache_size = -${BULK_CACHE_KIB}`);
      const hashsize = ftsHashsize(sqlite, BULK_FTS_PENDING_BYTES);
      checkpointer?.start();
      try {
        return await fn();
      } finally {
        if (hashsize !== undefined) ftsHashsize(sqlite, hashsize);
        sqlite.pragma(`cache_size = ${cache}`);
        // The checkpointer may have started during the load: then its fallback is the setting.
        sqlite.pragma(`wal_autocheckpoint = ${checkpointer?.running ? FALLBACK_PAGES : before}`);
        // Best effort (a PASSIVE checkpoint never waits; another process may be checkpointing).
        try {
          sqlite.pragma('wal_checkpoint(PASSIVE)');
        } catch (e) {
          // biome-ignore lint/correctness/noUnsafeFinally: a checkpoint failing for another reason than a lock is a fault worth raising
          if (!isSqliteBusy(e)) throw e;
        }
      }
    },
    async close() {
      if (closed) return;
      closed = true;
      await readPool?.close();
      await checkpointer?.close();
      if (!opts.readonly && opts.file !== ':memory:') {
        try {
          // The tables this connection used that SQLite finds stale, whole (see statistics.ts).
          refreshStaleSync(sqlite, false, OPEN_ANALYZE_MS);
        } catch {
          /* closing anyway */
        }
      }
      await kysely.destroy();
    },
  };
  return db;
}
