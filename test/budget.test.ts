import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { beforeAll, describe, expect, it } from 'vitest';
import { budgetConfig, loadConfig } from '../src/config.js';
import { aggregateTree } from '../src/services/aggregate-tree.js';
import { type BudgetLimits, budgetLimits, configureBudget, DEFAULT_LIMITS, laneState, laneStopped } from '../src/services/budget.js';
import { seedWorkspace } from '../src/services/seed.js';
import { call, freshDb, makeWorkspace, type TestApp } from './helpers.js';
import { seededLane } from './lane-helpers.js';
import { callError, memoryClient } from './mcp-helpers.js';

/**
 * Budgets for heavy reads (issue 13, item 1): one expensive request must not stall everyone.
 * A file database with read workers, as `crm-mcp serve` runs it, seeded with enough contacts that
 * the issue's tree (five nested uniqueValues of size 1,000) would build hundreds of thousands of buckets.
 */

const CONTACTS = 30_000;

/** The issue's request: five nested uniqueValues of size 1,000. */
function nested(fields: string[], size = 1000): Record<string, unknown> {
  const [f, ...rest] = fields;
  return { [f!]: { uniqueValues: { property: f, size, ...(rest.length ? { aggregates: nested(rest, size) } : {}) } } };
}
const ISSUE_TREE = { aggregates: nested(['first_name', 'last_name', 'job_title', 'city', 'country']) };
/** Heavy but within the limits: about 600 first names x up to 1,000 last names each (~30,000 buckets). */
const SLOW_TREE = { aggregates: nested(['first_name', 'last_name']) };

let t: TestApp;
let defaults: BudgetLimits;
const { s: lane, settled, limits } = seededLane(CONTACTS);
beforeAll(() => {
  ({ t, defaults } = lane);
});

describe('heavy-read budgets', () => {
  it('defaults: as many heavy reads at once as read workers, a 30 s limit, 100,000 buckets', () => {
    expect(defaults).toMatchObject({ concurrency: 2, timeoutMs: DEFAULT_LIMITS.timeoutMs, maxCells: 100_000, queue: DEFAULT_LIMITS.queue });
  });

  it("refuses the issue's tree before running it, naming the limit, the figure and what to narrow, while /me answers", async () => {
    await limits({});
    const order: string[] = [];
    const heavyP = call(t.app, t.a.memberToken, 'POST', '/api/v1/aggregate/contacts/tree', ISSUE_TREE).then((r) => (order.push('tree'), r));
    const meP = call(t.app, t.a.memberToken, 'GET', '/api/v1/me').then((r) => (order.push('me'), r));
    const [tree, me] = await Promise.all([heavyP, meP]);
    expect(me.status).toBe(200);
    expect(tree.status).toBe(422);
    expect(tree.body).toMatchObject({ error: true, code: 'QUERY_TOO_EXPENSIVE' });
    expect(tree.body.message).toMatch(/100,000/);
    expect(tree.body.message).toMatch(/fewer nested levels, a smaller size, or a filter/);
    expect(tree.body.message).toMatch(/first_name > last_name/);
    expect(tree.body.details).toMatchObject({ limit: 'maxCells', max: 100_000, matchingRecords: CONTACTS });
    expect(order).toContain('me');
  });

  it('narrowed by a filter, the same tree runs', async () => {
    await limits({});
    const r = await call(t.app, t.a.memberToken, 'POST', '/api/v1/aggregate/contacts/tree', { ...ISSUE_TREE, filter: { equals: { property: 'country', value: 'Japan' } } });
    expect(r.status, JSON.stringify(r.body).slice(0, 300)).toBe(200);
    expect(r.body.count).toBeGreaterThan(0);
    expect(r.body.count).toBeLessThan(CONTACTS / 5);
  });

  it('a plain group_by is not capped at 100 groups: the answer size is (maxCells)', async () => {
    await limits({ maxCells: 500 });
    const ok = await call(t.app, t.a.memberToken, 'POST', '/api/v1/aggregate/contacts', { groupBy: ['first_name'], limit: 500 });
    expect(ok.status).toBe(200);
    expect(ok.body.data.groups.length).toBeGreaterThan(100);
    const big = await call(t.app, t.a.memberToken, 'POST', '/api/v1/aggregate/contacts', { groupBy: ['first_name'], limit: 501 });
    expect(big.status).toBe(422);
    expect(big.body).toMatchObject({ error: true, code: 'QUERY_TOO_EXPENSIVE' });
    expect(big.body.message).toMatch(/at most 500/);
  });

  it('bounds a tree while it runs when the estimate let it through', async () => {
    // first_name alone: ~600 buckets; the limit sits below what the data holds.
    await limits({ maxCells: 100 });
    const r = await call(t.app, t.a.memberToken, 'POST', '/api/v1/aggregate/contacts/tree', { aggregates: nested(['first_name']) });
    expect(r.status).toBe(422);
    expect(r.body).toMatchObject({ code: 'QUERY_TOO_EXPENSIVE' });
  });

  it('/me and /health answer while heavy reads run and queue', async () => {
    await limits({ perUser: 100 });
    const order: string[] = [];
    const heavy = Array.from({ length: 4 }, (_, i) =>
      call(t.app, i % 2 ? t.a.adminToken : t.a.memberToken, 'POST', '/api/v1/aggregate/contacts/tree', SLOW_TREE).then((r) => (order.push(`heavy${i}`), r)),
    );
    // Light requests sent once the heavy ones hold the lane.
    await expect.poll(() => laneState(t.db).running, { timeout: 5000, interval: 5 }).toBe(2);
    const me = call(t.app, t.a.memberToken, 'GET', '/api/v1/me').then((r) => (order.push('me'), r));
    const health = call(t.app, null, 'GET', '/health').then((r) => (order.push('health'), r));
    const list = call(t.app, t.a.memberToken, 'GET', '/api/v1/records/contacts?limit=5').then((r) => (order.push('list'), r));
    expect((await me).status).toBe(200);
    expect((await health).status).toBe(200);
    expect((await list).status).toBe(200);
    // The light requests finished while heavy ones were still running or waiting.
    expect(order.filter((x) => x.startsWith('heavy')).length).toBeLessThan(4);
    for (const r of await Promise.all(heavy)) expect(r.status).toBe(200);
    expect(order.slice(-1)[0]).toMatch(/^heavy/);
    await settled();
  }, 30_000);

  it('the (workers + queue + 1)th heavy read answers 503 OVERLOADED with Retry-After', async () => {
    await limits({ queue: 1, perUser: 100 });
    const all = await Promise.all(Array.from({ length: 4 }, (_, i) => call(t.app, i % 2 ? t.a.adminToken : t.a.memberToken, 'POST', '/api/v1/aggregate/contacts/tree', SLOW_TREE)));
    const statuses = all.map((r) => r.status).sort();
    expect(statuses).toEqual([200, 200, 200, 503]);
    const refused = all.find((r) => r.status === 503)!;
    expect(refused.body).toMatchObject({ error: true, code: 'OVERLOADED' });
    expect(refused.body.message).toMatch(/busy with heavy reads.*retry after \d+ s/);
    expect(Number(refused.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    await settled();
  }, 30_000);

  it('one user cannot fill the lane: past their share, 429 with Retry-After', async () => {
    await limits({ queue: 4, perUser: 2 });
    const mine = await Promise.all(Array.from({ length: 3 }, () => call(t.app, t.a.memberToken, 'POST', '/api/v1/aggregate/contacts/tree', SLOW_TREE)));
    expect(mine.map((r) => r.status).sort()).toEqual([200, 200, 429]);
    const limited = mine.find((r) => r.status === 429)!;
    expect(limited.body).toMatchObject({ error: true, code: 'RATE_LIMITED' });
    expect(limited.headers['retry-after']).toBeDefined();
    await settled();
  }, 30_000);

  it('a heavy read past its time limit is stopped, its worker freed, and the pool serves the next', async () => {
    await limits({ timeoutMs: 30 });
    const slow = await call(t.app, t.a.memberToken, 'POST', '/api/v1/aggregate/contacts/tree', SLOW_TREE);
    expect(slow.status).toBe(422);
    expect(slow.body).toMatchObject({ error: true, code: 'QUERY_TOO_EXPENSIVE', details: { limit: 'timeoutMs' } });
    expect(slow.body.message).toMatch(/time limit of 0.03 s/);
    await limits({});
    // Both workers again: two heavy reads at once, then a light one.
    const next = await Promise.all([
      call(t.app, t.a.memberToken, 'POST', '/api/v1/aggregate/contacts', { groupBy: ['status'] }),
      call(t.app, t.a.adminToken, 'POST', '/api/v1/aggregate/contacts/tree', { aggregates: nested(['country'], 50) }),
    ]);
    expect(next.map((r) => r.status)).toEqual([200, 200]);
    expect(next[0]!.body.data.count).toBe(CONTACTS);
    await settled();
  }, 30_000);

  it('a REST client that hangs up stops its heavy read and frees the lane', async () => {
    // The issue's tree with the size limit lifted: seconds of work if nothing stops it.
    await limits({ maxCells: 10_000_000 });
    await t.app.listen({ port: 0, host: '127.0.0.1' });
    const { port } = t.app.server.address() as AddressInfo;
    const before = laneStopped(t.db).cancelled;
    const req = http.request({
      port,
      host: '127.0.0.1',
      method: 'POST',
      path: '/api/v1/aggregate/contacts/tree',
      headers: { authorization: `Bearer ${t.a.memberToken}`, 'content-type': 'application/json' },
    });
    req.on('error', () => {});
    req.end(JSON.stringify(ISSUE_TREE));
    await expect.poll(() => laneState(t.db).running, { timeout: 5000, interval: 5 }).toBe(1);
    req.destroy();
    await expect.poll(() => laneStopped(t.db).cancelled, { timeout: 5000 }).toBe(before + 1);
    await settled();
    await limits({});
    const next = await call(t.app, t.a.memberToken, 'POST', '/api/v1/aggregate/contacts', { groupBy: ['status'] });
    expect(next.status).toBe(200);
  }, 30_000);

  it('MCP crm_aggregate goes through the same lane and budgets', async () => {
    await limits({});
    const client = await memoryClient(t.db, t.a, { member: true });
    const text = await callError(client, 'crm_aggregate', { object: 'contacts', aggregates: ISSUE_TREE.aggregates });
    expect(text).toMatch(/^QUERY_TOO_EXPENSIVE: .*100,000.*fewer nested levels/s);

    await limits({ queue: 0, perUser: 100, concurrency: 1 });
    const rest = call(t.app, t.a.adminToken, 'POST', '/api/v1/aggregate/contacts/tree', SLOW_TREE);
    await expect.poll(() => laneState(t.db).running, { timeout: 5000, interval: 5 }).toBe(1);
    const busy = await callError(client, 'crm_aggregate', { object: 'contacts', groupBy: ['status'] });
    expect(busy).toMatch(/^OVERLOADED: The server is busy with heavy reads/);
    expect((await rest).status).toBe(200);
    await client.close();
    await settled();
  }, 30_000);
});

/**
 * A CSV export over a real port whose client stops reading after the first bytes: it holds its lane
 * place. All 30,000 contacts (megabytes, more than the sockets' buffers hold), so it cannot finish alone.
 */
async function pausedExport(token: string, query = 'format=csv&limit=30000'): Promise<{ req: http.ClientRequest; status: number }> {
  await t.app.listen({ port: 0, host: '127.0.0.1' }).catch(() => {});
  const { port } = t.app.server.address() as AddressInfo;
  const req = http.get({ port, host: '127.0.0.1', path: `/api/v1/export/contacts?${query}`, headers: { authorization: `Bearer ${token}` } });
  req.on('error', () => {});
  const status = await new Promise<number>((resolve) => {
    req.on('response', (res) => {
      res.on('error', () => {});
      res.once('data', () => res.pause());
      resolve(res.statusCode ?? 0);
    });
  });
  return { req, status };
}

describe('exports in the heavy lane', () => {
  it('an export waits for a place in a full lane, and is refused with 503 when its queue is full too', async () => {
    await limits({ concurrency: 1, queue: 1, perUser: 100, exportMaxRows: CONTACTS });
    const first = await pausedExport(t.a.adminToken);
    expect(first.status).toBe(200);
    expect(laneState(t.db)).toEqual({ running: 1, queued: 0 });
    const waiting = call(t.app, t.a.adminToken, 'GET', '/api/v1/export/contacts?fields=email&limit=50');
    await expect.poll(() => laneState(t.db).queued, { timeout: 5000, interval: 5 }).toBe(1);
    const refused = await call(t.app, t.a.adminToken, 'GET', '/api/v1/export/contacts?fields=email&limit=50');
    expect(refused.status).toBe(503);
    expect(refused.body).toMatchObject({ error: true, code: 'OVERLOADED' });
    expect(Number(refused.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    first.req.destroy();
    const done = await waiting;
    expect(done.status).toBe(200);
    expect(done.body.records).toHaveLength(50);
    await settled();
  }, 30_000);

  it('a client that hangs up mid-export gives its place back', async () => {
    await limits({ concurrency: 1, queue: 0, perUser: 100, exportMaxRows: CONTACTS });
    const before = laneStopped(t.db).cancelled;
    const { req, status } = await pausedExport(t.a.adminToken);
    expect(status).toBe(200);
    expect(laneState(t.db).running).toBe(1);
    req.destroy();
    await expect.poll(() => laneState(t.db), { timeout: 5000, interval: 5 }).toEqual({ running: 0, queued: 0 });
    expect(laneStopped(t.db).cancelled).toBe(before + 1);
    const next = await call(t.app, t.a.adminToken, 'GET', '/api/v1/export/contacts?fields=email&limit=5');
    expect(next.status).toBe(200);
  }, 30_000);

  it('an export that outlives its time limit while its client does not read is ended, its place freed', async () => {
    await limits({ concurrency: 1, queue: 0, perUser: 100, timeoutMs: 100, exportMaxRows: CONTACTS });
    const before = laneStopped(t.db).timedOut;
    const { req } = await pausedExport(t.a.adminToken);
    await expect.poll(() => laneState(t.db).running, { timeout: 5000, interval: 20 }).toBe(0);
    expect(laneStopped(t.db).timedOut).toBe(before + 1);
    req.destroy();
  }, 30_000);

  it('an export over the row limit is refused before anything is read, naming the limit and how to narrow', async () => {
    await limits({});
    const over = await call(t.app, t.a.adminToken, 'GET', '/api/v1/export/contacts?limit=10001');
    expect(over.status).toBe(422);
    expect(over.body).toMatchObject({ error: true, code: 'QUERY_TOO_EXPENSIVE', details: { limit: 'exportMaxRows', max: 10_000 } });
    expect(over.body.message).toMatch(/at most 10,000 rows.*a filter, fewer fields, or a limit of 10,000 or less/);
    await limits({ exportMaxRows: 100 });
    // The default limit (1,000) is over a lower configured maximum too.
    const dflt = await call(t.app, t.a.adminToken, 'GET', '/api/v1/export/contacts?format=csv');
    expect(dflt.status).toBe(422);
    expect(dflt.body.details).toMatchObject({ limit: 'exportMaxRows', max: 100 });
    const client = await memoryClient(t.db, t.a);
    expect(await callError(client, 'crm_export', { object: 'contacts', limit: 101 })).toMatch(/^QUERY_TOO_EXPENSIVE: An export holds at most 100 rows/);
    await limits({ exportMaxBytes: 4096 });
    expect(await callError(client, 'crm_export', { object: 'contacts', limit: 100, include_csv: true })).toMatch(
      /^QUERY_TOO_EXPENSIVE: The export passed 4,096 bytes.*a filter, fewer fields, or a smaller limit/,
    );
    await client.close();
    await limits({});
  }, 30_000);

  it('an MCP export (crm_export) waits in the same lane and is refused when it is full', async () => {
    await limits({ concurrency: 1, queue: 0, perUser: 100, exportMaxRows: CONTACTS });
    const held = await pausedExport(t.a.adminToken);
    const client = await memoryClient(t.db, t.a);
    expect(await callError(client, 'crm_export', { object: 'contacts', limit: 10, include_csv: true })).toMatch(/^OVERLOADED: The server is busy with heavy reads/);
    held.req.destroy();
    await settled();
    await client.close();
  }, 30_000);
});

describe('configuration', () => {
  it('reads the budget from the environment; bad values are refused at start-up', () => {
    expect(budgetConfig(loadConfig({}))).toEqual({ timeoutMs: 30_000, maxCells: 100_000, queue: 16, exportMaxRows: 10_000, exportMaxBytes: 64 * 1024 * 1024 });
    expect(
      budgetConfig(
        loadConfig({ CRM_QUERY_TIMEOUT_MS: '5000', CRM_QUERY_MAX_CELLS: '2000', CRM_HEAVY_QUEUE: '0', CRM_HEAVY_PER_USER: '3', CRM_EXPORT_MAX_ROWS: '500', CRM_EXPORT_MAX_BYTES: '100000' }),
      ),
    ).toEqual({
      timeoutMs: 5000,
      maxCells: 2000,
      queue: 0,
      exportMaxRows: 500,
      exportMaxBytes: 100_000,
      perUser: 3,
    });
    expect(() => loadConfig({ CRM_QUERY_TIMEOUT_MS: '10' })).toThrow(/CRM_QUERY_TIMEOUT_MS/);
    expect(() => loadConfig({ CRM_HEAVY_QUEUE: '-1' })).toThrow(/CRM_HEAVY_QUEUE/);
  });
});

describe('without a read pool (:memory:)', () => {
  it('the same size limits and lane apply; the time limit is checked between statements', async () => {
    const db = await freshDb();
    const w = await makeWorkspace(db, 'mem');
    await seedWorkspace(w.ctx, { contacts: 3000, companies: 100, opportunities: 0, activity: false, searchIndex: false, matchKeys: false });
    expect(budgetLimits(db).concurrency).toBe(1);
    configureBudget(db, { maxCells: 2000 });
    await expect(aggregateTree(w.ctx, 'contacts', ISSUE_TREE)).rejects.toMatchObject({ code: 'QUERY_TOO_EXPENSIVE' });
    configureBudget(db, { maxCells: 100_000, timeoutMs: 1 });
    await expect(aggregateTree(w.ctx, 'contacts', SLOW_TREE)).rejects.toMatchObject({ code: 'QUERY_TOO_EXPENSIVE', details: { limit: 'timeoutMs' } });
    await db.close();
  });
});
