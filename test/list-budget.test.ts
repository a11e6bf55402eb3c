import { sql } from 'kysely';
import { beforeAll, describe, expect, it } from 'vitest';
import { heavy, laneState } from '../src/services/budget.js';
import { MAX_RELATED_CONDITIONS } from '../src/services/filters.js';
import { resolveObject } from '../src/services/schema.js';
import { call, sqlGet, type TestApp } from './helpers.js';
import { seededLane } from './lane-helpers.js';
import { callError, memoryClient } from './mcp-helpers.js';

/**
 * List and search requests must not bypass the heavy-read budget (issue 13, second review): an
 * `or` of company.name conditions once froze the server for minutes on the main connection. An
 * expensive list runs in the heavy lane on the read pool, under the time limit; a plain list stays
 * on the main connection.
 */

const CONTACTS = 50_000;

let t: TestApp;
const { s: lane, settled, limits } = seededLane(CONTACTS);
beforeAll(() => {
  ({ t } = lane);
});

/** The reviewer's search: an `or` of n `company.name contains` conditions (no company matches). */
const orOfCompanyNames = (n: number) => ({
  operator: 'or' as const,
  conditions: Array.from({ length: n }, (_, i) => ({ field: 'company.name', operator: 'contains' as const, value: `zz-no-such-${i}` })),
});

/** Slower still, for the tests that need the lane held a while: 150 text scans and 20 related conditions per row, page and total. */
const SLOW = {
  operator: 'and' as const,
  conditions: [...Array.from({ length: 150 }, (_, i) => ({ field: 'job_title', operator: 'not_contains' as const, value: `zz-${i}` })), orOfCompanyNames(20)],
};

describe('list and search budgets', () => {
  it('an expensive search runs in the heavy lane and is stopped by the time limit, while /me and /health answer', async () => {
    await limits({ timeoutMs: 300 });
    const order: string[] = [];
    const search = call(t.app, t.a.memberToken, 'POST', '/api/v1/records/contacts/search', SLOW).then((r) => (order.push('search'), r));
    // The search holds the lane (it would run on the main connection, outside it, before the fix).
    await expect.poll(() => laneState(t.db).running, { timeout: 5000, interval: 2 }).toBe(1);
    const me = call(t.app, t.a.memberToken, 'GET', '/api/v1/me').then((r) => (order.push('me'), r));
    const health = call(t.app, null, 'GET', '/health').then((r) => (order.push('health'), r));
    expect((await me).status).toBe(200);
    expect((await health).status).toBe(200);
    const r = await search;
    expect(r.status, JSON.stringify(r.body).slice(0, 300)).toBe(422);
    expect(r.body).toMatchObject({ error: true, code: 'QUERY_TOO_EXPENSIVE', details: { limit: 'timeoutMs', max: 300 } });
    expect(order.indexOf('me')).toBeLessThan(order.indexOf('search'));
    expect(order.indexOf('health')).toBeLessThan(order.indexOf('search'));
    await settled();
  }, 30_000);

  it('a sort on a related field and its total run in the lane too, and still answer and page correctly', async () => {
    await limits({});
    const filter = { operator: 'and', conditions: [{ field: 'company.name', operator: 'contains', value: 'a' }] };
    const contacts = await resolveObject(t.a.ctx, 'contacts');
    const companies = await resolveObject(t.a.ctx, 'companies');
    const expected = (await sqlGet<{ n: number }>(
      t.db,
      sql`SELECT COUNT(*) AS n FROM ${sql.table(contacts.table)} c JOIN ${sql.table(companies.table)} co ON co.id = c.${sql.ref(contacts.byName.get('company')!.column)} WHERE lower(co.${sql.ref(companies.byName.get('name')!.column)}) LIKE '%a%'`,
    ))!.n;
    const p1 = call(t.app, t.a.memberToken, 'POST', '/api/v1/records/contacts/search', { filter, sort_by: 'company.name', sort_dir: 'asc', limit: 50 });
    const r1 = await p1;
    expect(r1.status, JSON.stringify(r1.body).slice(0, 300)).toBe(200);
    expect(r1.body.data).toHaveLength(50);
    expect(expected).toBeGreaterThan(100);
    expect(r1.body.total).toBe(expected);
    expect(r1.body.nextCursor).toEqual(expect.any(String));
    const r2 = await call(t.app, t.a.memberToken, 'POST', '/api/v1/records/contacts/search', { filter, sort_by: 'company.name', sort_dir: 'asc', limit: 50, cursor: r1.body.nextCursor });
    expect(r2.status).toBe(200);
    expect(r2.body.data).toHaveLength(50);
    const ids = new Set([...r1.body.data, ...r2.body.data].map((x: { id: string }) => x.id));
    expect(ids.size).toBe(100);
  }, 30_000);

  it('crm_search gets the same budget', async () => {
    await limits({ timeoutMs: 300 });
    const client = await memoryClient(t.db, t.a, { member: true });
    const text = await callError(client, 'crm_search', { object: 'contacts', filter: SLOW });
    expect(text).toMatch(/^QUERY_TOO_EXPENSIVE: .*time limit/s);
    await client.close();
    await settled();
  }, 30_000);

  it(`more than ${MAX_RELATED_CONDITIONS} related-field conditions answer 400 naming the limit`, async () => {
    await limits({});
    const r = await call(t.app, t.a.memberToken, 'POST', '/api/v1/records/contacts/search', orOfCompanyNames(MAX_RELATED_CONDITIONS + 1));
    expect(r.status).toBe(400);
    expect(r.body).toMatchObject({ error: true, code: 'VALIDATION_ERROR', details: { limit: MAX_RELATED_CONDITIONS } });
    expect(r.body.message).toMatch(new RegExp(`related-field conditions.*${MAX_RELATED_CONDITIONS}`));
    const ok = await call(t.app, t.a.memberToken, 'POST', '/api/v1/records/contacts/search', { ...orOfCompanyNames(2), limit: 5 });
    expect(ok.status).toBe(200);
  });

  it('plain lists stay outside the lane and page as before, even while the lane is full', async () => {
    await limits({ timeoutMs: 60_000, concurrency: 1, queue: 0, perUser: 100 });
    // A heavy read holds the only slot until the test lets it go (a real slow search could end
    // before the lists below do on a loaded machine): a plain list must not need the slot.
    let release!: () => void;
    const held = heavy(t.a.ctx, () => new Promise<void>((r) => (release = r)));
    await expect.poll(() => laneState(t.db).running, { timeout: 5000, interval: 2 }).toBe(1);
    const seen = new Set<string>();
    let cursor: string | undefined;
    for (let i = 0; i < 3; i++) {
      const r = await call(t.app, t.a.memberToken, 'GET', `/api/v1/records/contacts?limit=100${cursor ? `&cursor=${cursor}` : ''}`);
      expect(r.status).toBe(200);
      expect(r.body.total).toBe(CONTACTS);
      for (const x of r.body.data) seen.add(x.id);
      cursor = r.body.nextCursor;
    }
    expect(seen.size).toBe(300);
    const indexed = await call(t.app, t.a.memberToken, 'GET', '/api/v1/records/contacts?limit=10&filter_field=status&filter_operator=eq&filter_value=customer');
    expect(indexed.status).toBe(200);
    expect(indexed.body.data.length).toBeGreaterThan(0);
    // A few indexed conditions and an indexed sort (the bench's filtered list) stay light: with the
    // lane full and no queue, a heavy read would answer 503 OVERLOADED.
    const filtered = await call(t.app, t.a.memberToken, 'POST', '/api/v1/records/contacts/search', {
      filter: {
        operator: 'and',
        conditions: [
          { field: 'status', operator: 'in', value: ['lead', 'customer'] },
          { field: 'last_name', operator: 'gte', value: 'M' },
          { field: 'company', operator: 'is_not_null' },
        ],
      },
      sort_by: 'last_name',
      limit: 10,
    });
    expect(filtered.status, JSON.stringify(filtered.body).slice(0, 300)).toBe(200);
    expect(filtered.body.data).toHaveLength(10);
    expect(filtered.body.total).toBeGreaterThan(10);
    const heavyNow = await call(t.app, t.a.memberToken, 'POST', '/api/v1/records/contacts/search', { operator: 'and', conditions: [{ field: 'first_name', operator: 'contains', value: 'a' }] });
    expect(heavyNow.status).toBe(503);
    expect(heavyNow.body).toMatchObject({ error: true, code: 'OVERLOADED' });
    // A sort on a related field is heavy too, even without a filter.
    const relatedSort = await call(t.app, t.a.memberToken, 'GET', '/api/v1/records/contacts?limit=5&sort_by=company.name');
    expect(relatedSort.status).toBe(503);
    expect(laneState(t.db).running).toBe(1);
    release();
    await held;
    // With the slot free again, the same heavy search is served.
    const served = await call(t.app, t.a.memberToken, 'POST', '/api/v1/records/contacts/search', {
      filter: { operator: 'and', conditions: [{ field: 'first_name', operator: 'contains', value: 'a' }] },
      limit: 5,
    });
    expect(served.status, JSON.stringify(served.body).slice(0, 300)).toBe(200);
    await settled();
  }, 30_000);
});
