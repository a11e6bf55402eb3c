import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { sql } from 'kysely';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { type Db, openDatabase } from '../src/db/database.js';
import { FALLBACK_PAGES, START_AFTER_WRITES } from '../src/db/sqlite/checkpointer.js';
import type { SqliteDb } from '../src/db/sqlite/open.js';
import { freshDb, onPostgres, sqlAll, sqlGet, sqlRun } from './helpers.js';

/** The SQLite file as the service opens it: bulk mode for long loads, and what it leaves behind. */

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'crm-db-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

/** A pragma's value on the database's own connection (pragmas are per connection). */
const pragma = async (db: Db, name: string) => Object.values((await sqlGet(db, `PRAGMA ${name}`))!)[0] as number;
const walCheckpoint = async (db: Db) => (await sqlAll<{ log: number; checkpointed: number }>(db, 'PRAGMA wal_checkpoint(NOOP)'))[0]!;

describe('bulk mode', () => {
  // SQLite's write-ahead log and page cache: PostgreSQL has neither setting per connection (its bulk is a plain call, below).
  it.skipIf(onPostgres)('lets the write-ahead log grow during a bulk load, checkpoints it at the end, and restores the setting even when the load fails', async () => {
    const db = openDatabase({ file: path.join(dir, 'bulk.db') });
    try {
      expect(await pragma(db, 'wal_autocheckpoint')).toBe(1000);
      expect(await pragma(db, 'journal_size_limit')).toBe(64 * 2 ** 20);
      await sqlRun(db, 'CREATE TABLE t (x TEXT)');
      const during = await db.bulk(async () => {
        // About 6 MiB in small transactions: with the default setting, checkpoints would run in between.
        for (let b = 0; b < 6; b++)
          await db.kysely
            .transaction()
            .execute((trx) => sqlRun(trx, sql`WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000) INSERT INTO t (x) SELECT replace(hex(zeroblob(500)), '0', 'x') FROM n`));
        const walPages = (await walCheckpoint(db)).log;
        return { setting: await pragma(db, 'wal_autocheckpoint'), cache: await pragma(db, 'cache_size'), walPages };
      });
      expect(during.setting).toBe(16384);
      expect(during.cache).toBe(-1048576);
      expect(await pragma(db, 'cache_size')).toBe(-65536);
      expect(during.walPages).toBeGreaterThan(1000);
      // The load started the checkpointing thread: SQLite's own checkpoint is its fallback from now on.
      expect(await pragma(db, 'wal_autocheckpoint')).toBe(FALLBACK_PAGES);
      // Checkpointed at the end: every frame of the log is in the database file. The load's own
      // PASSIVE checkpoint finds the checkpointing thread's one under way when the two meet (busy,
      // it gives way): then that one finishes the copy a moment later, with no write in between.
      await vi.waitFor(
        async () => {
          const after = await walCheckpoint(db);
          expect(after.checkpointed).toBe(after.log);
        },
        { timeout: 5_000, interval: 20 },
      );

      await expect(
        db.bulk(async () => {
          throw new Error('load failed');
        }),
      ).rejects.toThrow('load failed');
      expect(await pragma(db, 'wal_autocheckpoint')).toBe(FALLBACK_PAGES);
      expect((await sqlGet<{ n: number }>(db, 'SELECT COUNT(*) AS n FROM t'))!.n).toBe(6000);
      expect((await sqlGet<{ n: number }>(db, 'SELECT min(length(x)) AS n FROM t'))!.n).toBe(1000);
    } finally {
      await db.close();
    }
  });

  it.skipIf(onPostgres)("raises the full-text index's pending limit during a bulk load (fewer, larger segments) and puts it back after, a failed load too", async () => {
    const { migrate } = await import('../src/db/migrations.js');
    const db = openDatabase({ file: path.join(dir, 'bulk-fts.db') });
    try {
      await migrate(db);
      const hashsize = async () => (await sqlGet<{ v: number }>(db, `SELECT v FROM search_index_config WHERE k = 'hashsize'`))?.v;
      expect(await db.bulk(hashsize)).toBe(64 * 2 ** 20);
      expect(await hashsize()).toBe(2 ** 20);
      await expect(
        db.bulk(async () => {
          expect(await hashsize()).toBe(64 * 2 ** 20);
          throw new Error('load failed');
        }),
      ).rejects.toThrow('load failed');
      expect(await hashsize()).toBe(2 ** 20);
    } finally {
      await db.close();
    }
  });

  it.runIf(onPostgres)('is a plain call on PostgreSQL: it answers what the load answers, and a failed load fails it', async () => {
    const db = await freshDb();
    try {
      expect(await db.bulk(async () => 42)).toBe(42);
      await expect(
        db.bulk(async () => {
          throw new Error('load failed');
        }),
      ).rejects.toThrow('load failed');
    } finally {
      await db.close();
    }
  });

  it('is a plain call on an in-memory database', async () => {
    const db = openDatabase({ file: ':memory:' });
    try {
      expect(await db.bulk(async () => 42)).toBe(42);
    } finally {
      await db.close();
    }
  });
});

describe('checkpoints off the request path', () => {
  // SQLite's write-ahead log; PostgreSQL checkpoints in its own server processes.
  const frames = (file: string) => {
    try {
      return Math.max(0, (fs.statSync(`${file}-wal`).size - 32) / (4096 + 24));
    } catch {
      return 0;
    }
  };
  const writes = async (db: Db, n: number, from = 0) => {
    for (let i = from; i < from + n; i++) await db.kysely.transaction().execute((trx) => sqlRun(trx, sql`INSERT INTO t (x) VALUES (${`row ${i} ${'y'.repeat(3000)}`})`));
  };

  it.skipIf(onPostgres)('leaves a process that writes a little to SQLite, then checkpoints on a thread of its own, the log bounded and every write kept', async () => {
    const file = path.join(dir, 'checkpointer.db');
    const db = openDatabase({ file }) as SqliteDb;
    try {
      await sqlRun(db, 'CREATE TABLE t (x TEXT)');
      await writes(db, START_AFTER_WRITES - 1);
      expect(db.checkpointer!.running).toBe(false);
      expect(await pragma(db, 'wal_autocheckpoint')).toBe(1000);

      await writes(db, 1, START_AFTER_WRITES - 1);
      expect(db.checkpointer!.running).toBe(true);
      // SQLite's own checkpoint stays only as a fallback, should the thread fall behind.
      expect(await pragma(db, 'wal_autocheckpoint')).toBe(FALLBACK_PAGES);

      // About 5 pages a write (a row of 3 KB and the table's pages): 20,000 pages in all, past the fallback.
      await writes(db, 4000, START_AFTER_WRITES);
      const stats = (await db.checkpointer!.stats())!;
      expect(stats.runs).toBeGreaterThan(0);
      // The thread copied pages back as they came: the log was never left to grow past the fallback and a commit's worth.
      expect(stats.frames).toBeLessThan(FALLBACK_PAGES + 1000);
      expect(frames(file)).toBeLessThan(FALLBACK_PAGES + 1000);
    } finally {
      await db.close();
    }
    // Closed: the thread stopped first, the main connection's close checkpointed the rest.
    const again = openDatabase({ file, readonly: true });
    try {
      expect((await sqlGet<{ n: number }>(again, 'SELECT COUNT(*) AS n FROM t'))!.n).toBe(START_AFTER_WRITES + 4000);
    } finally {
      await again.close();
    }
  });

  it.skipIf(onPostgres)('starts the thread at once for a bulk load, which leaves its checkpoints to it', async () => {
    const file = path.join(dir, 'checkpointer-bulk.db');
    const db = openDatabase({ file }) as SqliteDb;
    try {
      await sqlRun(db, 'CREATE TABLE t (x TEXT)');
      const during = await db.bulk(async () => {
        const running = db.checkpointer!.running;
        // About 5 pages a write: 5,000 pages, past SQLite's own threshold of 1,000 during a load.
        await writes(db, 1000);
        await new Promise((r) => setTimeout(r, 300));
        return { running, stats: (await db.checkpointer!.stats())!, setting: await pragma(db, 'wal_autocheckpoint') };
      });
      expect(during.running).toBe(true);
      expect(during.setting).toBe(16384);
      expect(during.stats.runs).toBeGreaterThan(0);
      // The thread copied the load's pages back while it ran (a checkpoint of its own still under way
      // when this one asks makes this one give way: it finishes a moment later, as above).
      await vi.waitFor(
        async () => {
          const log = await walCheckpoint(db);
          expect(log.checkpointed).toBe(log.log);
        },
        { timeout: 5_000, interval: 20 },
      );
    } finally {
      await db.close();
    }
  });

  it.skipIf(onPostgres)('lets a script that closes its database last run to its end (the thread waited for, not left behind)', () => {
    // The thread does not keep a process alive by itself; close() must still wait for it. A script
    // with nothing else to do ended inside close() (exit code 13, an unsettled await) before it did.
    const script = path.join(dir, 'close-last.mts');
    const database = path.join(path.dirname(fileURLToPath(import.meta.url)), '../src/db/database.ts');
    fs.writeFileSync(
      script,
      `import { openDatabase } from ${JSON.stringify(database)};
const db = openDatabase({ file: ${JSON.stringify(path.join(dir, 'close-last.db'))} });
await db.kysely.schema.createTable('t').addColumn('x', 'text').execute();
for (let i = 0; i < ${START_AFTER_WRITES * 2}; i++) await db.kysely.transaction().execute((trx) => trx.insertInto('t').values({ x: String(i) }).execute());
const running = db.checkpointer.running;
await db.close();
console.log(JSON.stringify({ running, closed: true }));
`,
    );
    const r = spawnSync(process.execPath, ['--import', 'tsx', script], { encoding: 'utf8', timeout: 60_000 });
    expect({ status: r.status, stderr: r.stderr }).toEqual({ status: 0, stderr: '' });
    expect(JSON.parse(r.stdout)).toEqual({ running: true, closed: true });
  });

  it.skipIf(onPostgres)('hands the checkpoints back to SQLite when the thread cannot run (here: the file gone from under it)', async () => {
    const file = path.join(dir, 'checkpointer-gone.db');
    const db = openDatabase({ file }) as SqliteDb;
    try {
      await sqlRun(db, 'CREATE TABLE t (x TEXT)');
      // The main connection keeps the file open; the thread, opening it by name, finds nothing.
      fs.rmSync(file);
      db.checkpointer!.start();
      expect(db.checkpointer!.running).toBe(true);
      // The thread starts, fails to open the file and ends: given time on a loaded machine, not a count of polls.
      await vi.waitFor(() => expect(db.checkpointer!.running).toBe(false), { timeout: 20_000, interval: 20 });
      expect(await pragma(db, 'wal_autocheckpoint')).toBe(1000);
      await writes(db, 10);
      expect((await sqlGet<{ n: number }>(db, 'SELECT COUNT(*) AS n FROM t'))!.n).toBe(10);
    } finally {
      await db.close();
    }
  });

  it.skipIf(onPostgres)('starts no thread for a file opened read-only or a database in memory', async () => {
    const mem = openDatabase({ file: ':memory:' }) as SqliteDb;
    const ro = openDatabase({ file: path.join(dir, 'checkpointer.db'), readonly: true }) as SqliteDb;
    try {
      expect(mem.checkpointer).toBeUndefined();
      expect(ro.checkpointer).toBeUndefined();
    } finally {
      await mem.close();
      await ro.close();
    }
  });
});

describe('PostgreSQL URL', () => {
  it.runIf(onPostgres)("keeps the URL's own session options beside its schema, the UTC time zone and the lock wait", async () => {
    const first = await freshDb();
    const location = new URL(first.file);
    await first.close();
    // The same kind of URL with options of its own: the tables go to its schema, not public.
    location.searchParams.set('schema', `${location.searchParams.get('schema')}_o`);
    location.searchParams.set('options', '-c statement_timeout=4321 -c TimeZone=Asia/Tokyo');
    const { migrate } = await import('../src/db/migrations.js');
    const { dropSchemaOf } = await import('./helpers.js');
    const db = openDatabase({ file: location.toString() });
    try {
      await migrate(db);
      const s = location.searchParams.get('schema')!;
      expect(await sqlGet<{ t: string; z: string }>(db, sql`SELECT current_setting('statement_timeout') AS t, current_setting('TimeZone') AS z`)).toEqual({ t: '4321ms', z: 'UTC' });
      const where = await sqlAll<{ schemaname: string }>(db, sql`SELECT schemaname FROM pg_tables WHERE tablename = 'workspaces' AND schemaname IN (${s}, 'public')`);
      expect(where.map((r) => r.schemaname)).toEqual([s]);
    } finally {
      await db.close();
      await dropSchemaOf(location.toString());
    }
  });
});

describe('heavy reads on PostgreSQL', () => {
  it.runIf(onPostgres)('a bounded read is cancelled on the server as soon as its caller goes away, not at its deadline', async () => {
    const db = await freshDb();
    try {
      const ac = new AbortController();
      const started = performance.now();
      const read = db.boundedRead!(sql`SELECT pg_sleep(20) AS slept, 'crm-abort-probe' AS tag`.compile(db.kysely), 60_000, ac.signal).then(
        () => 'finished',
        (e: unknown) => e,
      );
      const running = () => sqlAll(db, sql`SELECT pid FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%crm-abort-probe%' AND pid <> pg_backend_pid()`);
      await expect.poll(async () => (await running()).length, { timeout: 5000, interval: 20 }).toBe(1);
      ac.abort();
      const outcome = await read;
      expect(outcome).not.toBe('finished');
      expect(performance.now() - started).toBeLessThan(10_000);
      await expect.poll(async () => (await running()).length, { timeout: 5000, interval: 20 }).toBe(0);
      // A caller already gone never starts the statement.
      await expect(db.boundedRead!(sql`SELECT 1`.compile(db.kysely), 60_000, AbortSignal.abort())).rejects.toThrow();
    } finally {
      await db.close();
    }
  });
});
