import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { configureBudget, DEFAULT_LIMITS } from '../src/services/budget.js';
import { createRecords } from '../src/services/records.js';
import { call, testApp, type TestApp } from './helpers.js';
import { memoryClient } from './mcp-helpers.js';
import type { Ctx } from '../src/services/context.js';

/** createRecords in batches of 100 (its limit). */
async function createMany(ctx: Ctx, object: string, rows: Record<string, unknown>[]) {
  const out: { id: string }[] = [];
  for (let i = 0; i < rows.length; i += 100) out.push(...((await createRecords(ctx, object, rows.slice(i, i + 100))) as { id: string }[]));
  return out;
}

/**
 * Issue 15, "Kasar gaps": a client written to the Kasar documents (kasar-aggregate.txt,
 * kasar-api-overview.txt, kasar-import-export.txt) works unchanged.
 */

describe('group_by answers every group unless the client asks for a limit', () => {
  let t: TestApp;
  const GROUPS = 210;
  beforeAll(async () => {
    t = await testApp();
    const cos = await createMany(t.a.ctx, 'companies', Array.from({ length: GROUPS }, (_, i) => ({ name: `Co ${i}` })));
    await createMany(t.a.ctx, 'contacts', cos.map((c, i) => ({ first_name: `P${i}`, company: c.id })));
  });
  afterAll(() => t?.close());

  it('GET /aggregate: COUNT group_by=company gives all 210 groups', async () => {
    const r = await call(t.app, t.a.adminToken, 'GET', '/api/v1/aggregate/contacts?field=id&function=COUNT&group_by=company');
    expect(r.status).toBe(200);
    expect(r.body.results).toHaveLength(GROUPS);
    expect(r.body.results.reduce((s: number, g: { value: number }) => s + g.value, 0)).toBe(GROUPS);
  });

  it('POST /aggregate: every group without a limit, the top ones with one', async () => {
    const all = await call(t.app, t.a.adminToken, 'POST', '/api/v1/aggregate/contacts', { groupBy: ['company'] });
    expect(all.status).toBe(200);
    expect(all.body.data.groups).toHaveLength(GROUPS);
    expect(all.body.data.meta).toMatchObject({ groupTotal: GROUPS, groupsTruncated: false, otherCount: 0 });
    const top = await call(t.app, t.a.adminToken, 'POST', '/api/v1/aggregate/contacts', { groupBy: ['company'], limit: 10 });
    expect(top.body.data.groups).toHaveLength(10);
    expect(top.body.data.meta).toMatchObject({ groupTotal: GROUPS, groupsTruncated: true, otherCount: GROUPS - 10 });
  });

  it('past the answer-size budget (CRM_QUERY_MAX_CELLS) both answer 422 QUERY_TOO_EXPENSIVE', async () => {
    configureBudget(t.db, { maxCells: 200 });
    try {
      const get = await call(t.app, t.a.adminToken, 'GET', '/api/v1/aggregate/contacts?field=id&function=COUNT&group_by=company');
      expect(get.status).toBe(422);
      expect(get.body).toMatchObject({ error: true, code: 'QUERY_TOO_EXPENSIVE' });
      expect(get.body.message).toMatch(/210 groups/);
      expect(get.body.message).toMatch(/limit/);
      const post = await call(t.app, t.a.adminToken, 'POST', '/api/v1/aggregate/contacts', { groupBy: ['company'] });
      expect(post.status).toBe(422);
      // With a limit within the budget, the top groups come back.
      const top = await call(t.app, t.a.adminToken, 'GET', '/api/v1/aggregate/contacts?field=id&function=COUNT&group_by=company&limit=150');
      expect(top.status).toBe(200);
      expect(top.body.results).toHaveLength(150);
    } finally {
      configureBudget(t.db, { maxCells: DEFAULT_LIMITS.maxCells });
    }
  });

  it('MCP crm_aggregate stays compact: its own default limit, and it says what was cut and how to get the rest', async () => {
    const client = await memoryClient(t.db, t.a);
    const r = (await client.callTool({ name: 'crm_aggregate', arguments: { object: 'contacts', groupBy: ['company'] } })) as any;
    expect(r.isError).toBeFalsy();
    expect(r.structuredContent.groups).toHaveLength(100);
    expect(r.structuredContent.meta).toMatchObject({ groupTotal: GROUPS, groupsTruncated: true, otherCount: GROUPS - 100 });
    expect(r.content[0].text).toMatch(/100 of 210 groups/);
    expect(r.content[0].text).toMatch(/limit/);
    await client.close();
  });
});
