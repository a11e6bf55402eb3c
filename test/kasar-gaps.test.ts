import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { configureBudget, DEFAULT_LIMITS } from '../src/services/budget.js';
import type { Ctx } from '../src/services/context.js';
import { createThread } from '../src/services/inbox.js';
import { createNote } from '../src/services/notes.js';
import { createRecords, updateRecord } from '../src/services/records.js';
import { createTask } from '../src/services/tasks.js';
import { call, freshPooledDb, type TestApp, testApp, testAppOn } from './helpers.js';
import { memoryClient } from './mcp-helpers.js';

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
    const cos = await createMany(
      t.a.ctx,
      'companies',
      Array.from({ length: GROUPS }, (_, i) => ({ name: `Co ${i}` })),
    );
    await createMany(
      t.a.ctx,
      'contacts',
      cos.map((c, i) => ({ first_name: `P${i}`, company: c.id })),
    );
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
      await createThread(t.a.ctx, {
        subject: `Thread ${i}`,
        messages: [{ direction: 'inbound', from_email: 'x@example.com', to: ['sales@alpha.test'], body: 'Hi', sent_at: `2026-01-0${i + 1}T10:00:00Z` }],
      });
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
    await createMany(
      t.a.ctx,
      'companies',
      Array.from({ length: N }, (_, i) => ({ name: `Co ${i}`, industry: i % 2 ? 'software' : 'retail' })),
    );
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
    const made = (await createRecords(
      t.a.ctx,
      'contacts',
      rows.map(({ key: _k, ...r }) => r),
    )) as { id: string }[];
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

describe('MULTI_SELECT: MIN, MAX and group_by', () => {
  let t: TestApp;
  type Row = { id: string; tags: string[] | null; status: string; value: number | null; company: string | null };
  let rows: Row[];
  /** Option values compare as text, as a SELECT's values do in MIN, MAX and group order. */
  const cmp = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);
  const TAGS = ['vip', 'newsletter', 'partner', 'investor', 'event'];
  const get = (q: string) => call(t.app, t.a.adminToken, 'GET', `/api/v1/aggregate/contacts?${q}`);
  const post = (body: unknown, path = '') => call(t.app, t.a.adminToken, 'POST', `/api/v1/aggregate/contacts${path}`, body);

  /** Reference groups: a record in each of its values' groups, the ones without any in the null group. */
  function byTag(rs: Row[]) {
    const m = new Map<string | null, Row[]>();
    for (const r of rs) for (const v of r.tags?.length ? r.tags : [null]) m.set(v, [...(m.get(v) ?? []), r]);
    return [...m.entries()].sort((x, y) => y[1].length - x[1].length || (x[0] === null ? -1 : y[0] === null ? 1 : cmp(x[0], y[0])));
  }

  beforeAll(async () => {
    // A file database with read workers, as `serve` runs: heavy reads carry the budget condition.
    t = await testAppOn(await freshPooledDb());
    // A custom field named like a column of SQLite's json_each: names must stay unambiguous.
    const f = await call(t.app, t.a.adminToken, 'POST', '/api/v1/schema/contacts/fields', { name: 'value', type: 'NUMBER' });
    expect(f.status, JSON.stringify(f.body)).toBe(201);
    const [co] = (await createRecords(t.a.ctx, 'companies', [{ name: 'Acme' }])) as { id: string }[];
    const input = Array.from({ length: 60 }, (_, i) => ({
      first_name: `P${i}`,
      tags: i % 7 === 0 ? null : TAGS.filter((_, k) => (i >> k) & 1 || (i + k) % 5 === 0),
      status: ['lead', 'customer'][i % 2],
      value: i % 4 === 0 ? null : i,
      company: i % 3 ? co!.id : null,
    }));
    await createRecords(t.a.ctx, 'contacts', input);
    const page = await call(t.app, t.a.adminToken, 'GET', '/api/v1/records/contacts?limit=100&fields=tags,status,value,company');
    rows = page.body.data;
    expect(rows).toHaveLength(60);
    expect(rows.some((r) => !r.tags)).toBe(true);
  });
  afterAll(() => t?.close());

  it('MIN and MAX: the smallest and largest option value over every value of every matching record', async () => {
    const all = rows.flatMap((r) => r.tags ?? []).sort(cmp);
    const min = await get('field=tags&function=MIN');
    expect(min.status, JSON.stringify(min.body)).toBe(200);
    expect(min.body).toMatchObject({ object_name: 'contacts', field: 'tags', function: 'MIN', value: all[0] });
    const max = await get('field=tags&function=MAX');
    expect(max.body.value).toBe(all.at(-1));
    // With a filter: over the matching records only.
    const hits = rows.filter((r) => r.tags && !r.tags.includes('event') && !r.tags.includes('investor'));
    const f = await get('field=tags&function=MIN&filter_field=tags&filter_operator=not_contains&filter_value=event');
    const g = await get(
      'field=tags&function=MIN&filters=' +
        encodeURIComponent(
          JSON.stringify({
            operator: 'and',
            conditions: [
              { field: 'tags', operator: 'not_contains', value: 'event' },
              { field: 'tags', operator: 'not_contains', value: 'investor' },
              { field: 'tags', operator: 'is_not_null' },
            ],
          }),
        ),
    );
    expect(f.status).toBe(200);
    expect(g.body.value).toBe(hits.flatMap((r) => r.tags!).sort(cmp)[0]);
  });

  it('MIN and MAX grouped by another field, and per group in POST', async () => {
    const r = await get('field=tags&function=MAX&group_by=status');
    expect(r.status).toBe(200);
    for (const g of r.body.results)
      expect(g.value).toBe(
        rows
          .filter((x) => x.status === g.group)
          .flatMap((x) => x.tags ?? [])
          .sort(cmp)
          .at(-1) ?? null,
      );
    const p = await post({ aggregate: [{ field: 'tags', function: 'min' }], groupBy: ['status'] });
    expect(p.status).toBe(200);
    expect(p.body.data.aggregates.tags.min).toBe(rows.flatMap((x) => x.tags ?? []).sort(cmp)[0]);
  });

  it('GET group_by a MULTI_SELECT: a record counts in each of its values, one without any in the null group', async () => {
    const r = await get('field=id&function=COUNT&group_by=tags');
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    const expected = byTag(rows).map(([group, members]) => ({ group, value: members.length, count: members.length }));
    expect(r.body.results).toEqual(expected);
    // The overall value counts records, not memberships.
    expect(r.body).toMatchObject({ value: rows.length, count: rows.length });
    const sum = await get('field=value&function=SUM&group_by=tags');
    expect(sum.body.results).toEqual(byTag(rows).map(([group, members]) => ({ group, value: members.reduce((s, m) => s + (m.value ?? 0), 0), count: members.length })));
    expect(sum.body.value).toBe(rows.reduce((s, m) => s + (m.value ?? 0), 0));
  });

  it('POST: groupBy tags with another field, metrics, a filter, a limit and meta that adds up', async () => {
    const filter = { operator: 'and', conditions: [{ field: 'status', operator: 'eq', value: 'lead' }] };
    const leads = rows.filter((r) => r.status === 'lead');
    const r = await post({
      aggregate: [
        { field: 'value', function: 'avg' },
        { field: 'value', function: 'count_distinct' },
      ],
      groupBy: ['tags', 'company'],
      filter,
    });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    const d = r.body.data;
    expect(d.count).toBe(leads.length);
    const vals = leads.map((x) => x.value).filter((v): v is number => v !== null);
    expect(d.aggregates.value.avg).toBeCloseTo(vals.reduce((s, v) => s + v, 0) / vals.length, 9);
    expect(d.aggregates.value.count_distinct).toBe(new Set(vals).size);
    let memberships = 0;
    for (const g of d.groups) {
      const members = leads.filter((x) => (g.tags === null ? !x.tags?.length : x.tags?.includes(g.tags)) && (x.company ?? null) === g.company);
      expect(g.count).toBe(members.length);
      memberships += g.count;
    }
    expect(memberships).toBe(byTag(leads).reduce((s, [, m]) => s + m.length, 0));
    const top = await post({ groupBy: ['tags'], limit: 2 });
    const tags = byTag(rows);
    expect(top.body.data.groups.map((g: { tags: string | null; count: number }) => [g.tags, g.count])).toEqual(tags.slice(0, 2).map(([k, m]) => [k, m.length]));
    expect(top.body.data.meta).toMatchObject({ groupTotal: tags.length, groupsTruncated: true, otherCount: tags.slice(2).reduce((s, [, m]) => s + m.length, 0), recordsProcessed: rows.length });
    expect(top.body.data.count).toBe(rows.length);
  });

  it('the tree: uniqueValues on a MULTI_SELECT, with sub-aggregates and a nested bucket', async () => {
    const r = await post(
      {
        aggregates: {
          by_tag: {
            uniqueValues: { property: 'tags', size: 10, aggregates: { total: { sum: { property: 'value' } }, lo: { min: { property: 'tags' } }, by_status: { uniqueValues: { property: 'status' } } } },
          },
        },
      },
      '/tree',
    );
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    const b = r.body.aggregates.by_tag;
    const expected = byTag(rows);
    expect(b.uniqueValueBuckets.map((x: { value: string | null; count: number }) => [x.value, x.count])).toEqual(expected.map(([k, m]) => [k, m.length]));
    expect(b.total).toBe(expected.length);
    expect(b.otherCount).toBe(0);
    for (const x of b.uniqueValueBuckets) {
      const members = expected.find(([k]) => k === x.value)![1];
      expect(x.aggregates.total.sum).toBe(members.reduce((s, m) => s + (m.value ?? 0), 0));
      expect(x.aggregates.lo.min).toBe(members.flatMap((m) => m.tags ?? []).sort(cmp)[0] ?? null);
      const st = x.aggregates.by_status.uniqueValueBuckets as { value: string; count: number }[];
      expect(st.reduce((s, y) => s + y.count, 0)).toBe(members.length);
    }
    // Nested under another bucket too, and cut by size with otherCount in memberships.
    const n = await post({ aggregates: { by_status: { uniqueValues: { property: 'status', aggregates: { tags: { uniqueValues: { property: 'tags', size: 2 } } } } } } }, '/tree');
    expect(n.status, JSON.stringify(n.body)).toBe(200);
    for (const s of n.body.aggregates.by_status.uniqueValueBuckets) {
      const tagged = byTag(rows.filter((x) => x.status === s.value));
      const inner = s.aggregates.tags;
      expect(inner.uniqueValueBuckets.map((x: { value: string | null; count: number }) => [x.value, x.count])).toEqual(tagged.slice(0, 2).map(([k, m]) => [k, m.length]));
      expect(inner.total).toBe(tagged.length);
      expect(inner.otherCount).toBe(tagged.slice(2).reduce((c, [, m]) => c + m.length, 0));
    }
  });

  it('MCP crm_aggregate groups by a MULTI_SELECT the same way', async () => {
    const client = await memoryClient(t.db, t.a);
    const r = (await client.callTool({ name: 'crm_aggregate', arguments: { object: 'contacts', groupBy: ['tags'], aggregate: [{ field: 'tags', function: 'max' }] } })) as any;
    expect(r.isError, JSON.stringify(r.content)).toBeFalsy();
    expect(r.structuredContent.groups.map((g: { values: { tags: string | null }; count: number }) => [g.values.tags, g.count])).toEqual(byTag(rows).map(([k, m]) => [k, m.length]));
    await client.close();
  });

  it("group by a related record's MULTI_SELECT (company.segments), in GET and in a tree", async () => {
    const f = await call(t.app, t.a.adminToken, 'POST', '/api/v1/schema/companies/fields', { name: 'segments', type: 'MULTI_SELECT', options: ['smb', 'mid', 'ent'] });
    expect(f.status, JSON.stringify(f.body)).toBe(201);
    const co = rows.find((r) => r.company)!.company!;
    await call(t.app, t.a.adminToken, 'PUT', `/api/v1/records/companies/${co}`, { segments: ['smb', 'mid'] });
    const withCo = rows.filter((r) => r.company).length;
    const expected = [
      { group: 'mid', value: withCo, count: withCo },
      { group: 'smb', value: withCo, count: withCo },
      { group: null, value: rows.length - withCo, count: rows.length - withCo },
    ].sort((a, b) => b.count - a.count || (a.group === null ? -1 : b.group === null ? 1 : cmp(a.group, b.group)));
    const r = await get('field=id&function=COUNT&group_by=company.segments');
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(r.body.results).toEqual(expected);
    const tr = await post({ aggregates: { s: { uniqueValues: { property: 'company.segments' } } } }, '/tree');
    expect(tr.body.aggregates.s.uniqueValueBuckets.map((b: { value: string | null; count: number }) => ({ group: b.value, value: b.count, count: b.count }))).toEqual(expected);
  });

  it('a histogram or interval on a MULTI_SELECT is refused with a 400 that says what applies', async () => {
    const r = await post({ groupBy: [{ field: 'tags', histogram: 10 }] });
    expect(r.status).toBe(400);
    expect(r.body).toMatchObject({ error: true, code: 'VALIDATION_ERROR' });
  });
});
