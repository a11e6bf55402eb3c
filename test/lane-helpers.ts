import { afterAll, beforeAll, expect } from 'vitest';
import { type BudgetLimits, budgetLimits, configureBudget, laneState } from '../src/services/budget.js';
import { seedWorkspace } from '../src/services/seed.js';
import { freshPooledDb, type TestApp, testAppOn } from './helpers.js';

/**
 * A file database with two read workers and `contacts` seeded contacts, for tests of the heavy
 * lane; registers its own beforeAll/afterAll. `settled` waits until every heavy read has ended;
 * `limits` sets the lane's limits for one test, starting from the defaults and an empty lane.
 */
export function seededLane(contacts: number) {
  const s = {} as { t: TestApp; defaults: BudgetLimits };
  beforeAll(async () => {
    s.t = await testAppOn(await freshPooledDb(2));
    await seedWorkspace(s.t.a.ctx, { contacts, companies: 500, opportunities: 0, activity: false, searchIndex: false, matchKeys: false });
    s.defaults = { ...budgetLimits(s.t.db) };
  }, 60_000);
  afterAll(async () => {
    await s.t.close();
  });
  const settled = () => expect.poll(() => laneState(s.t.db), { timeout: 20_000 }).toEqual({ running: 0, queued: 0 });
  const limits = async (l: Partial<BudgetLimits>) => {
    await settled();
    configureBudget(s.t.db, { ...s.defaults, ...l });
  };
  return { s, settled, limits };
}
