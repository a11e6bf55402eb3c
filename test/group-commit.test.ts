import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDatabase } from '../src/db/database.js';
import { buildApp } from '../src/http/app.js';
import { withRollback } from '../src/services/dry-run.js';
import { createRecord } from '../src/services/records.js';
import { call, holdWriteLock, indexedDocs, matchKeys, onPostgres, silent, sqlAll, type TestApp, tableOf, testApp } from './helpers.js';

/**
 * Record writes that arrive together (SQLite: committed together, each in a savepoint of its own,
 * see src/db/sqlite/group-commit.ts; PostgreSQL: concurrent transactions). Whatever the grouping,
 * each write stands alone: its own success or error, its own workspace and user, its derived rows
 * (search document, match keys, timeline entry) with it or not at all, and nothing acknowledged
 * before it is committed.
 */

let t: TestApp;

beforeAll(async () => {
  t = await testApp({ file: true });
});
afterAll(async () => {
  await t?.close();
});

async function derivedOf(ws: TestApp['a'], ids: string[]) {
  const db = ws.ctx.db;
  const activity = await sqlAll<{ record_id: string; user_id: string; action: string }>(
    db,
    sql`SELECT record_id, user_id, action FROM activity WHERE object = 'contacts' AND workspace_id = ${ws.workspace.id}`,
  );
  const keys = [...new Set((await matchKeys(db, ws.workspace.id)).map((k) => k.record_id))].map((record_id) => ({ record_id }));
  const docs = (await indexedDocs(t.db, ws.workspace.id)).map((d) => d.record_id);
  const pick = <T extends { record_id: string }>(rows: T[]) => rows.filter((r) => ids.includes(r.record_id));
  return { activity: pick(activity), keys: pick(keys).map((k) => k.record_id), docs: docs.filter((d) => ids.includes(d)) };
}

describe('concurrent record writes', () => {
  it('each create answers for itself: the duplicates 409, the others 201 in their own workspace and user, with their derived rows', async () => {
    const taken = await call(t.app, t.a.adminToken, 'POST', '/api/v1/records/contacts', { first_name: 'Taken', email: 'taken@group.test' });
    expect(taken.status).toBe(201);
    const sends = Array.from({ length: 40 }, (_, i) => {
      const ws = i % 2 === 0 ? t.a : t.b;
      const token = i % 4 < 2 ? ws.adminToken : ws.memberToken;
      // Two of workspace A's creates reuse the taken email (a unique violation inside the write).
      const email = i === 10 || i === 30 ? 'TAKEN@group.test' : `grouped${i}@group.test`;
      return { i, ws, token, email, user: i % 4 < 2 ? ws.admin.id : ws.member.id };
    });
    const counts = t.db.groupWrite ? { ...t.db.groupWrite.counts } : null;
    const answers = await Promise.all(sends.map((s) => call(t.app, s.token, 'POST', '/api/v1/records/contacts', { first_name: `Grouped${s.i}`, last_name: 'Zephyrine', email: s.email })));
    if (!onPostgres) {
      // SQLite: they queued behind each other and were committed in far fewer transactions than writes.
      const writes = t.db.groupWrite!.counts.writes - counts!.writes;
      const transactions = t.db.groupWrite!.counts.transactions - counts!.transactions;
      expect(writes).toBe(40);
      expect(transactions).toBeLessThan(writes / 2);
    }
    for (const [k, s] of sends.entries()) {
      const r = answers[k]!;
      if (s.email === 'TAKEN@group.test') {
        expect(r.status, JSON.stringify(r.body)).toBe(409);
        expect(r.body).toMatchObject({ error: true, code: 'DUPLICATE_RECORD' });
        continue;
      }
      expect(r.status, JSON.stringify(r.body)).toBe(201);
      expect(r.body.data).toMatchObject({ first_name: `Grouped${s.i}`, email: s.email, created_by: s.user });
      // Read back through the other workspace: not there.
      const other = s.ws === t.a ? t.b : t.a;
      expect((await call(t.app, other.adminToken, 'GET', `/api/v1/records/contacts/${r.body.data.id}`)).status).toBe(404);
    }
    for (const ws of [t.a, t.b]) {
      const mine = sends.filter((s) => s.ws === ws);
      const ids = mine
        .map((s) => answers[sends.indexOf(s)]!)
        .filter((r) => r.status === 201)
        .map((r) => r.body.data.id as string);
      expect(ids.length).toBe(ws === t.a ? 18 : 20);
      const d = await derivedOf(ws, ids);
      // One 'created' entry per record, by the user who created it; a search document and match keys each.
      expect(
        d.activity
          .filter((x) => x.action === 'created')
          .map((x) => x.record_id)
          .sort(),
      ).toEqual([...ids].sort());
      for (const s of mine) {
        const r = answers[sends.indexOf(s)]!;
        if (r.status === 201) expect(d.activity.find((x) => x.record_id === r.body.data.id)!.user_id).toBe(s.user);
      }
      expect(d.keys.sort()).toEqual([...ids].sort());
      expect(d.docs.sort()).toEqual([...ids].sort());
      // Found by full-text search at once.
      const found = await call(t.app, ws.adminToken, 'GET', '/api/v1/search?q=Zephyrine&limit=50');
      expect(found.status).toBe(200);
      expect(found.body.data.map((h: { id: string }) => h.id).sort()).toEqual([...ids].sort());
    }
    // The refused ones left nothing: workspace A holds the taken email once.
    const table = await tableOf(t.db, t.a.workspace.id, 'contacts');
    const rows = await sqlAll(t.a.ctx.db, sql`SELECT id FROM ${sql.table(table)} WHERE lower(email) = 'taken@group.test'`);
    expect(rows.length).toBe(1);
  });

  it('updates and deletes beside creates: each lands', async () => {
    const made = await Promise.all(Array.from({ length: 12 }, (_, i) => createRecord(t.a.ctx, 'contacts', { first_name: `Mixed${i}` })));
    const ops = made.flatMap((m, i) => [
      i % 3 === 0 ? call(t.app, t.a.adminToken, 'DELETE', `/api/v1/records/contacts/${m.id}`) : call(t.app, t.a.adminToken, 'PATCH', `/api/v1/records/contacts/${m.id}`, { job_title: `Title ${i}` }),
      call(t.app, t.a.adminToken, 'POST', '/api/v1/records/contacts', { first_name: `Beside${i}` }),
    ]);
    const answers = await Promise.all(ops);
    for (const r of answers) expect([200, 201], JSON.stringify(r.body)).toContain(r.status);
    for (const [i, m] of made.entries()) {
      const r = await call(t.app, t.a.adminToken, 'GET', `/api/v1/records/contacts/${m.id}`);
      if (i % 3 === 0) expect(r.status).toBe(404);
      else expect(r.body.data.job_title).toBe(`Title ${i}`);
    }
  });

  it('a dry run beside concurrent creates writes nothing of its own; the creates commit', async () => {
    const before = (await call(t.app, t.a.adminToken, 'GET', '/api/v1/records/contacts?limit=1')).body.total as number;
    const [dry, ...real] = await Promise.all([
      // A dry run's writes run one after another (they share its transaction).
      withRollback(t.a.ctx, async (d) => {
        const out = [];
        for (let i = 0; i < 5; i++) out.push(await createRecord(d, 'contacts', { first_name: `Dry${i}` }));
        return out;
      }),
      ...Array.from({ length: 8 }, (_, i) => createRecord(t.a.ctx, 'contacts', { first_name: `Wet${i}` })),
    ]);
    expect((dry as unknown[]).length).toBe(5);
    expect(real.length).toBe(8);
    const after = await call(t.app, t.a.adminToken, 'GET', '/api/v1/records/contacts?limit=1');
    expect(after.body.total).toBe(before + 8);
    const dryLeft = await call(t.app, t.a.adminToken, 'POST', '/api/v1/records/contacts/search', {
      filter: { operator: 'and', conditions: [{ field: 'first_name', operator: 'starts_with', value: 'Dry' }] },
    });
    expect(dryLeft.status, JSON.stringify(dryLeft.body)).toBe(200);
    expect(dryLeft.body.data).toEqual([]);
  });

  it("a dry run's own writes made concurrently each succeed, one after another, and leave nothing", async () => {
    const before = (await call(t.app, t.a.adminToken, 'GET', '/api/v1/records/contacts?limit=1')).body.total as number;
    // They share the dry run's transaction: each takes its turn (they used to take the same search document id).
    const dry = await withRollback(t.a.ctx, (d) => Promise.all(Array.from({ length: 6 }, (_, i) => createRecord(d, 'contacts', { first_name: `Together${i}`, email: `together${i}@dry.test` }))));
    expect(dry.map((r) => r.first_name).sort()).toEqual(Array.from({ length: 6 }, (_, i) => `Together${i}`));
    // A failing one among them is refused alone: the others still succeed.
    const mixed = await withRollback(t.a.ctx, (d) =>
      Promise.allSettled([
        createRecord(d, 'contacts', { first_name: 'Fine1' }),
        createRecord(d, 'contacts', { first_name: 'Bad', no_such_field: 1 }),
        createRecord(d, 'contacts', { first_name: 'Fine2' }),
      ]),
    );
    expect(mixed.map((m) => m.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
    const after = await call(t.app, t.a.adminToken, 'GET', '/api/v1/records/contacts?limit=1');
    expect(after.body.total).toBe(before);
  });
});

describe('writes queued behind a lock they cannot get', () => {
  it('every one of them answers 503 with Retry-After, and none is written', async () => {
    const other = openDatabase({ file: t.db.file, lockWaitMs: 200 });
    const short = openDatabase({ file: t.db.file, lockWaitMs: 300 });
    const app = await buildApp({ db: short, log: silent });
    const table = await tableOf(t.db, t.a.workspace.id, 'contacts');
    const otherWs = other.forWorkspace(t.a.workspace.id);
    const release = await holdWriteLock(otherWs, onPostgres ? [sql`LOCK TABLE ${sql.table(table)} IN EXCLUSIVE MODE`] : []);
    try {
      const answers = await Promise.all(Array.from({ length: 10 }, (_, i) => call(app, t.a.adminToken, 'POST', '/api/v1/records/contacts', { first_name: `Locked${i}` })));
      for (const r of answers) {
        expect(r.status, JSON.stringify(r.body)).toBe(503);
        expect(r.body).toMatchObject({ error: true });
        expect(r.headers['retry-after']).toBeDefined();
      }
    } finally {
      await release();
      await app.close();
      await short.close();
      await other.close();
    }
    const left = await sqlAll(t.a.ctx.db, sql`SELECT id FROM ${sql.table(table)} WHERE first_name LIKE 'Locked%'`);
    expect(left).toEqual([]);
  });
});
