import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import type { FastifyInstance } from 'fastify';
import { sql } from 'kysely';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Db } from '../src/db/database.js';
import { buildApp } from '../src/http/app.js';
import { importFile } from '../src/import-file.js';
import { contextFor } from '../src/services/context.js';
import { call, freshDb, makeWorkspace, onPostgres, type TestWorkspace, tableOf } from './helpers.js';

/**
 * Two writes that lock the same records in opposite order. On PostgreSQL they can deadlock: the
 * server aborts one of them (40P01), which wrote nothing; the record write path runs it again
 * (inTransaction, services/records-write.ts), so both answer 200 and each change is written once.
 * On SQLite writes take turns and never deadlock: the same requests succeed there too.
 */

const lines: string[] = [];
const log = pino(
  { level: 'warn' },
  new Writable({
    write(chunk, _enc, done) {
      lines.push(String(chunk));
      done();
    },
  }),
);
const reruns = () => lines.map((l) => JSON.parse(l) as { msg: string; code?: string; rerun?: number }).filter((l) => /running it again/.test(l.msg));

let db: Db;
let app: FastifyInstance;
let w: TestWorkspace;

beforeAll(async () => {
  db = await freshDb();
  app = await buildApp({ db, log });
  w = await makeWorkspace(db, 'lockers');
});
afterAll(async () => {
  await app.close();
  await db.close();
});

const api = (method: string, url: string, body?: unknown) => call(app, w.adminToken, method, `/api/v1${url}`, body);

async function twoContacts(tag: string): Promise<[string, string]> {
  const r = await api('POST', '/records/contacts/batch/create', {
    records: [
      { first_name: 'Ada', last_name: tag, email: `ada.${tag}@example.com` },
      { first_name: 'Bo', last_name: tag, email: `bo.${tag}@example.com` },
    ],
  });
  expect(r.status).toBe(201);
  return [r.body.data[0].id, r.body.data[1].id];
}

/**
 * Sends both requests while another transaction holds both records' row locks, so that each
 * request waits on its first record; releases them together once both wait: each then locks its
 * first record and waits for the other's. A deadlock, every time (PostgreSQL only).
 */
async function inOppositeOrder<T>(ids: [string, string], send: () => Promise<T>[]): Promise<T[]> {
  const table = await tableOf(db, w.workspace.id, 'contacts');
  const space = db.forWorkspace(w.workspace.id).kysely;
  let release!: () => void;
  const released = new Promise<void>((resolve) => (release = resolve));
  let holding!: (pid: number) => void;
  const held = new Promise<number>((resolve) => (holding = resolve));
  const holder = space.transaction().execute(async (trx) => {
    await sql`SELECT id FROM ${sql.table(table)} WHERE id IN (${ids[0]}, ${ids[1]}) FOR UPDATE`.execute(trx);
    holding((await sql<{ pid: number }>`SELECT pg_backend_pid() AS pid`.execute(trx)).rows[0]!.pid);
    await released;
  });
  const pid = await held;
  const sent = send();
  // Both requests wait behind the holder (a bounded wait, not a timed assertion).
  for (const until = Date.now() + 60_000; ; ) {
    const { n } = (await sql<{ n: number }>`SELECT count(*) AS n FROM pg_stat_activity WHERE ${pid} = ANY(pg_blocking_pids(pid))`.execute(db.kysely)).rows[0]!;
    if (Number(n) >= 2) break;
    if (Date.now() > until) throw new Error(`only ${n} of the two writes waited behind the held locks`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  release();
  await holder;
  return Promise.all(sent);
}

describe('two batch writes of the same records in opposite order', () => {
  it('batch updates sent at once: both succeed', async () => {
    const [a, b] = await twoContacts('atonce');
    for (let round = 0; round < 5; round++) {
      const [r1, r2] = await Promise.all([
        api('POST', '/records/contacts/batch/update', {
          records: [
            { id: a, job_title: `first ${round}` },
            { id: b, job_title: `first ${round}` },
          ],
        }),
        api('POST', '/records/contacts/batch/update', {
          records: [
            { id: b, job_title: `second ${round}` },
            { id: a, job_title: `second ${round}` },
          ],
        }),
      ]);
      expect([r1.status, r2.status], JSON.stringify([r1.body, r2.body])).toEqual([200, 200]);
    }
  });

  it.runIf(onPostgres)('batch updates that deadlock: the aborted one is run again, both answer 200, each change written once', async () => {
    const [a, b] = await twoContacts('deadlock');
    const before = reruns().length;
    const [r1, r2] = await inOppositeOrder([a, b], () => [
      api('POST', '/records/contacts/batch/update', {
        records: [
          { id: a, job_title: 'Left' },
          { id: b, job_title: 'Left' },
        ],
      }),
      api('POST', '/records/contacts/batch/update', {
        records: [
          { id: b, job_title: 'Right' },
          { id: a, job_title: 'Right' },
        ],
      }),
    ]);
    expect([r1!.status, r2!.status], JSON.stringify([r1!.body, r2!.body])).toEqual([200, 200]);
    // The server did abort one of them (it was run again), and it was not answered 503.
    const seen = reruns().slice(before);
    expect(seen.length).toBeGreaterThanOrEqual(1);
    expect(seen[0]).toMatchObject({ code: '40P01', rerun: 1 });
    // Both records hold the same title: the one that committed last wrote both.
    const titles = await Promise.all([a, b].map(async (id) => (await api('GET', `/records/contacts/${id}`)).body.data.job_title));
    expect(titles[0]).toBe(titles[1]);
    // Each record's changes are in its feed once per request: the aborted run left nothing behind.
    for (const id of [a, b]) {
      const feed = await api('GET', `/activity/contacts/${id}`);
      expect(feed.status).toBe(200);
      const updates = (feed.body.data as { action: string }[]).filter((e) => e.action === 'updated');
      expect(updates).toHaveLength(2);
    }
  });

  it.runIf(onPostgres)('batch upserts that deadlock: both answer 200, each record listed once in its results', async () => {
    const [a, b] = await twoContacts('upsert');
    const before = reruns().length;
    const [r1, r2] = await inOppositeOrder([a, b], () => [
      api('POST', '/records/contacts/batch/upsert', {
        key: 'email',
        records: [
          { email: 'ada.upsert@example.com', job_title: 'Up' },
          { email: 'bo.upsert@example.com', job_title: 'Up' },
        ],
      }),
      api('POST', '/records/contacts/batch/upsert', {
        key: 'email',
        records: [
          { email: 'bo.upsert@example.com', job_title: 'Down' },
          { email: 'ada.upsert@example.com', job_title: 'Down' },
        ],
      }),
    ]);
    expect([r1!.status, r2!.status], JSON.stringify([r1!.body, r2!.body])).toEqual([200, 200]);
    expect(reruns().length).toBeGreaterThan(before);
    expect(r1!.body.results).toEqual([
      { index: 0, id: a, action: 'updated' },
      { index: 1, id: b, action: 'updated' },
    ]);
    expect(r2!.body.results).toEqual([
      { index: 0, id: b, action: 'updated' },
      { index: 1, id: a, action: 'updated' },
    ]);
    expect(r1!.body.data.map((r: { id: string }) => r.id)).toEqual([a, b]);
    expect(r2!.body.data.map((r: { id: string }) => r.id)).toEqual([b, a]);
  });
});

describe('an import batch aborted by a deadlock', () => {
  it.runIf(onPostgres)(
    'at its timeline entries (the last write of its transaction): run again whole, every row written once and reported once',
    async () => {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'crm-deadlock-import-'));
      const file = path.join(dir, 'people.csv');
      fs.writeFileSync(file, `first_name,last_name,email\n${Array.from({ length: 40 }, (_, i) => `Imp${i},Deadlock,imp${i}@deadlock.test`).join('\n')}\n`);
      const table = await tableOf(db, w.workspace.id, 'contacts');
      const space = db.forWorkspace(w.workspace.id).kysely;
      const before = reruns().length;
      // Another transaction holds the workspace's feed lock (what a batch takes last, for its timeline
      // entries): the import's batch, its rows written, waits for it; that transaction then writes one
      // of the batch's emails, so waits for the batch: a deadlock, which the server breaks by aborting
      // the batch (it waited first).
      let release!: () => void;
      const released = new Promise<void>((resolve) => (release = resolve));
      let holding!: (pid: number) => void;
      const held = new Promise<number>((resolve) => (holding = resolve));
      const holder = space
        .transaction()
        .execute(async (trx) => {
          await w.ctx.db.adapter.feedOrder(trx, w.workspace.id);
          holding((await sql<{ pid: number }>`SELECT pg_backend_pid() AS pid`.execute(trx)).rows[0]!.pid);
          await released;
          const now = new Date().toISOString();
          await sql`INSERT INTO ${sql.table(table)} (id, email, created_at, updated_at, created_by) VALUES (${'deadlock-holder'}, ${'imp7@deadlock.test'}, ${now}, ${now}, ${w.admin.id})`.execute(trx);
          throw new Error('rolled back');
        })
        .catch((e: Error) => e);
      const pid = await held;
      const ctx = contextFor(db, log, { workspaceId: w.workspace.id, userId: w.admin.id, role: 'admin', via: 'cli' });
      const imported = importFile(ctx, { object: 'contacts', file, batch: 100 });
      try {
        for (const until = Date.now() + 60_000; ; ) {
          const { n } = (await sql<{ n: number }>`SELECT count(*) AS n FROM pg_stat_activity WHERE ${pid} = ANY(pg_blocking_pids(pid))`.execute(db.kysely)).rows[0]!;
          if (Number(n) >= 1) break;
          if (Date.now() > until) throw new Error('the import never waited for the feed lock');
          await new Promise((resolve) => setTimeout(resolve, 20));
        }
        release();
        expect(((await holder) as Error).message).toBe('rolled back');
        const r = await imported;
        expect(r).toMatchObject({ rows: 40, created: 40, duplicates: 0, failed: 0 });
        expect(reruns().length).toBeGreaterThan(before);
        const rows = (await sql<{ email: string }>`SELECT email FROM ${sql.table(table)} WHERE email LIKE ${'%@deadlock.test'} ORDER BY email`.execute(space)).rows;
        expect(rows.map((x) => x.email).sort()).toEqual(Array.from({ length: 40 }, (_, i) => `imp${i}@deadlock.test`).sort());
        const created = (
          await sql<{
            n: number;
          }>`SELECT count(*) AS n FROM activity WHERE workspace_id = ${w.workspace.id} AND object = 'contacts' AND action = 'created' AND record_id IN (SELECT id FROM ${sql.table(table)} WHERE email LIKE ${'%@deadlock.test'})`.execute(
            space,
          )
        ).rows[0]!;
        expect(Number(created.n)).toBe(40);
      } finally {
        release();
        await imported.catch(() => {});
        fs.rmSync(dir, { recursive: true, force: true });
      }
    },
    120_000,
  );
});

describe.runIf(onPostgres)('two deployments on one PostgreSQL database (two shared schemas)', () => {
  // Every advisory lock is keyed by lockKey (class and deployment) and the workspace: the feed's
  // order here; the word list's shared and prune locks take the same keys.
  it("take their advisory locks apart: one's workspace 1 never waits on the other's", async () => {
    const [a, b] = [await freshDb(), await freshDb()];
    try {
      const [wa, wb] = [await makeWorkspace(a, 'one'), await makeWorkspace(b, 'two')];
      // The same workspace id in both: the case where keys by workspace alone collide.
      expect(wa.workspace.id).toBe(wb.workspace.id);
      const id = wa.workspace.id;
      let release!: () => void;
      const held = new Promise<void>((r) => (release = r));
      let locked!: () => void;
      const taken = new Promise<void>((r) => (locked = r));
      // a's feed lock of workspace `id` (as a create's transaction takes it), held open.
      const holder = a
        .forWorkspace(id)
        .kysely.transaction()
        .execute(async (trx) => {
          await a.adapter.feedOrder(trx, id);
          locked();
          await held;
        });
      await taken;
      const feedOrderWithin = (db: Db, ms: number) =>
        db
          .forWorkspace(id)
          .kysely.transaction()
          .execute(async (trx) => {
            await sql`SET LOCAL lock_timeout = ${sql.lit(`${ms}ms`)}`.execute(trx);
            await db.adapter.feedOrder(trx, id);
            return 'ok';
          });
      try {
        // The other deployment's workspace of the same id: free.
        await expect(feedOrderWithin(b, 2000)).resolves.toBe('ok');
        // The same deployment: the lock still holds (it is a's workspace).
        await expect(feedOrderWithin(a, 300)).rejects.toThrow(/lock timeout/);
      } finally {
        release();
        await holder;
      }
    } finally {
      await a.close();
      await b.close();
    }
  });
});
