import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Db } from '../src/db/database.js';
import { configureBudget, heavy, laneState } from '../src/services/budget.js';
import { call, ctxFor, freshDb, makeWorkspace, type TestWorkspace, testAppOn } from './helpers.js';

/**
 * Fairness in the heavy lane (issue 13, second review, defect 4): one user queueing many heavy
 * reads must not make another user's single read wait behind all of them. The lane is driven
 * through heavy() itself with reads that finish when the test says so: the assertions are about
 * the order in which reads start, never about time.
 */

let db: Db;
let w: TestWorkspace;

beforeAll(async () => {
  db = await freshDb();
  w = await makeWorkspace(db, 'fair');
});
afterAll(async () => {
  await db.close();
});

function deferred() {
  let resolve!: () => void;
  const p = new Promise<void>((r) => (resolve = r));
  return { p, resolve };
}

/** Queue a heavy read that records its start and runs until released. */
function read(ctx: ReturnType<typeof ctxFor>, name: string, started: string[], gates: Map<string, () => void>) {
  return heavy(ctx, async () => {
    started.push(name);
    const d = deferred();
    gates.set(name, d.resolve);
    await d.p;
  });
}

async function finish(gates: Map<string, () => void>, name: string) {
  await expect.poll(() => gates.has(name)).toBe(true);
  gates.get(name)!();
  gates.delete(name);
}

describe('heavy lane fairness', () => {
  it("another user's read starts next, however many one user queued", async () => {
    configureBudget(db, { concurrency: 1, queue: 16, perUser: 16 });
    const a = ctxFor(db, w.workspace.id, w.admin.id, 'admin');
    const b = ctxFor(db, w.workspace.id, w.member.id, 'member');
    const started: string[] = [];
    const gates = new Map<string, () => void>();
    const all = Array.from({ length: 6 }, (_, i) => read(a, `a${i}`, started, gates));
    await expect.poll(() => laneState(db)).toEqual({ running: 1, queued: 5 });
    all.push(read(b, 'b0', started, gates));
    expect(laneState(db)).toEqual({ running: 1, queued: 6 });
    // a0 finishes: the slot goes to B, not to A's next read.
    await finish(gates, 'a0');
    await finish(gates, 'b0');
    for (let i = 1; i < 6; i++) await finish(gates, `a${i}`);
    await Promise.all(all);
    expect(started).toEqual(['a0', 'b0', 'a1', 'a2', 'a3', 'a4', 'a5']);
    expect(laneState(db)).toEqual({ running: 0, queued: 0 });
  });

  it('users take turns: round-robin between the users waiting', async () => {
    configureBudget(db, { concurrency: 1, queue: 16, perUser: 16 });
    const other = await makeWorkspace(db, 'fair2');
    const a = ctxFor(db, w.workspace.id, w.admin.id, 'admin');
    const b = ctxFor(db, w.workspace.id, w.member.id, 'member');
    const c = ctxFor(db, other.workspace.id, other.admin.id, 'admin');
    const started: string[] = [];
    const gates = new Map<string, () => void>();
    const all = [0, 1, 2].map((i) => read(a, `a${i}`, started, gates));
    await expect.poll(() => laneState(db).queued).toBe(2);
    all.push(read(b, 'b0', started, gates), read(b, 'b1', started, gates), read(c, 'c0', started, gates));
    // Each user who has waited longest since their last turn goes next: B, C, then A again.
    const order = ['a0', 'b0', 'c0', 'a1', 'b1', 'a2'];
    for (const n of order) {
      await expect.poll(() => started.at(-1)).toBe(n);
      await finish(gates, n);
    }
    await Promise.all(all);
    expect(started).toEqual(order);
  });

  it("a dashboard's widgets from one user all load (running and queued within the user's share)", async () => {
    configureBudget(db, { concurrency: 2, queue: 16 });
    const a = ctxFor(db, w.workspace.id, w.member.id, 'member');
    const results = await Promise.all(Array.from({ length: 10 }, (_, i) => heavy(a, async () => i)));
    expect(results).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  });

  it('a task summary takes one place in the lane, not one per aggregate it runs', async () => {
    const t = await testAppOn(await freshDb());
    try {
      // One slot and no queue: a summary that asked for four places would be refused (503).
      configureBudget(t.db, { concurrency: 1, queue: 0, perUser: 1 });
      await call(t.app, t.a.adminToken, 'POST', '/api/v1/tasks', { title: 'Call back', due_at: '2020-01-01T10:00:00Z' });
      const r = await call(t.app, t.a.memberToken, 'GET', '/api/v1/tasks/stats');
      expect(r.status, JSON.stringify(r.body).slice(0, 200)).toBe(200);
      expect(r.body.data).toMatchObject({ total: 1, open: 1, overdue: 1 });
      expect(laneState(t.db)).toEqual({ running: 0, queued: 0 });
    } finally {
      await t.close();
    }
  });
});
