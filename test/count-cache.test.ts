import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDatabase } from '../src/db/database.js';
import { rememberedCountHits } from '../src/services/count-cache.js';
import { createRecord } from '../src/services/records.js';
import { call, ctxFor, freshPooledDb, onPostgres, type TestApp, tableOf, testAppOn } from './helpers.js';

/**
 * A list's total is an exact count of every match; it is remembered while the database is
 * unchanged (src/services/count-cache.ts), so the pages of one listing count once. Whatever is
 * remembered, every total here is checked against what the records are: after creates, updates,
 * deletes, another connection's writes, dry runs and refused writes, on the main connection and on
 * the read pool (a heavy listing).
 */

let t: TestApp;
const api = (method: string, url: string, body?: unknown) => call(t.app, t.a.adminToken, method, `/api/v1${url}`, body);
const where = (field: string, operator: string, value: unknown) => ({ operator: 'and', conditions: [{ field, operator, value }] });
const CITY = where('city', 'eq', 'Tallinn');
/** A listing of the read pool's kind (a condition matching inside text). */
const INSIDE = where('last_name', 'contains', 'ountcach');

async function total(filter: unknown): Promise<number> {
  const r = await api('POST', '/records/contacts/search', { filter, limit: 2 });
  expect(r.status, JSON.stringify(r.body)).toBe(200);
  return r.body.total;
}

beforeAll(async () => {
  t = await testAppOn(await freshPooledDb(2));
  const r = await api('POST', '/records/contacts/batch/create', {
    records: Array.from({ length: 30 }, (_, i) => ({ first_name: `C${i}`, last_name: 'Countcache', city: i % 3 === 0 ? 'Tallinn' : 'Tartu', email: `c${i}@count.test` })),
  });
  expect(r.status).toBe(201);
});
afterAll(async () => {
  await t?.close();
});

describe('list totals', () => {
  it('every page of a listing answers the same exact total, counted once while nothing changes', async () => {
    // Four pages: the first counts, the other three are answered from memory. On PostgreSQL a
    // transaction anywhere on the server (another database's too: transaction ids are the server's,
    // and the other test files run beside this one) moves the snapshot, and the next page rightly
    // counts again: the server's snapshot is read before and after each try, and a try is judged
    // only where nothing moved it. A try after a moved one may find its first page remembered too
    // (the count made after the move still holds): fewer counts, not more.
    const snapshot = async () => (onPostgres ? (await sql<{ s: string }>`SELECT pg_current_snapshot()::text AS s`.execute(t.db.forWorkspace(t.a.workspace.id).kysely)).rows[0]!.s : 'sqlite');
    // Tries for up to 30 s on PostgreSQL: the files that run beside this one leave gaps between their writes.
    const until = Date.now() + 30_000;
    let judged = 0;
    for (let attempt = 0; judged === 0 && (attempt === 0 || (onPostgres && Date.now() < until)); attempt++) {
      const before = await snapshot();
      const hits = rememberedCountHits();
      const seen: string[] = [];
      let pages = 0;
      let cursor: string | null = null;
      do {
        const r: Awaited<ReturnType<typeof api>> = await api('POST', '/records/contacts/search', { filter: CITY, limit: 3, ...(cursor ? { cursor } : {}) });
        expect(r.status).toBe(200);
        expect(r.body.total).toBe(10);
        seen.push(...r.body.data.map((x: { id: string }) => x.id));
        cursor = r.body.next_cursor ?? r.body.nextCursor ?? null;
        pages++;
      } while (cursor);
      expect(pages).toBe(4);
      expect(new Set(seen).size).toBe(10);
      const remembered = rememberedCountHits() - hits;
      // The very first page of this listing has nothing to be answered from: it counts.
      if (attempt === 0) expect(remembered).toBeLessThanOrEqual(3);
      if ((await snapshot()) !== before) continue;
      judged++;
      const counted = pages - remembered;
      const why = `try ${attempt + 1}: pages counted while the server's snapshot stayed ${before}`;
      if (attempt === 0) expect(counted, why).toBe(1);
      else expect(counted, why).toBeLessThanOrEqual(1);
    }
    expect(judged, 'a try with no transaction anywhere on the server meanwhile').toBe(1);
  }, 60_000);

  it('a create, an update out of the filter and a delete each change the next total, on the main connection and on the read pool', async () => {
    expect(await total(CITY)).toBe(10);
    expect(await total(INSIDE)).toBe(30);
    const c = await api('POST', '/records/contacts', { first_name: 'New', last_name: 'Countcache', city: 'Tallinn' });
    expect(c.status).toBe(201);
    expect(await total(CITY)).toBe(11);
    expect(await total(INSIDE)).toBe(31);
    const u = await api('PATCH', `/records/contacts/${c.body.data.id}`, { city: 'Narva' });
    expect(u.status, JSON.stringify(u.body)).toBe(200);
    expect(await total(CITY)).toBe(10);
    expect(await total(INSIDE)).toBe(31);
    const d = await api('DELETE', `/records/contacts/${c.body.data.id}`);
    expect(d.status).toBe(200);
    expect(await total(INSIDE)).toBe(30);
    expect(await total(where('city', 'eq', 'Narva'))).toBe(0);
  });

  it("another connection's writes (another process on the file or database) are counted at once", async () => {
    expect(await total(CITY)).toBe(10);
    expect(await total(INSIDE)).toBe(30);
    const other = openDatabase({ file: t.db.file });
    try {
      const ctx = ctxFor(other.forWorkspace(t.a.workspace.id), t.a.workspace.id, t.a.admin.id, 'admin');
      await createRecord(ctx, 'contacts', { first_name: 'Elsewhere', last_name: 'Countcache', city: 'Tallinn' });
    } finally {
      await other.close();
    }
    expect(await total(CITY)).toBe(11);
    expect(await total(INSIDE)).toBe(31);
  });

  it("another connection's write counted while in flight is counted once it commits", async () => {
    const before = await total(CITY);
    const other = openDatabase({ file: t.db.file });
    try {
      const space = other.forWorkspace(t.a.workspace.id);
      const table = await tableOf(t.db, t.a.workspace.id, 'contacts');
      let commit!: () => void;
      const committing = new Promise<void>((resolve) => (commit = resolve));
      let written!: () => void;
      const wrote = new Promise<void>((resolve) => (written = resolve));
      const now = new Date().toISOString();
      const done = space.kysely.transaction().execute(async (trx) => {
        await sql`INSERT INTO ${sql.table(table)} (id, first_name, last_name, city, created_at, updated_at, created_by) VALUES (${'in-flight-1'}, ${'Flight'}, ${'Countcache'}, ${'Tallinn'}, ${now}, ${now}, ${t.a.admin.id})`.execute(
          trx,
        );
        written();
        await committing;
      });
      await wrote;
      // Not committed: not counted, and that count is what a later call may remember.
      expect(await total(CITY)).toBe(before);
      expect(await total(CITY)).toBe(before);
      commit();
      await done;
      expect(await total(CITY)).toBe(before + 1);
      expect(await total(CITY)).toBe(before + 1);
      await sql`DELETE FROM ${sql.table(table)} WHERE id = ${'in-flight-1'}`.execute(space.kysely);
      expect(await total(CITY)).toBe(before);
    } finally {
      await other.close();
    }
  });

  it('a listing that another connection empties answers no rows and a total of 0 at once (an empty page tells no state)', async () => {
    const VALGA = where('city', 'eq', 'Valga');
    for (const first_name of ['Va', 'Vb']) expect((await api('POST', '/records/contacts', { first_name, last_name: 'Emptied', city: 'Valga' })).status).toBe(201);
    // Counted, then remembered: the second answer is the memory's.
    expect(await total(VALGA)).toBe(2);
    expect(await total(VALGA)).toBe(2);
    const other = openDatabase({ file: t.db.file });
    try {
      const table = await tableOf(t.db, t.a.workspace.id, 'contacts');
      await sql`DELETE FROM ${sql.table(table)} WHERE last_name = ${'Emptied'}`.execute(other.forWorkspace(t.a.workspace.id).kysely);
    } finally {
      await other.close();
    }
    const r = await api('POST', '/records/contacts/search', { filter: VALGA, limit: 2 });
    expect(r.status).toBe(200);
    expect(r.body.data).toEqual([]);
    expect(r.body.total).toBe(0);
  });

  it('dry runs and refused writes leave the total as it was', async () => {
    expect(await total(CITY)).toBe(11);
    const bulk = await api('POST', '/bulk', { action: 'update', object: 'contacts', filter: CITY, values: { city: 'Parnu' }, dry_run: true });
    expect(bulk.status, JSON.stringify(bulk.body)).toBe(200);
    expect(bulk.body.data.matched).toBe(11);
    expect(await total(CITY)).toBe(11);
    expect(await total(where('city', 'eq', 'Parnu'))).toBe(0);
    // A batch refused as a whole (one duplicate email): nothing written, nothing counted.
    const refused = await api('POST', '/records/contacts/batch/create', {
      records: [
        { first_name: 'Ok', last_name: 'Countcache', city: 'Tallinn' },
        { first_name: 'Dup', last_name: 'Countcache', city: 'Tallinn', email: 'c0@count.test' },
      ],
    });
    expect(refused.status).toBeGreaterThanOrEqual(400);
    expect(await total(CITY)).toBe(11);
    expect(await total(INSIDE)).toBe(31);
    // Then the bulk update for real: every page's total follows it.
    const real = await api('POST', '/bulk', { action: 'update', object: 'contacts', filter: CITY, values: { city: 'Parnu' } });
    expect(real.status).toBe(200);
    expect(await total(CITY)).toBe(0);
    expect(await total(where('city', 'eq', 'Parnu'))).toBe(11);
  });
});
