import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type Database from 'better-sqlite3';
import { sql } from 'kysely';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { openDatabase } from '../src/db/database.js';
import { workspaceSchema } from '../src/db/postgres/open.js';
import type { SqliteDb } from '../src/db/sqlite/open.js';
import { analyzeStatements, staleTables } from '../src/db/sqlite/statistics.js';
import { importFile } from '../src/import-file.js';
import { createRecords } from '../src/services/records.js';
import { createObject } from '../src/services/schema.js';
import { seedWorkspace } from '../src/services/seed.js';
import { freshDb, makeWorkspace, onPostgres, sqlGet, tableOf } from './helpers.js';

/**
 * Planner statistics that match the data (issue 16): after a seed, an import, and as a table grows,
 * SQLite's statistics are those of a full ANALYZE (every row of every index read), not a sample of
 * the first rows in index order (which said "about 1,000 rows per status" on 166,667).
 */

const stat1 = (s: Database.Database, table: string) => s.prepare('SELECT idx, stat FROM sqlite_stat1 WHERE tbl = ? ORDER BY idx').all(table) as { idx: string; stat: string }[];

/** The statistics a manual full ANALYZE gives, restoring nothing (they are the same by construction if the product's were whole). */
function fullAnalyze(s: Database.Database, table: string) {
  const limit = s.pragma('analysis_limit', { simple: true });
  s.pragma('analysis_limit = 0');
  s.exec(`ANALYZE "${table}"`);
  s.pragma(`analysis_limit = ${limit}`);
  return stat1(s, table);
}

/** Rows per value of the first column of an index, as the statistics say. */
const perValue = (rows: { idx: string; stat: string }[], idx: string) => Number(rows.find((r) => r.idx === idx)?.stat.split(' ')[1]);

describe.skipIf(onPostgres)('SQLite statistics', () => {
  it('after a seed: whole, as a full ANALYZE gives them, and the filtered sorted list walks the amount index', async () => {
    const db = (await freshDb()) as SqliteDb;
    try {
      const w = await makeWorkspace(db, 'stats');
      await seedWorkspace(w.ctx, { companies: 20, contacts: 50, opportunities: 12_000, seed: 7, activity: false, searchIndex: false, matchKeys: false });
      const opps = await tableOf(db, w.workspace.id, 'opportunities');
      const product = stat1(db.sqlite, opps);
      expect(product.length).toBeGreaterThan(3);
      // Six statuses over 12,000 rows: about 2,000 each, more than a 1,000-row sample can see.
      expect(perValue(product, `${opps}__status`)).toBeGreaterThan(1000);
      expect(fullAnalyze(db.sqlite, opps)).toEqual(product);
      const plan = db.sqlite
        .prepare(
          `EXPLAIN QUERY PLAN SELECT id FROM "${opps}" WHERE status IN ('open', 'proposal') AND amount >= 500000 AND close_date BETWEEN '2000-01-01' AND '2100-01-01' ORDER BY amount DESC, seq DESC LIMIT 50`,
        )
        .all() as { detail: string }[];
      expect(plan.map((p) => p.detail).join('\n')).not.toMatch(/TEMP B-TREE/);
    } finally {
      await db.close();
    }
  });

  it('after an import: the stale table analysed whole', async () => {
    const db = (await freshDb()) as SqliteDb;
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'crm-stats-'));
    try {
      const w = await makeWorkspace(db, 'imp');
      const file = path.join(dir, 'c.csv');
      fs.writeFileSync(file, `first_name,last_name\n${Array.from({ length: 3000 }, (_, i) => `F${i % 3},L${i}`).join('\n')}\n`);
      const r = await importFile(w.ctx, { object: 'contacts', file, out: fs.createWriteStream('/dev/null') });
      expect(r.created).toBe(3000);
      const contacts = await tableOf(db, w.workspace.id, 'contacts');
      const product = stat1(db.sqlite, contacts);
      expect(product.length).toBeGreaterThan(0);
      expect(product.every((x) => x.stat.startsWith('3000 '))).toBe(true);
      expect(fullAnalyze(db.sqlite, contacts)).toEqual(product);
    } finally {
      await db.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('as a table grows tenfold: stale, then analysed whole now and then, at close and at the next open', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'crm-stats-'));
    const file = path.join(dir, 'crm.db');
    try {
      let db = openDatabase({ file }) as SqliteDb;
      const { migrate } = await import('../src/db/migrations.js');
      await migrate(db);
      const w = await makeWorkspace(db, 'grow');
      const contacts = await tableOf(db, w.workspace.id, 'contacts');
      await createRecords(
        w.ctx,
        'contacts',
        Array.from({ length: 100 }, (_, i) => ({ first_name: `A${i % 2}` })),
      );
      await db.adapter.analyze(db.kysely as never, false);
      expect(stat1(db.sqlite, contacts)[0]!.stat).toMatch(/^100 /);
      await createRecords(
        w.ctx,
        'contacts',
        Array.from({ length: 1500 }, (_, i) => ({ first_name: `B${i % 3}` })),
        { max: 2000 },
      );
      expect(staleTables(db.sqlite, true)).toContain(contacts);
      // "Now and then" (an import of a few rows): the stale table, whole.
      await db.adapter.analyze(db.kysely as never, false);
      expect(staleTables(db.sqlite, true)).not.toContain(contacts);
      const now = stat1(db.sqlite, contacts);
      expect(now[0]!.stat).toMatch(/^1600 /);
      expect(fullAnalyze(db.sqlite, contacts)).toEqual(now);
      // Another table grown well past tenfold (SQLite's test estimates the rows from the b-tree,
      // roughly), then closed: closing, or else the next open, analyses it whole (best effort).
      const companies = await tableOf(db, w.workspace.id, 'companies');
      await createRecords(
        w.ctx,
        'companies',
        Array.from({ length: 100 }, (_, i) => ({ name: `Co${i}` })),
      );
      await db.adapter.analyze(db.kysely as never, false);
      expect(stat1(db.sqlite, companies)[0]!.stat).toMatch(/^100 /);
      for (let i = 0; i < 3; i++)
        await createRecords(
          w.ctx,
          'companies',
          Array.from({ length: 2000 }, (_, j) => ({ name: `Co${i}-${j}`, industry: j % 2 ? 'software' : 'finance' })),
          { max: 2000 },
        );
      // Statistics stay as they were until a refresh (the close below, or the next open).
      expect(stat1(db.sqlite, companies)[0]!.stat).toMatch(/^100 /);
      await db.close();
      db = openDatabase({ file }) as SqliteDb;
      try {
        const reopened = stat1(db.sqlite, companies);
        expect(reopened[0]!.stat).toMatch(/^6100 /);
        expect(fullAnalyze(db.sqlite, companies)).toEqual(reopened);
        expect(staleTables(db.sqlite, true)).toEqual([]);
      } finally {
        await db.close();
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('one index per statement, so a writer waits at most one index scan', async () => {
    const db = (await freshDb()) as SqliteDb;
    try {
      const w = await makeWorkspace(db, 'idx');
      const opps = await tableOf(db, w.workspace.id, 'opportunities');
      const indexes = db.sqlite.prepare(`SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name = ?`).pluck().all(opps) as string[];
      const stmts = analyzeStatements(db.sqlite, opps);
      expect(stmts.length).toBe(indexes.length);
      expect(stmts.every((s) => /^ANALYZE main\."[^"]+"$/.test(s))).toBe(true);
    } finally {
      await db.close();
    }
  });
});

describe('statistics after a load, either dialect', () => {
  it('analyze of named tables and of stale ones succeeds and leaves the data as it was', async () => {
    const db = await freshDb();
    try {
      const w = await makeWorkspace(db, 'any');
      await createRecords(
        w.ctx,
        'contacts',
        Array.from({ length: 50 }, (_, i) => ({ first_name: `N${i}` })),
      );
      const contacts = await tableOf(db, w.workspace.id, 'contacts');
      const k = db.forWorkspace(w.workspace.id).kysely as never;
      await db.adapter.analyze(k, true, [contacts, 'no_such_table']);
      await db.adapter.analyze(k, false);
      await db.adapter.analyze(k, true);
      expect(Number((await sqlGet<{ n: number }>(db.forWorkspace(w.workspace.id), sql`SELECT count(*) AS n FROM ${sql.table(contacts)}`))!.n)).toBe(50);
    } finally {
      await db.close();
    }
  });
});

describe.runIf(onPostgres)('PostgreSQL statistics after a load', () => {
  it('analyses the tables named and those never analysed or grown tenfold, not every other object of the workspace', async () => {
    const db = await freshDb();
    try {
      const w = await makeWorkspace(db, 'pgstats');
      const view = db.forWorkspace(w.workspace.id);
      const k = view.kysely as never;
      const [contacts, companies] = [await tableOf(db, w.workspace.id, 'contacts'), await tableOf(db, w.workspace.id, 'companies')];
      // pg_class.reltuples: -1 until a table is first analysed (or vacuumed), then the row count it saw.
      const tuples = async (t: string) => Number((await sqlGet<{ n: number }>(view, sql`SELECT reltuples AS n FROM pg_class WHERE oid = to_regclass(${t})`))!.n);
      const many = (n: number, from = 0) => Array.from({ length: n }, (_, i) => ({ name: `Company ${from + i}` }));
      await createRecords(w.ctx, 'companies', many(30), { max: 10_000, readBack: false });
      await db.adapter.analyze(k, true);
      expect(await tuples(companies)).toBe(30);

      // A new object's table, never analysed; five more companies (not tenfold); the load names contacts.
      await createObject(w.ctx, { name: 'gadgets', fields: [{ name: 'title', type: 'TEXT' }] });
      const gadgets = await tableOf(db, w.workspace.id, 'gadgets');
      await createRecords(w.ctx, 'gadgets', [{ title: 'a' }, { title: 'b' }, { title: 'c' }]);
      await createRecords(w.ctx, 'companies', many(5, 30), { max: 10_000, readBack: false });
      await createRecords(
        w.ctx,
        'contacts',
        Array.from({ length: 50 }, (_, i) => ({ first_name: `N${i}` })),
      );
      await db.adapter.analyze(k, true, [contacts]);
      expect(await tuples(contacts)).toBe(50);
      expect(await tuples(gadgets)).toBe(3);
      expect(await tuples(companies)).toBe(30);

      // Companies grown far past tenfold their pages at the last ANALYZE: stale, analysed with the load.
      await createRecords(w.ctx, 'companies', many(2000, 35), { max: 10_000, readBack: false });
      await db.adapter.analyze(k, true, [contacts]);
      expect(await tuples(companies)).toBe(2035);
    } finally {
      await db.close();
    }
  });

  it("does not wait on another workspace's tables: a schema change holding one there leaves this load's statistics free", async () => {
    const db = await freshDb();
    const holder = new pg.Client({ connectionString: db.file });
    try {
      const mine = await makeWorkspace(db, 'mine');
      const theirs = await makeWorkspace(db, 'theirs');
      await createRecords(mine.ctx, 'contacts', [{ first_name: 'Ana' }, { first_name: 'Ben' }]);
      // Another workspace's table under an exclusive lock (as a custom field's table rewrite holds it).
      await holder.connect();
      const theirTable = `${workspaceSchema(db.sharedSchema!, theirs.workspace.id)}.${await tableOf(db, theirs.workspace.id, 'contacts')}`;
      // Analysed once (as any table soon is): nothing about it is settled without its size.
      await holder.query(`ANALYZE ${theirTable}`);
      await holder.query('BEGIN');
      await holder.query(`LOCK TABLE ${theirTable} IN ACCESS EXCLUSIVE MODE`);
      const view = db.forWorkspace(mine.workspace.id);
      const contacts = await tableOf(db, mine.workspace.id, 'contacts');
      const started = Date.now();
      const waited = await Promise.race([db.adapter.analyze(view.kysely as never, true, [contacts]).then(() => 'done'), new Promise((r) => setTimeout(() => r('still waiting after 10 s'), 10_000))]);
      expect(waited, `analyze of workspace ${mine.workspace.id} while ${theirTable} is locked`).toBe('done');
      expect(Number((await sqlGet<{ n: number }>(view, sql`SELECT reltuples AS n FROM pg_class WHERE oid = to_regclass(${contacts})`))!.n)).toBe(2);
      expect(Date.now() - started).toBeLessThan(10_000);
    } finally {
      await holder.end().catch(() => undefined);
      await db.close();
    }
  }, 60_000);
});
