import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApp } from '../src/http/app.js';
import { TASK_PRIORITIES, TASK_STATUSES } from '../src/services/system-objects.js';
import { createToken, createUser, revokeToken, type User } from '../src/services/users.js';
import { decimal, present, prng, type Rec, toCents } from './aggregate-reference.js';
import { call, freshDb, listAll, makeWorkspace, silent, type TestApp, testApp } from './helpers.js';

/**
 * POST /v1/tasks/aggregate after bitrix24-tasks-aggregate.txt: every example request of the document
 * sent verbatim (the same bytes, the same headers), answers checked against values recomputed here
 * from the tasks read back. Field mapping: timeEstimate -> time_estimate, responsibleId -> assignee,
 * UF_CRM_TASK_BUDGET -> the custom field crm_task_budget, groupId -> null (no workgroups).
 */

const URL = '/v1/tasks/aggregate';
/** Bitrix24 name -> our field, for the reference computations. */
const OURS: Record<string, string> = { status: 'status', priority: 'priority', responsibleId: 'assignee', timeEstimate: 'time_estimate', UF_CRM_TASK_BUDGET: 'crm_task_budget' };

async function send(t: TestApp, payload: string | undefined, headers: Record<string, string | undefined>) {
  const res = await t.app.inject({ method: 'POST', url: URL, headers, ...(payload !== undefined ? { payload } : {}) });
  return { status: res.statusCode, body: res.json() as any, headers: res.headers };
}

function metric(fn: string, rs: Rec[], name: string): unknown {
  const f = OURS[name]!;
  const vs = present(rs, f) as number[];
  switch (fn) {
    case 'count':
      return vs.length;
    case 'sum':
      return f === 'crm_task_budget' ? decimal(vs.reduce((s, v) => s + toCents(v), 0n)) : vs.reduce((s, v) => s + v, 0);
    case 'avg':
      return vs.length ? vs.reduce((s, v) => s + v, 0) / vs.length : null;
    case 'min':
      return vs.length ? Math.min(...vs) : null;
    case 'max':
      return vs.length ? Math.max(...vs) : null;
  }
  throw new Error(fn);
}

function aggregates(rs: Rec[], ms: { field: string; function: string }[]) {
  const out: Record<string, Record<string, unknown>> = {};
  for (const m of ms) (out[m.field] ??= {})[m.function] = metric(m.function, rs, m.field);
  return out;
}

/** The document's groups: the grouping fields (Bitrix names), count and aggregates; in a canonical order for comparison. */
/** Bitrix24's task state codes for our statuses (the document's "status": "2", "5"...). */
const STATUS_CODE: Record<string, string> = { open: '2', in_progress: '3', completed: '5', waiting: '6', cancelled: '7' };
const bitrixValue = (b: string, v: unknown) => (b === 'status' && typeof v === 'string' ? STATUS_CODE[v] : v);

function groups(rs: Rec[], by: string[], ms: { field: string; function: string }[]): Rec[] {
  const m = new Map<string, Rec[]>();
  for (const r of rs) {
    const k = JSON.stringify(by.map((b) => (b === 'groupId' ? null : bitrixValue(b, r[OURS[b]!] ?? null))));
    m.set(k, [...(m.get(k) ?? []), r]);
  }
  return sortGroups(
    [...m.entries()].map(([k, members]) => {
      const vals = JSON.parse(k) as unknown[];
      return { ...Object.fromEntries(by.map((b, i) => [b, vals[i]])), count: members.length, aggregates: aggregates(members, ms) };
    }),
  );
}

const sortGroups = (gs: Rec[]) => [...gs].sort((x, y) => JSON.stringify(x).localeCompare(JSON.stringify(y)));

function expectAnswer(body: any, rs: Rec[], ms: { field: string; function: string }[], by?: string[]) {
  expect(body.success).toBe(true);
  const d = body.data;
  expect(d.count).toBe(rs.length);
  expect(d.aggregates).toEqual(aggregates(rs, ms));
  if (!by) {
    // "Without groupBy, the data.groups field is absent from the response."
    expect(d).not.toHaveProperty('groups');
    expect(d.meta).toEqual({ totalRecords: expect.any(Number), recordsProcessed: rs.length, truncated: false });
    return;
  }
  const g = groups(rs, by, ms);
  expect(sortGroups(d.groups)).toEqual(g);
  // Each element: grouping fields + count + aggregates, nothing else.
  for (const x of d.groups) expect(Object.keys(x)).toEqual([...by, 'count', 'aggregates']);
  expect(d.meta).toEqual({ totalRecords: expect.any(Number), recordsProcessed: rs.length, truncated: false, groupTotal: g.length, groupsTruncated: false });
}

describe('Bitrix24 tasks aggregate (POST /v1/tasks/aggregate)', () => {
  let t: TestApp;
  let users: User[];
  let tasks: Rec[];

  beforeAll(async () => {
    t = await testApp();
    // The document's numeric UF field and a string one.
    for (const f of [
      { name: 'crm_task_budget', type: 'CURRENCY' },
      { name: 'crm_task_area', type: 'TEXT' },
    ])
      expect((await call(t.app, t.a.adminToken, 'POST', '/api/v1/schema/tasks/fields', f)).status).toBe(201);
    users = [t.a.admin, t.a.member];
    for (const name of ['Ivan', 'Olga']) users.push(await createUser(t.db, t.a.workspace.id, { email: `${name.toLowerCase()}@alpha.test`, name, role: 'member' }));
    const r = prng(15);
    const data = Array.from({ length: 180 }, (_, i) => ({
      title: `Task ${i}`,
      status: r.pick(TASK_STATUSES),
      priority: r.pick(TASK_PRIORITIES),
      assignee: r.next() < 0.1 ? null : r.pick(users).id,
      time_estimate: r.next() < 0.15 ? null : r.int(0, 600) * 60,
      crm_task_budget: r.next() < 0.2 ? null : r.int(1, 5_000_000) / 100,
      crm_task_area: r.pick(['north', 'south']),
    }));
    for (let i = 0; i < data.length; i += 100) expect((await call(t.app, t.a.adminToken, 'POST', '/api/v1/records/tasks/batch/create', { records: data.slice(i, i + 100) })).status).toBe(201);
    // Another workspace's tasks are never counted.
    expect((await call(t.app, t.b.adminToken, 'POST', '/api/v1/records/tasks', { title: 'Beta task', time_estimate: 999 })).status).toBe(201);
    tasks = await listAll(t.a.ctx, 'tasks');
    expect(tasks).toHaveLength(180);
  });
  afterAll(() => t?.close());

  const main = [{ field: 'timeEstimate', function: 'sum' }];

  describe("the document's examples, verbatim", () => {
    it('curl — personal key', async () => {
      const r = await send(t, '{\n"aggregate": [\n{ "field": "timeEstimate", "function": "sum" }\n],\n"groupBy": "status"\n}', {
        'X-Api-Key': t.a.adminToken,
        'Content-Type': 'application/json',
      });
      expect(r.status).toBe(200);
      expectAnswer(r.body, tasks, main, ['status']);
      // The groups' sums add up to the total, and the counts to data.count.
      const gs = r.body.data.groups as any[];
      expect(gs.reduce((s, g) => s + g.aggregates.timeEstimate.sum, 0)).toBe(r.body.data.aggregates.timeEstimate.sum);
      expect(gs.reduce((s, g) => s + g.count, 0)).toBe(r.body.data.count);
    });

    it('curl — OAuth application (X-Api-Key and a Bearer user token)', async () => {
      const r = await send(t, '{\n"aggregate": [\n{ "field": "timeEstimate", "function": "sum" }\n],\n"groupBy": "status"\n}', {
        'X-Api-Key': t.a.adminToken,
        Authorization: `Bearer ${t.a.memberToken}`,
        'Content-Type': 'application/json',
      });
      expect(r.status).toBe(200);
      expectAnswer(r.body, tasks, main, ['status']);
    });

    it('JavaScript — personal key and OAuth application', async () => {
      const payload = JSON.stringify({ aggregate: [{ field: 'timeEstimate', function: 'sum' }], groupBy: 'status' });
      for (const headers of [
        { 'X-Api-Key': t.a.memberToken, 'Content-Type': 'application/json' },
        { 'X-Api-Key': t.a.adminToken, Authorization: `Bearer ${t.a.memberToken}`, 'Content-Type': 'application/json' },
      ]) {
        const r = await send(t, payload, headers);
        expect(r.status).toBe(200);
        const { success, data } = r.body;
        expect(success).toBe(true);
        expect(data.count).toBe(tasks.length);
        expectAnswer(r.body, tasks, main, ['status']);
      }
    });

    it('groupBy as an array: ["status", "responsibleId"]', async () => {
      const r = await send(t, '{"aggregate": [{ "field": "timeEstimate", "function": "sum" }], "groupBy": ["status", "responsibleId"]}', {
        'X-Api-Key': t.a.adminToken,
        'Content-Type': 'application/json',
      });
      expect(r.status).toBe(200);
      expectAnswer(r.body, tasks, main, ['status', 'responsibleId']);
    });

    it('{} — the total number of tasks', async () => {
      const r = await send(t, '{}', { 'X-Api-Key': t.a.adminToken, 'Content-Type': 'application/json' });
      expect(r.status).toBe(200);
      expect(r.body).toEqual({ success: true, data: { count: tasks.length, aggregates: {}, meta: { totalRecords: tasks.length, recordsProcessed: tasks.length, truncated: false } } });
    });

    it('{ "groupBy": "responsibleId" } — tasks per responsible person', async () => {
      const r = await send(t, '{ "groupBy": "responsibleId" }', { 'X-Api-Key': t.a.adminToken, 'Content-Type': 'application/json' });
      expect(r.status).toBe(200);
      expectAnswer(r.body, tasks, [], ['responsibleId']);
      expect(r.body.data.groups.find((g: any) => g.responsibleId === null)?.count).toBe(tasks.filter((x) => x.assignee === null).length);
    });

    it('sum over a numeric UF field by priority', async () => {
      const r = await send(t, '{\n"aggregate": [{ "field": "UF_CRM_TASK_BUDGET", "function": "sum" }],\n"groupBy": "priority"\n}', {
        'X-Api-Key': t.a.adminToken,
        'Content-Type': 'application/json',
      });
      expect(r.status).toBe(200);
      expectAnswer(r.body, tasks, [{ field: 'UF_CRM_TASK_BUDGET', function: 'sum' }], ['priority']);
    });

    it("filter by responsibleId, the request table's example", async () => {
      const who = users[2]!.id;
      const r = await send(t, JSON.stringify({ filter: { responsibleId: who } }), { 'X-Api-Key': t.a.adminToken, 'Content-Type': 'application/json' });
      expect(r.status).toBe(200);
      expectAnswer(
        r.body,
        tasks.filter((x) => x.assignee === who),
        [],
      );
      expect(r.body.data.meta.totalRecords).toBe(tasks.length);
    });

    it("400 — non-existent field, in the document's error shape", async () => {
      const r = await send(t, '{"aggregate": [{ "field": "noSuchField", "function": "sum" }]}', { 'X-Api-Key': t.a.adminToken, 'Content-Type': 'application/json' });
      expect(r.status).toBe(400);
      expect(r.body).toEqual({ success: false, error: { code: 'INVALID_PARAMS', message: expect.any(String) } });
      expect(r.body.error.message).toMatch(/^Unknown field 'noSuchField'\. Available: status, priority, responsibleId, groupId, timeEstimate, .*UF_CRM_TASK_BUDGET/);
    });
  });

  describe('every function, filters and groupId', () => {
    it('count, sum, avg, min and max over timeEstimate and a UF field, filtered with prefixes', async () => {
      const ms = ['count', 'sum', 'avg', 'min', 'max'].flatMap((fn) => [
        { field: 'timeEstimate', function: fn },
        { field: 'UF_CRM_TASK_BUDGET', function: fn },
      ]);
      const r = await send(t, JSON.stringify({ aggregate: ms, filter: { '>=timeEstimate': 3600, '!status': ['7'] }, groupBy: ['priority'] }), {
        'X-Api-Key': t.a.adminToken,
        'Content-Type': 'application/json',
      });
      expect(r.status).toBe(200);
      const rs = tasks.filter((x) => x.time_estimate !== null && (x.time_estimate as number) >= 3600 && x.status !== 'cancelled');
      const d = r.body.data;
      expect(d.count).toBe(rs.length);
      const want = aggregates(rs, ms);
      for (const m of ms) expect(d.aggregates[m.field][m.function]).toBeCloseTo(want[m.field]![m.function] as number, 6);
    });

    it('status as Bitrix24 state codes: in groups, and in filters (codes, numbers or our names)', async () => {
      const h = { 'X-Api-Key': t.a.adminToken, 'Content-Type': 'application/json' };
      const r = await send(t, JSON.stringify({ groupBy: 'status' }), h);
      expect(r.body.data.groups.map((g: Rec) => g.status).sort()).toEqual([...new Set(tasks.map((x) => STATUS_CODE[x.status as string]))].sort());
      const completed = tasks.filter((x) => x.status === 'completed').length;
      for (const value of ['5', 5, 'completed', ['5'], [5, '7']]) {
        const want = Array.isArray(value) && value.includes('7') ? completed + tasks.filter((x) => x.status === 'cancelled').length : completed;
        expect((await send(t, JSON.stringify({ filter: { status: value } }), h)).body.data.count, JSON.stringify(value)).toBe(want);
      }
      expect((await send(t, JSON.stringify({ filter: { '!status': '5' } }), h)).body.data.count).toBe(tasks.length - completed);
    });

    it('groupId: no task is in a workgroup (null for all)', async () => {
      const h = { 'X-Api-Key': t.a.adminToken, 'Content-Type': 'application/json' };
      let r = await send(t, JSON.stringify({ groupBy: ['groupId', 'status'] }), h);
      expect(r.status).toBe(200);
      expectAnswer(r.body, tasks, [], ['groupId', 'status']);
      r = await send(t, JSON.stringify({ groupBy: 'groupId', aggregate: [{ field: 'groupId', function: 'count' }] }), h);
      expect(r.status).toBe(200);
      expect(r.body.data).toEqual({
        count: tasks.length,
        aggregates: { groupId: { count: 0 } },
        groups: [{ groupId: null, count: tasks.length, aggregates: { groupId: { count: 0 } } }],
        meta: { totalRecords: tasks.length, recordsProcessed: tasks.length, truncated: false, groupTotal: 1, groupsTruncated: false },
      });
      expect((await send(t, JSON.stringify({ filter: { groupId: 5 } }), h)).body.data.count).toBe(0);
      expect((await send(t, JSON.stringify({ filter: { groupId: 0 } }), h)).body.data.count).toBe(tasks.length);
      r = await send(t, JSON.stringify({ filter: { groupId: 5 }, groupBy: 'groupId' }), h);
      expect(r.body.data.groups).toEqual([]);
    });
  });

  describe("the document's errors: 400 INVALID_PARAMS", () => {
    const cases: [string, unknown, RegExp][] = [
      ['unknown function', { aggregate: [{ field: 'timeEstimate', function: 'median' }] }, /Unknown function 'median'\. Allowed: count, sum, avg, min, max/],
      ['non-numeric UF field in sum', { aggregate: [{ field: 'UF_CRM_TASK_AREA', function: 'sum' }] }, /'UF_CRM_TASK_AREA' is a string field/],
      ['min on a non-numeric standard field', { aggregate: [{ field: 'status', function: 'min' }] }, /min is meaningless on 'status'/],
      ['max on an identifier', { aggregate: [{ field: 'responsibleId', function: 'max' }] }, /max is meaningless on 'responsibleId'/],
      ['groupBy outside the aggregatable list', { groupBy: 'timeEstimate' }, /outside the aggregatable list/],
      ['groupBy on a filter-only field', { groupBy: ['status', 'title'] }, /'title' is not supported: it is outside the aggregatable list/],
      ['more than 5 groupBy fields', { groupBy: ['status', 'priority', 'responsibleId', 'groupId', 'UF_CRM_TASK_AREA', 'UF_CRM_TASK_BUDGET'] }, /at most 5/],
      ['reserved keyword in groupBy', { groupBy: ['status', 'count'] }, /'count' is a reserved keyword/],
      ['reserved keyword meta', { groupBy: 'meta' }, /'meta' is a reserved keyword/],
      ['unknown groupBy field', { groupBy: 'UF_NOPE' }, /Unknown field 'UF_NOPE'/],
      ['unknown filter field', { filter: { nope: 1 } }, /Unknown filter field 'nope'/],
      ['an unknown body key', { aggregates: [] }, /Invalid request body/],
      ['groupBy of the wrong type', { groupBy: 5 }, /Invalid request body at 'groupBy'/],
    ];
    it.each(cases)('%s', async (_name, body, message) => {
      const r = await send(t, JSON.stringify(body), { 'X-Api-Key': t.a.adminToken, 'Content-Type': 'application/json' });
      expect(r.status).toBe(400);
      expect(r.body).toEqual({ success: false, error: { code: 'INVALID_PARAMS', message: expect.stringMatching(message) } });
    });

    it('malformed JSON, NUL in text and a body nested too deep', async () => {
      const cases: [string, RegExp][] = [
        ['{"groupBy": ', /JSON/],
        ['{"filter": {"title": "a\\u0000b"}}', /'filter\.title' contains a NUL character/],
        [JSON.stringify({ filter: { title: JSON.parse('['.repeat(70) + ']'.repeat(70)) } }), /nest|deep/i],
      ];
      for (const [payload, message] of cases) {
        const r = await send(t, payload, { 'X-Api-Key': t.a.adminToken, 'Content-Type': 'application/json' });
        expect(r.status).toBe(400);
        expect(r.body).toEqual({ success: false, error: { code: 'INVALID_PARAMS', message: expect.stringMatching(message) } });
      }
    });

    it('a text body: 415 in the same shape', async () => {
      const r = await send(t, 'groupBy=status', { 'X-Api-Key': t.a.adminToken, 'Content-Type': 'text/plain' });
      expect(r.status).toBe(415);
      expect(r.body).toMatchObject({ success: false, error: { code: 'UNSUPPORTED_MEDIA_TYPE' } });
    });
  });

  describe('authentication', () => {
    it('no key: 401 TOKEN_MISSING; an invalid or revoked key: 401 UNAUTHORIZED', async () => {
      const revoked = (await createToken(t.db, t.a.workspace.id, t.a.admin.id, 'to revoke')).token;
      expect((await send(t, '{}', { 'X-Api-Key': revoked, 'Content-Type': 'application/json' })).status).toBe(200);
      expect(await revokeToken(t.db, t.a.workspace.id, revoked.slice(0, 12))).toBe(1);
      let r = await send(t, '{}', { 'Content-Type': 'application/json' });
      expect(r.status).toBe(401);
      expect(r.body).toEqual({ success: false, error: { code: 'TOKEN_MISSING', message: expect.stringContaining('X-Api-Key') } });
      for (const headers of [
        { 'X-Api-Key': 'ksr_not_a_real_token' },
        { 'X-Api-Key': t.a.adminToken, Authorization: 'Bearer ksr_wrong' },
        { 'X-Api-Key': 'ksr_wrong', Authorization: `Bearer ${t.a.adminToken}` },
        { 'X-Api-Key': revoked },
        // An application key of one workspace with a user token of another.
        { 'X-Api-Key': t.b.adminToken, Authorization: `Bearer ${t.a.adminToken}` },
      ]) {
        r = await send(t, '{}', { ...headers, 'Content-Type': 'application/json' });
        expect(r.status).toBe(401);
        expect(r.body).toEqual({ success: false, error: { code: 'UNAUTHORIZED', message: expect.any(String) } });
      }
    });

    it('Bearer alone works too; each workspace counts its own tasks', async () => {
      const r = await send(t, '{}', { Authorization: `Bearer ${t.a.memberToken}`, 'Content-Type': 'application/json' });
      expect(r.body.data.count).toBe(tasks.length);
      const b = await send(t, '{"aggregate": [{"field": "timeEstimate", "function": "sum"}]}', { 'X-Api-Key': t.b.memberToken, 'Content-Type': 'application/json' });
      expect(b.body.data).toMatchObject({ count: 1, aggregates: { timeEstimate: { sum: 999 } } });
    });

    it('failed authentications are throttled per address, shared with /api/v1', async () => {
      const db = await freshDb();
      const app = await buildApp({ db, log: silent, authFailuresPerMinute: 3 });
      try {
        const w = await makeWorkspace(db, 'gamma');
        const h = (key: string) => ({ 'X-Api-Key': key, 'Content-Type': 'application/json' });
        for (let i = 0; i < 2; i++) expect((await app.inject({ method: 'POST', url: URL, headers: h('ksr_bad'), payload: '{}' })).statusCode).toBe(401);
        expect((await call(app, 'ksr_bad', 'GET', '/api/v1/me')).status).toBe(401);
        // Blocked now, even with a valid key.
        const r = await app.inject({ method: 'POST', url: URL, headers: h(w.adminToken), payload: '{}' });
        expect(r.statusCode).toBe(429);
        expect(r.headers['retry-after']).toBeDefined();
        expect(r.json()).toEqual({ success: false, error: { code: 'RATE_LIMITED', message: expect.stringContaining('failed authentications') } });
      } finally {
        await app.close();
        await db.close();
      }
    });

    it('the per-token rate limit applies, keyed by the X-Api-Key', async () => {
      const db = await freshDb();
      const app = await buildApp({ db, log: silent, rateLimitPerMinute: 2 });
      try {
        const w = await makeWorkspace(db, 'delta');
        const go = (key: string) => app.inject({ method: 'POST', url: URL, headers: { 'X-Api-Key': key, 'Content-Type': 'application/json' }, payload: '{}' });
        expect((await go(w.adminToken)).statusCode).toBe(200);
        expect((await go(w.adminToken)).statusCode).toBe(200);
        const r = await go(w.adminToken);
        expect(r.statusCode).toBe(429);
        expect(r.json()).toEqual({ success: false, error: { code: 'RATE_LIMITED', message: expect.stringContaining('2 requests per minute') } });
        // Another key has its own count.
        expect((await go(w.memberToken)).statusCode).toBe(200);
      } finally {
        await app.close();
        await db.close();
      }
    });
  });
});
