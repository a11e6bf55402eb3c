import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { openDatabase } from '../src/db/database.js';

/** The SQLite file as the service opens it: bulk mode for long loads, and what it leaves behind. */

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'crm-db-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const pragma = (db: ReturnType<typeof openDatabase>, name: string) => db.sqlite!.pragma(name, { simple: true }) as number;

describe('bulk mode', () => {
  it('lets the write-ahead log grow during a bulk load, checkpoints it at the end, and restores the setting even when the load fails', async () => {
    const db = openDatabase({ file: path.join(dir, 'bulk.db') });
    try {
      expect(pragma(db, 'wal_autocheckpoint')).toBe(1000);
      expect(pragma(db, 'journal_size_limit')).toBe(64 * 2 ** 20);
      db.sqlite!.exec('CREATE TABLE t (x TEXT)');
      const insert = db.sqlite!.prepare('INSERT INTO t (x) VALUES (?)');
      const during = await db.bulk(async () => {
        // About 6 MiB in small transactions: with the default setting, checkpoints would run in between.
        for (let b = 0; b < 6; b++) db.sqlite!.transaction(() => { for (let i = 0; i < 1000; i++) insert.run('x'.repeat(1000)); })();
        const walPages = (db.sqlite!.pragma('wal_checkpoint(NOOP)') as { log: number }[])[0]!.log;
        return { setting: pragma(db, 'wal_autocheckpoint'), cache: pragma(db, 'cache_size'), walPages };
      });
      expect(during.setting).toBe(16384);
      expect(during.cache).toBe(-262144);
      expect(pragma(db, 'cache_size')).toBe(-65536);
      expect(during.walPages).toBeGreaterThan(1000);
      expect(pragma(db, 'wal_autocheckpoint')).toBe(1000);
      // Checkpointed at the end: every frame of the log is in the database file.
      const [after] = db.sqlite!.pragma('wal_checkpoint(NOOP)') as { log: number; checkpointed: number }[];
      expect(after!.checkpointed).toBe(after!.log);

      await expect(db.bulk(async () => { throw new Error('load failed'); })).rejects.toThrow('load failed');
      expect(pragma(db, 'wal_autocheckpoint')).toBe(1000);
      expect((db.sqlite!.prepare('SELECT COUNT(*) AS n FROM t').get() as { n: number }).n).toBe(6000);
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
