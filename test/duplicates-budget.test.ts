import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type BudgetLimits, budgetLimits, configureBudget, laneState } from '../src/services/budget.js';
import { seedWorkspace } from '../src/services/seed.js';
import { call, freshDb, type TestApp, testAppOn } from './helpers.js';

/**
 * Duplicate detection is a heavy read that runs on the main thread (issue 13, second review,
 * defect 5): it must keep to the time limit and let light requests in while it runs, on REST too
 * (where no MCP Work is set). 20,000 contacts with match keys: a scan of several hundred ms.
 */

let t: TestApp;
let defaults: BudgetLimits;

beforeAll(async () => {
  t = await testAppOn(await freshDb({ file: true }));
  await seedWorkspace(t.a.ctx, { contacts: 20_000, companies: 200, opportunities: 0, activity: false, searchIndex: false, matchKeys: true });
  defaults = { ...budgetLimits(t.db) };
}, 60_000);
afterAll(async () => {
  await t.close();
});

const detect = { action: 'detect', object: 'contacts' };

describe('duplicate scan in the heavy lane', () => {
  it('answers 422 QUERY_TOO_EXPENSIVE past a short time limit', async () => {
    // A quarter of this machine's own scan time: well under the scan's length, past its first
    // queries (a fixed 250 ms passed on a machine where the whole scan took less).
    const started = performance.now();
    expect((await call(t.app, t.a.memberToken, 'POST', '/api/v1/duplicates', detect)).status).toBe(200);
    const timeoutMs = Math.max(1, Math.floor((performance.now() - started) / 4));
    configureBudget(t.db, { ...defaults, timeoutMs });
    try {
      const r = await call(t.app, t.a.memberToken, 'POST', '/api/v1/duplicates', detect);
      expect(r.status, JSON.stringify(r.body).slice(0, 200)).toBe(422);
      expect(r.body).toMatchObject({ error: true, code: 'QUERY_TOO_EXPENSIVE', details: { limit: 'timeoutMs', max: timeoutMs } });
    } finally {
      configureBudget(t.db, defaults);
    }
    expect(laneState(t.db)).toEqual({ running: 0, queued: 0 });
  });

  it('/me answers while a scan runs', async () => {
    const order: string[] = [];
    const scan = call(t.app, t.a.memberToken, 'POST', '/api/v1/duplicates', detect).then((r) => (order.push('scan'), r));
    // /me is sent once the scan holds the lane; the loop sees that only if the scan lets the event loop in.
    while (laneState(t.db).running === 0 && !order.includes('scan')) await new Promise((r) => setImmediate(r));
    const me = call(t.app, t.a.memberToken, 'GET', '/api/v1/me').then((r) => (order.push('me'), r));
    expect((await me).status).toBe(200);
    const s = await scan;
    expect(s.status, JSON.stringify(s.body).slice(0, 200)).toBe(200);
    expect(s.body.total).toBeGreaterThan(0);
    expect(order).toEqual(['me', 'scan']);
  });
});
