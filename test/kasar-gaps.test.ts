import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { configureBudget, DEFAULT_LIMITS } from '../src/services/budget.js';
import { createRecords } from '../src/services/records.js';
import { call, testApp, type TestApp } from './helpers.js';
import { memoryClient } from './mcp-helpers.js';
import type { Ctx } from '../src/services/context.js';
import { createNote } from '../src/services/notes.js';
import { createTask } from '../src/services/tasks.js';
import { createThread } from '../src/services/inbox.js';
import { updateRecord } from '../src/services/records.js';

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

describe('nextCursor= is the query parameter beside cursor on every paginated GET', () => {
  let t: TestApp;
  let contactId: string;
  beforeAll(async () => {
    t = await testApp();
    const [c] = await createRecords(t.a.ctx, 'contacts', [{ first_name: 'Ada' }, { first_name: 'Bea' }, { first_name: 'Cy' }]);
    contactId = (c as { id: string }).id;
    for (let i = 0; i < 3; i++) {
      await createTask(t.a.ctx, { title: `Task ${i}` });
      await createNote(t.a.ctx, { body: `Note ${i}`, object: 'contacts', record_id: contactId });
      await createThread(t.a.ctx, { subject: `Thread ${i}`, messages: [{ direction: 'inbound', from_email: 'x@example.com', to: ['sales@alpha.test'], body: 'Hi', sent_at: `2026-01-0${i + 1}T10:00:00Z` }] });
      await updateRecord(t.a.ctx, 'contacts', contactId, { job_title: `Title ${i}` });
    }
  });
  afterAll(() => t?.close());

  const get = (url: string) => call(t.app, t.a.adminToken, 'GET', url);
  const join = (url: string, q: string) => `${url}${url.includes('?') ? '&' : '?'}${q}`;
  const LISTS = [
    '/api/v1/records/contacts?limit=2',
    '/api/v1/tasks?limit=2',
    '/api/v1/notes?limit=2',
    '/api/v1/inbox/threads?limit=2',
    () => `/api/v1/activity/contacts/${contactId}?limit=2`,
    '/api/v1/changes?limit=2',
    '/api/v1/export/contacts?limit=2',
  ];

  it.each(LISTS.map((l, i) => [i, l]))('list %i: page 2 is the same under nextCursor= as under cursor=', async (_i, l) => {
    const url = typeof l === 'function' ? l() : l;
    const first = await get(url);
    expect(first.status, JSON.stringify(first.body)).toBe(200);
    const next = first.body.nextCursor;
    expect(typeof next).toBe('string');
    const viaCursor = await get(join(url, `${url.includes('/changes') ? 'since' : 'cursor'}=${encodeURIComponent(next)}`));
    const viaNext = await get(join(url, `nextCursor=${encodeURIComponent(next)}`));
    expect(viaCursor.status).toBe(200);
    expect(viaNext.status, JSON.stringify(viaNext.body)).toBe(200);
    expect(viaNext.body).toEqual(viaCursor.body);
    // The same value under both names is no conflict.
    const both = await get(join(url, `${url.includes('/changes') ? 'since' : 'cursor'}=${encodeURIComponent(next)}&nextCursor=${encodeURIComponent(next)}`));
    expect(both.body).toEqual(viaCursor.body);
  });

  it.each(LISTS.map((l, i) => [i, l]))('list %i: cursor and nextCursor with different values is 400 VALIDATION_ERROR', async (_i, l) => {
    const url = typeof l === 'function' ? l() : l;
    const next = (await get(url)).body.nextCursor;
    const name = url.includes('/changes') ? 'since' : 'cursor';
    const r = await get(join(url, `${name}=${encodeURIComponent(next)}&nextCursor=other`));
    expect(r.status).toBe(400);
    expect(r.body).toMatchObject({ error: true, code: 'VALIDATION_ERROR' });
    expect(r.body.message).toMatch(/'nextCursor'.*differ/);
  });

  it('POST /records/{object}/search takes ?nextCursor= too', async () => {
    const first = await call(t.app, t.a.adminToken, 'POST', '/api/v1/records/contacts/search?limit=2', {});
    const viaNext = await call(t.app, t.a.adminToken, 'POST', `/api/v1/records/contacts/search?limit=2&nextCursor=${encodeURIComponent(first.body.nextCursor)}`, {});
    const viaCursor = await call(t.app, t.a.adminToken, 'POST', `/api/v1/records/contacts/search?limit=2&cursor=${encodeURIComponent(first.body.nextCursor)}`, {});
    expect(viaNext.status).toBe(200);
    expect(viaNext.body).toEqual(viaCursor.body);
  });
});

describe('export JSON total is the number of matching records, as a list total is', () => {
  let t: TestApp;
  const N = 1358;
  beforeAll(async () => {
    t = await testApp();
    await createMany(t.a.ctx, 'companies', Array.from({ length: N }, (_, i) => ({ name: `Co ${i}`, industry: i % 2 ? 'software' : 'retail' })));
  });
  afterAll(() => t?.close());

  it('GET /export: total 1,358 with 1,000 exported (the default limit), and a nextCursor that continues it', async () => {
    const r = await call(t.app, t.a.adminToken, 'GET', '/api/v1/export/companies?format=json&fields=name');
    expect(r.status).toBe(200);
    expect(r.body.format).toBe('json');
    expect(r.body.records).toHaveLength(1000);
    expect(r.body.total).toBe(N);
    const list = await call(t.app, t.a.adminToken, 'GET', '/api/v1/records/companies?limit=1');
    expect(r.body.total).toBe(list.body.total);
    expect(typeof r.body.nextCursor).toBe('string');
    const rest = await call(t.app, t.a.adminToken, 'GET', `/api/v1/export/companies?format=json&fields=name&nextCursor=${encodeURIComponent(r.body.nextCursor)}`);
    expect(rest.body.records).toHaveLength(N - 1000);
    expect(rest.body.total).toBe(N);
    expect(rest.body).not.toHaveProperty('nextCursor');
    const names = new Set([...r.body.records, ...rest.body.records].map((x: { name: string }) => x.name));
    expect(names.size).toBe(N);
  });

  it('with a filter, total counts the matches', async () => {
    const r = await call(t.app, t.a.adminToken, 'GET', '/api/v1/export/companies?format=json&fields=name&filter_field=industry&filter_operator=eq&filter_value=software&limit=10');
    expect(r.status).toBe(200);
    expect(r.body.records).toHaveLength(10);
    expect(r.body.total).toBe(N / 2);
  });

  it('an export that holds every match reads as the document: format, records, total (no nextCursor)', async () => {
    const r = await call(t.app, t.a.adminToken, 'GET', `/api/v1/export/companies?format=json&fields=name&limit=${N}`);
    expect(r.body.records).toHaveLength(N);
    expect(Object.keys(r.body)).toEqual(['format', 'records', 'total']);
    expect(r.body.total).toBe(N);
  });
});

describe('duplicates: people match by full name alone, below name + company', () => {
  let t: TestApp;
  const detect = async (body: Record<string, unknown> = {}) => {
    const r = await call(t.app, t.a.adminToken, 'POST', '/api/v1/duplicates', { action: 'detect', object: 'contacts', ...body });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    return r.body.data as { score: number; records: { id: string; name: string }[]; evidence: { kind: string }[] }[];
  };
  const clusterOf = (data: Awaited<ReturnType<typeof detect>>, id: string) => data.find((c) => c.records.some((r) => r.id === id));
  let ids: Record<string, string>;
  beforeAll(async () => {
    t = await testApp();
    const [acme, globex] = (await createRecords(t.a.ctx, 'companies', [{ name: 'Acme' }, { name: 'Globex' }])) as { id: string }[];
    const rows = [
      { key: 'noCo1', first_name: 'Grace', last_name: 'Hopper' },
      { key: 'noCo2', first_name: 'grace', last_name: 'HOPPER' },
      { key: 'sameCo1', first_name: 'Alan', last_name: 'Turing', company: acme!.id },
      { key: 'sameCo2', first_name: 'Alan', last_name: 'Turing', company: acme!.id },
      { key: 'otherCo1', first_name: 'Ada', last_name: 'Lovelace', company: acme!.id },
      { key: 'otherCo2', first_name: 'Ada', last_name: 'Lovelace', company: globex!.id },
      { key: 'mail1', first_name: 'Kat', last_name: 'Johnson', phone: '+1 415 555 0100' },
      { key: 'mail2', first_name: 'Katherine', last_name: 'Coleman', phone: '(415) 555-0100' },
    ];
    const made = (await createRecords(t.a.ctx, 'contacts', rows.map(({ key: _k, ...r }) => r))) as { id: string }[];
    ids = Object.fromEntries(rows.map((r, i) => [r.key, made[i]!.id]));
  });
  afterAll(() => t?.close());

  it('two people with the same first and last name and no company are a cluster, by name', async () => {
    const c = clusterOf(await detect(), ids.noCo1!);
    expect(c, 'no cluster for the two Grace Hoppers').toBeDefined();
    expect(c!.records.map((r) => r.id).sort()).toEqual([ids.noCo1, ids.noCo2].sort());
    expect(c!.evidence.map((e) => e.kind)).toEqual(['name_only']);
  });

  it('import (the document: "email, phone, and name matching"): the same full name with no company on either side is a duplicate', async () => {
    const r = await call(t.app, t.a.adminToken, 'POST', '/api/v1/import/contacts', {
      records: [
        { first_name: 'Grace', last_name: 'Hopper' },
        { first_name: 'Edsger', last_name: 'Dijkstra' },
        { first_name: 'Edsger', last_name: 'Dijkstra' },
      ],
    });
    expect(r.body).toEqual({ object_name: 'contacts', created: 1, duplicates: 2, failed: 0, errors: [] });
    // A name at a different company is left to the detection scan (importing it skips nothing).
    const other = await call(t.app, t.a.adminToken, 'POST', '/api/v1/import/contacts', { records: [{ first_name: 'Ada', last_name: 'Lovelace', company_name: 'Initech' }] });
    expect(other.body).toMatchObject({ created: 1, duplicates: 0 });
  });

  it('the same name at different companies is found too', async () => {
    const c = clusterOf(await detect(), ids.otherCo1!);
    expect(c?.records.map((r) => r.id)).toEqual(expect.arrayContaining([ids.otherCo1, ids.otherCo2]));
    expect(c!.evidence.map((e) => e.kind)).toEqual(['name_only']);
  });

  it('name alone scores lower than name with the same company, and lower than a phone match', async () => {
    const data = await detect();
    const alone = clusterOf(data, ids.noCo1!)!.score;
    const otherCo = clusterOf(data, ids.otherCo1!)!.score;
    const sameCo = clusterOf(data, ids.sameCo1!)!.score;
    const mail = clusterOf(data, ids.mail1!)!.score;
    expect(alone).toBeLessThan(sameCo);
    expect(otherCo).toBeLessThan(sameCo);
    expect(alone).toBeLessThan(mail);
    // Still above the default min_score (0.5), so detect shows them.
    expect(alone).toBeGreaterThanOrEqual(0.5);
  });

  it('a record_id query finds the name-only match', async () => {
    const data = await detect({ record_id: ids.noCo2 });
    expect(data).toHaveLength(1);
  });
});
