import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import type { Tool } from '@modelcontextprotocol/sdk/types.js';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { setClock } from '../src/services/clock.js';
import { FILTER_VALUE_HELP, type FilterGroup, type Operator } from '../src/services/filters.js';
import { createRecords, listRecords } from '../src/services/records.js';
import { localMidnight } from '../src/services/relative-dates.js';
import { createObject } from '../src/services/schema.js';
import { updateWorkspace } from '../src/services/workspace.js';
import { call, listAll, type TestApp, testApp } from './helpers.js';
import { callError, callOk, memoryClient } from './mcp-helpers.js';

/**
 * Agent-friendly filters: 'me', relative dates in the workspace time zone, related-record fields
 * (company.industry, owner.name) in filters, sort and groupBy, and errors that name the fix.
 * Expected answers come from bounds written out by hand below, never from the compiler.
 */

let t: TestApp;
let mcp: Client;
let tools: Tool[];
const api = (method: string, path: string, body?: unknown, token = t.a.adminToken) => call(t.app, token, method, `/api/v1${path}`, body);
const qs = (o: Record<string, string | number>) => new URLSearchParams(Object.entries(o).map(([k, v]): [string, string] => [k, String(v)])).toString();
const ids = (rs: Record<string, unknown>[]) => rs.map((r) => r.id as string).sort();
const and = (...conditions: { field: string; operator: Operator; value?: unknown }[]): FilterGroup => ({ operator: 'and', conditions });

beforeAll(async () => {
  t = await testApp();
  mcp = await memoryClient(t.db, t.a);
  tools = (await mcp.listTools()).tools;
});
afterAll(async () => {
  await mcp.close();
  await t.close();
});
afterEach(() => setClock(null));

describe('workspace time zone', () => {
  it('defaults to UTC; admins set an IANA zone over REST; members may not; shown in /me and crm_whoami', async () => {
    expect((await api('GET', '/workspace')).body.data).toMatchObject({ name: 'alpha', time_zone: 'UTC' });
    const denied = await api('PATCH', '/workspace', { time_zone: 'Europe/Paris' }, t.a.memberToken);
    expect(denied.status).toBe(403);
    const bad = await api('PATCH', '/workspace', { time_zone: 'Mars/Olympus' });
    expect(bad.status).toBe(400);
    expect(bad.body.message).toMatch(/IANA/);
    const unknown = await api('PATCH', '/workspace', { tz: 'UTC' });
    expect(unknown.body.message).toContain('time_zone');
    const ok = await api('PATCH', '/workspace', { time_zone: 'Europe/Paris' });
    expect(ok.status).toBe(200);
    expect(ok.body.data.time_zone).toBe('Europe/Paris');
    expect((await api('GET', '/me')).body.data.time_zone).toBe('Europe/Paris');
    expect((await callOk(mcp, tools, 'crm_whoami', {})).time_zone).toBe('Europe/Paris');
    // The other workspace keeps its own zone.
    expect((await call(t.app, t.b.adminToken, 'GET', '/api/v1/me')).body.data.time_zone).toBe('UTC');
    await updateWorkspace(t.a.ctx, { time_zone: 'UTC' });
  });
});

describe("'me' on fields relating to users", () => {
  let mine: string[];
  let theirs: string[];
  let nobody: string[];
  beforeAll(async () => {
    mine = await createRecords(t.a.ctx, 'contacts', [
      { first_name: 'Me1', owner: t.a.admin.id },
      { first_name: 'Me2', owner: t.a.admin.id },
    ]).then(ids);
    theirs = await createRecords(t.a.ctx, 'contacts', [{ first_name: 'Them', owner: t.a.member.id }]).then(ids);
    nobody = await createRecords(t.a.ctx, 'contacts', [{ first_name: 'Nobody' }]).then(ids);
  });

  it('REST: owner eq me is the token user, in query strings and search bodies, in in/not_in lists', async () => {
    const asAdmin = await api('GET', `/records/contacts?${qs({ filter_field: 'owner', filter_operator: 'eq', filter_value: 'me', limit: 100 })}`);
    expect(asAdmin.status).toBe(200);
    expect(ids(asAdmin.body.data)).toEqual(mine);
    const asMember = await api('GET', `/records/contacts?${qs({ filter_field: 'owner', filter_operator: 'eq', filter_value: 'me' })}`, undefined, t.a.memberToken);
    expect(ids(asMember.body.data)).toEqual(theirs);
    const list = await api('POST', '/records/contacts/search', { operator: 'and', conditions: [{ field: 'owner', operator: 'in', value: ['me', t.a.member.id] }], limit: 100 });
    expect(ids(list.body.data)).toEqual([...mine, ...theirs].sort());
    const comma = await api('GET', `/records/contacts?${qs({ filter_field: 'owner', filter_operator: 'in', filter_value: 'me', limit: 100 })}`, undefined, t.a.memberToken);
    expect(ids(comma.body.data)).toEqual(theirs);
    const not = await api('POST', '/records/contacts/search', { operator: 'and', conditions: [{ field: 'owner', operator: 'neq', value: 'me' }], limit: 100 });
    expect(ids(not.body.data)).toEqual([...theirs, ...nobody].sort());
    const created = await api('POST', '/records/contacts/search', { operator: 'and', conditions: [{ field: 'created_by', operator: 'eq', value: 'me' }], limit: 100 }, t.a.memberToken);
    expect(created.body.data).toEqual([]);
  });

  it('MCP: crm_search and crm_aggregate take me', async () => {
    const r = await callOk(mcp, tools, 'crm_search', { object: 'contacts', filter: and({ field: 'owner', operator: 'eq', value: 'me' }), limit: 100 });
    expect(ids(r.data)).toEqual(mine);
    const n = await callOk(mcp, tools, 'crm_aggregate', { object: 'contacts', filter: and({ field: 'owner', operator: 'in', value: ['me'] }) });
    expect(n.count).toBe(mine.length);
  });

  it("'me' on a field that cannot hold a user says which fields take it", async () => {
    const e = await api('POST', '/records/contacts/search', { operator: 'and', conditions: [{ field: 'company', operator: 'eq', value: 'me' }] });
    expect(e.status).toBe(400);
    expect(e.body.message).toMatch(/'me'.*users.*company.*RELATION pointing to companies.*owner/s);
    const text = await callError(mcp, 'crm_search', { object: 'contacts', filter: and({ field: 'do_not_contact', operator: 'eq', value: 'me' }) });
    expect(text).toContain("Fields of contacts that take 'me': created_by, owner");
    // On a text field 'me' is just text.
    const txt = await api('POST', '/records/contacts/search', { operator: 'and', conditions: [{ field: 'first_name', operator: 'eq', value: 'me' }] });
    expect(txt.status).toBe(200);
  });
});

describe('relative dates against a fixed clock, in America/New_York', () => {
  // 2024-03-13T03:30Z is Tuesday 2024-03-12, 23:30 in New York: 'today' there is still the 12th.
  // Summer time began on Sunday 2024-03-10, so last_week spans the change (EST -5 -> EDT -4).
  const NOW = Date.parse('2024-03-13T03:30:00Z');
  const EST = (d: string) => `${d}T05:00:00.000Z`;
  const EDT = (d: string) => `${d}T04:00:00.000Z`;
  const PERIODS: [word: string, start: string, end: string, startAt: string, endAt: string][] = [
    ['today', '2024-03-12', '2024-03-13', EDT('2024-03-12'), EDT('2024-03-13')],
    ['yesterday', '2024-03-11', '2024-03-12', EDT('2024-03-11'), EDT('2024-03-12')],
    ['tomorrow', '2024-03-13', '2024-03-14', EDT('2024-03-13'), EDT('2024-03-14')],
    ['this_week', '2024-03-11', '2024-03-18', EDT('2024-03-11'), EDT('2024-03-18')],
    ['last_week', '2024-03-04', '2024-03-11', EST('2024-03-04'), EDT('2024-03-11')],
    ['next_week', '2024-03-18', '2024-03-25', EDT('2024-03-18'), EDT('2024-03-25')],
    ['this_month', '2024-03-01', '2024-04-01', EST('2024-03-01'), EDT('2024-04-01')],
    ['last_month', '2024-02-01', '2024-03-01', EST('2024-02-01'), EST('2024-03-01')],
    ['next_month', '2024-04-01', '2024-05-01', EDT('2024-04-01'), EDT('2024-05-01')],
    ['this_quarter', '2024-01-01', '2024-04-01', EST('2024-01-01'), EDT('2024-04-01')],
    ['last_quarter', '2023-10-01', '2024-01-01', EDT('2023-10-01'), EST('2024-01-01')],
    ['next_quarter', '2024-04-01', '2024-07-01', EDT('2024-04-01'), EDT('2024-07-01')],
    ['this_year', '2024-01-01', '2025-01-01', EST('2024-01-01'), EST('2025-01-01')],
    ['last_year', '2023-01-01', '2024-01-01', EST('2023-01-01'), EST('2024-01-01')],
    ['last_7_days', '2024-03-06', '2024-03-13', EST('2024-03-06'), EDT('2024-03-13')],
    ['Last 7 days', '2024-03-06', '2024-03-13', EST('2024-03-06'), EDT('2024-03-13')],
    ['next_30_days', '2024-03-12', '2024-04-11', EDT('2024-03-12'), EDT('2024-04-11')],
  ];
  const DAY = 86_400_000;
  const dayShift = (d: string, n: number) => new Date(Date.parse(`${d}T00:00:00Z`) + n * DAY).toISOString().slice(0, 10);
  const msShift = (iso: string, n: number) => new Date(Date.parse(iso) + n).toISOString();
  type Ev = { id: string; day: string | null; at: string | null };
  let events: Ev[] = [];

  beforeAll(async () => {
    await createObject(t.a.ctx, {
      name: 'events',
      fields: [
        { name: 'title', type: 'TEXT' },
        { name: 'day', type: 'DATE' },
        { name: 'at', type: 'DATETIME' },
      ],
    });
    await updateWorkspace(t.a.ctx, { time_zone: 'America/New_York' });
    // Each boundary of each period, just inside and just outside.
    const days = new Set<string>();
    const ats = new Set<string>();
    for (const [, s, e, sa, ea] of PERIODS) {
      for (const d of [dayShift(s, -1), s, dayShift(e, -1), e]) days.add(d);
      for (const a of [msShift(sa, -1), sa, msShift(ea, -1), ea]) ats.add(a);
    }
    const dayList = [...days];
    const atList = [...ats];
    const rows = Array.from({ length: Math.max(dayList.length, atList.length) }, (_, i) => ({ title: `e${i}`, day: dayList[i] ?? null, at: atList[i] ?? null }));
    rows.push({ title: 'empty', day: null, at: null });
    await createRecords(t.a.ctx, 'events', rows, { max: 1000 });
    events = (await listAll(t.a.ctx, 'events')).map((r) => ({ id: r.id as string, day: r.day as string | null, at: r.at as string | null }));
  });
  afterAll(async () => {
    await updateWorkspace(t.a.ctx, { time_zone: 'UTC' });
  });

  it('local midnight is found through Intl, also where a zone skips midnight', () => {
    expect(localMidnight('America/New_York', '2024-03-10')).toBe('2024-03-10T05:00:00.000Z');
    expect(localMidnight('America/New_York', '2024-03-11')).toBe('2024-03-11T04:00:00.000Z');
    expect(localMidnight('America/New_York', '2024-11-04')).toBe('2024-11-04T05:00:00.000Z');
    // Chile moved its clocks from 00:00 to 01:00 on 2024-09-08: that day begins at 01:00 (-03).
    expect(localMidnight('America/Santiago', '2024-09-08')).toBe('2024-09-08T04:00:00.000Z');
    expect(localMidnight('Asia/Kolkata', '2024-03-12')).toBe('2024-03-11T18:30:00.000Z');
  });

  it('every period and operator on DATE and DATETIME fields matches the hand-written bounds', async () => {
    setClock(NOW);
    const check = async (field: 'day' | 'at', word: string, s: string, e: string) => {
      const val = (r: Ev) => r[field];
      const inside = (r: Ev) => val(r) !== null && val(r)! >= s && val(r)! < e;
      const expected: Record<string, (r: Ev) => boolean> = {
        eq: inside,
        neq: (r) => !inside(r),
        gt: (r) => val(r) !== null && val(r)! >= e,
        gte: (r) => val(r) !== null && val(r)! >= s,
        lt: (r) => val(r) !== null && val(r)! < s,
        lte: (r) => val(r) !== null && val(r)! < e,
        between: inside,
        in: inside,
        not_in: (r) => !inside(r),
      };
      for (const [op, pred] of Object.entries(expected)) {
        const value = op === 'between' ? [word, word] : op === 'in' || op === 'not_in' ? [word] : word;
        const got = (await listAll(t.a.ctx, 'events', and({ field, operator: op as Operator, value }))).map((r) => r.id as string).sort();
        expect(got, `${field} ${op} ${word}`).toEqual(
          events
            .filter(pred)
            .map((r) => r.id)
            .sort(),
        );
      }
    };
    for (const [word, s, e, sa, ea] of PERIODS) {
      await check('day', word, s, e);
      await check('at', word, sa, ea);
    }
  });

  it('mixes periods and literals: between a date and a period, in with several periods', async () => {
    setClock(NOW);
    const got = await listAll(t.a.ctx, 'events', and({ field: 'day', operator: 'between', value: ['2024-03-01', 'yesterday'] }));
    expect(ids(got)).toEqual(
      events
        .filter((r) => r.day !== null && r.day >= '2024-03-01' && r.day < '2024-03-12')
        .map((r) => r.id)
        .sort(),
    );
    const two = await listAll(t.a.ctx, 'events', and({ field: 'at', operator: 'in', value: ['today', 'tomorrow'] }));
    expect(ids(two)).toEqual(
      events
        .filter((r) => r.at !== null && r.at >= EDT('2024-03-12') && r.at < EDT('2024-03-14'))
        .map((r) => r.id)
        .sort(),
    );
    // A bare date keeps its meaning: eq on a DATE is that day.
    const bare = await listAll(t.a.ctx, 'events', and({ field: 'day', operator: 'eq', value: '2024-03-12' }));
    expect(bare.map((r) => r.day)).toEqual(['2024-03-12']);
  });

  it('the same words over REST query strings and MCP, in the zone the workspace has', async () => {
    setClock(NOW);
    const today = events
      .filter((r) => r.at !== null && r.at >= EDT('2024-03-12') && r.at < EDT('2024-03-13'))
      .map((r) => r.id)
      .sort();
    const rest = await api('GET', `/records/events?${qs({ filter_field: 'at', filter_operator: 'eq', filter_value: 'today', limit: 100 })}`);
    expect(ids(rest.body.data)).toEqual(today);
    const viaMcp = await callOk(mcp, tools, 'crm_search', { object: 'events', filter: and({ field: 'at', operator: 'eq', value: 'today' }), limit: 100 });
    expect(ids(viaMcp.data)).toEqual(today);
    const agg = await api('GET', `/aggregate/events?${qs({ field: 'id', function: 'COUNT', filter_field: 'day', filter_operator: 'eq', filter_value: 'this_week' })}`);
    expect(agg.body.value).toBe(events.filter((r) => r.day !== null && r.day >= '2024-03-11' && r.day < '2024-03-18').length);
  });

  it("tasks: due_from / due_to take relative dates, and 'today' modes default to the workspace zone", async () => {
    setClock(NOW);
    await createRecords(t.a.ctx, 'tasks', [
      { title: 'late evening before', due_at: msShift(EDT('2024-03-12'), -1) },
      { title: 'first thing today', due_at: EDT('2024-03-12') },
      { title: 'last thing today', due_at: msShift(EDT('2024-03-13'), -1) },
      { title: 'tomorrow', due_at: EDT('2024-03-13') },
    ]);
    const titles = async (q: string) => {
      const r = await api('GET', `/tasks?limit=100&${q}`);
      expect(r.status, JSON.stringify(r.body)).toBe(200);
      return r.body.data.map((x: { title: string }) => x.title).sort();
    };
    expect(await titles('due_from=today&due_to=today')).toEqual(['first thing today', 'last thing today']);
    expect(await titles('due_from=next-week')).toEqual([]);
    expect(await titles('mode=today')).toEqual(['first thing today', 'last thing today']);
    // Asked in its own zone, a task list reads relative dates there: in UTC it is already the 13th.
    expect(await titles('due_from=today&tz=UTC')).toEqual(['last thing today', 'tomorrow']);
  });

  it('a 25-hour day (New York, end of summer time) and a zone east of UTC (Kolkata, +05:30)', async () => {
    await createObject(t.a.ctx, {
      name: 'moments',
      fields: [
        { name: 'label', type: 'TEXT' },
        { name: 'at', type: 'DATETIME' },
      ],
    });
    const marks = [
      '2024-11-03T03:59:59.999Z',
      '2024-11-03T04:00:00.000Z',
      '2024-11-04T04:59:59.999Z',
      '2024-11-04T05:00:00.000Z',
      '2024-10-28T03:59:59.999Z',
      '2024-10-28T04:00:00.000Z',
      '2024-03-11T18:29:59.999Z',
      '2024-03-11T18:30:00.000Z',
      '2024-03-12T18:29:59.999Z',
      '2024-03-12T18:30:00.000Z',
    ];
    await createRecords(
      t.a.ctx,
      'moments',
      marks.map((at, i) => ({ label: `m${i}`, at })),
    );
    const match = async (value: string) => (await listAll(t.a.ctx, 'moments', and({ field: 'at', operator: 'eq', value }))).map((r) => r.at as string).sort();
    const between = (lo: string, hi: string) => marks.filter((m) => m >= lo && m < hi).sort();
    // Sunday 2024-11-03, 23:30 EST: the clocks went back at 02:00 that morning.
    setClock(Date.parse('2024-11-04T04:30:00Z'));
    expect(await match('today')).toEqual(between('2024-11-03T04:00:00.000Z', '2024-11-04T05:00:00.000Z'));
    expect(await match('this_week')).toEqual(between('2024-10-28T04:00:00.000Z', '2024-11-04T05:00:00.000Z'));
    await updateWorkspace(t.a.ctx, { time_zone: 'Asia/Kolkata' });
    try {
      // 2024-03-12T18:29Z is 23:59 on the 12th in Kolkata; a minute later it is the 13th.
      setClock(Date.parse('2024-03-12T18:29:00Z'));
      expect(await match('today')).toEqual(between('2024-03-11T18:30:00.000Z', '2024-03-12T18:30:00.000Z'));
      setClock(Date.parse('2024-03-12T18:30:00Z'));
      expect(await match('yesterday')).toEqual(between('2024-03-11T18:30:00.000Z', '2024-03-12T18:30:00.000Z'));
    } finally {
      await updateWorkspace(t.a.ctx, { time_zone: 'America/New_York' });
    }
  });

  it('errors: a relative date on a non-date field names the date fields; N must be positive', async () => {
    setClock(NOW);
    const e = await api('POST', '/records/opportunities/search', { operator: 'and', conditions: [{ field: 'amount', operator: 'gt', value: 'last_month' }] });
    expect(e.status).toBe(400);
    expect(e.body.message).toMatch(/relative date.*DATE and DATETIME.*amount.*CURRENCY.*close_date/s);
    const zero = await api('POST', '/records/events/search', { operator: 'and', conditions: [{ field: 'day', operator: 'eq', value: 'last_0_days' }] });
    expect(zero.status).toBe(400);
    expect(zero.body.message).toMatch(/whole number from 1/);
  });
});

describe('related-record fields: filter, sort, groupBy', () => {
  const NAMES = ['Acme', 'Globex', 'Initech', null] as const;
  let companies: Map<string, { id: string; name: string; industry: string | null }>;
  let contacts: { id: string; company: string | null; owner: string | null; seq: number }[];

  beforeAll(async () => {
    const cs = await createRecords(t.b.ctx, 'companies', [
      { name: 'Globex', industry: 'software' },
      { name: 'Acme', industry: 'finance' },
      { name: 'Initech', industry: 'software' },
      { name: 'Hooli' },
    ]);
    companies = new Map(cs.map((c) => [c.id, { id: c.id, name: c.name as string, industry: (c.industry as string | null) ?? null }]));
    const byName = new Map(cs.map((c) => [c.name as string, c.id]));
    const rows = Array.from({ length: 23 }, (_, i) => {
      const name = NAMES[i % NAMES.length];
      const company = i % 7 === 6 ? byName.get('Hooli')! : name ? byName.get(name)! : null;
      const owner = i % 3 === 0 ? t.b.admin.id : i % 3 === 1 ? t.b.member.id : null;
      return { first_name: `C${i}`, company, owner };
    });
    const made = await createRecords(t.b.ctx, 'contacts', rows);
    contacts = made.map((c, i) => ({ id: c.id, company: (c.company as string | null) ?? null, owner: (c.owner as string | null) ?? null, seq: i }));
  });

  const companyName = (c: { company: string | null }) => (c.company ? companies.get(c.company)!.name : null);
  const industry = (c: { company: string | null }) => (c.company ? companies.get(c.company)!.industry : null);

  it('filters on company.industry and owner.name with the related field type, over REST and MCP', async () => {
    const api = (m: string, p: string, b?: unknown) => call(t.app, t.b.adminToken, m, `/api/v1${p}`, b);
    const sw = await api('GET', `/records/contacts?${qs({ filter_field: 'company.industry', filter_operator: 'eq', filter_value: 'software', limit: 100 })}`);
    expect(ids(sw.body.data)).toEqual(
      contacts
        .filter((c) => industry(c) === 'software')
        .map((c) => c.id)
        .sort(),
    );
    // neq includes contacts with no company or a company without an industry.
    const notSw = await api('POST', '/records/contacts/search', { operator: 'and', conditions: [{ field: 'company.industry', operator: 'neq', value: 'software' }], limit: 100 });
    expect(ids(notSw.body.data)).toEqual(
      contacts
        .filter((c) => industry(c) !== 'software')
        .map((c) => c.id)
        .sort(),
    );
    const empty = await api('POST', '/records/contacts/search', { operator: 'and', conditions: [{ field: 'company.industry', operator: 'is_null' }], limit: 100 });
    expect(ids(empty.body.data)).toEqual(
      contacts
        .filter((c) => industry(c) === null)
        .map((c) => c.id)
        .sort(),
    );
    const owner = await api('POST', '/records/contacts/search', { operator: 'and', conditions: [{ field: 'owner.name', operator: 'contains', value: 'MEMBER' }], limit: 100 });
    expect(ids(owner.body.data)).toEqual(
      contacts
        .filter((c) => c.owner === t.b.member.id)
        .map((c) => c.id)
        .sort(),
    );
    const role = await api('POST', '/aggregate/contacts', { filter: { 'owner.role': 'admin' } });
    expect(role.body.data.count).toBe(contacts.filter((c) => c.owner === t.b.admin.id).length);
    const roleIds = await listAll(t.b.ctx, 'contacts', and({ field: 'owner.role', operator: 'eq', value: 'admin' }));
    expect(ids(roleIds)).toEqual(
      contacts
        .filter((c) => c.owner === t.b.admin.id)
        .map((c) => c.id)
        .sort(),
    );
    const client = await memoryClient(t.db, t.b);
    const listed = (await client.listTools()).tools;
    const r = await callOk(client, listed, 'crm_search', { object: 'contacts', filter: and({ field: 'company.name', operator: 'starts_with', value: 'ini' }), limit: 100 });
    expect(ids(r.data)).toEqual(
      contacts
        .filter((c) => companyName(c) === 'Initech')
        .map((c) => c.id)
        .sort(),
    );
    // A user of another workspace never matches through owner.name.
    const other = await listAll(t.b.ctx, 'contacts', and({ field: 'owner.name', operator: 'eq', value: 'alpha Admin' }));
    expect(other).toEqual([]);
    await client.close();
  });

  it('sorts by company.name: paging with the cursor gives every record once, in order (nulls lowest)', async () => {
    const cmp = (x: string | null, y: string | null) => (x === y ? 0 : x === null ? -1 : y === null ? 1 : x < y ? -1 : 1);
    for (const dir of ['asc', 'desc'] as const) {
      const expected = [...contacts].sort((a, b) => cmp(companyName(a), companyName(b)) || a.seq - b.seq).map((c) => c.id);
      if (dir === 'desc') expected.reverse();
      for (const limit of [1, 4, 7]) {
        const got: string[] = [];
        let cursor: string | undefined;
        do {
          const page = await listRecords(t.b.ctx, 'contacts', { sortBy: 'company.name', sortDir: dir, limit, cursor, includeTotal: false });
          got.push(...page.data.map((r) => r.id));
          cursor = page.nextCursor ?? undefined;
        } while (cursor);
        expect(got, `${dir} limit ${limit}`).toEqual(expected);
      }
    }
    // Over REST, with a filter, sorting by a user field.
    const api = (p: string) => call(t.app, t.b.adminToken, 'GET', `/api/v1${p}`);
    const got: string[] = [];
    let cursor: string | undefined;
    do {
      const r = await api(`/records/contacts?${qs({ sort_by: 'owner.name', sort_dir: 'asc', limit: 5, filter_field: 'company', filter_operator: 'is_not_null', ...(cursor ? { cursor } : {}) })}`);
      expect(r.status).toBe(200);
      got.push(...r.body.data.map((x: { id: string }) => x.id));
      cursor = r.body.nextCursor ?? undefined;
    } while (cursor);
    const ownerName = (c: { owner: string | null }) => (c.owner === t.b.admin.id ? 'beta Admin' : c.owner === t.b.member.id ? 'beta Member' : null);
    expect(got).toEqual(
      contacts
        .filter((c) => c.company !== null)
        .sort((a, b) => cmp(ownerName(a), ownerName(b)) || a.seq - b.seq)
        .map((c) => c.id),
    );
    // A cursor of one sort does not continue another.
    const first = await listRecords(t.b.ctx, 'contacts', { sortBy: 'company.name', limit: 2 });
    await expect(listRecords(t.b.ctx, 'contacts', { sortBy: 'company.industry', limit: 2, cursor: first.nextCursor! })).rejects.toThrow(/keep sort_by/);
  });

  it('groups by company.industry (Kasar GET, MCP crm_aggregate) and by owner.name', async () => {
    const counts = new Map<string | null, number>();
    for (const c of contacts) counts.set(industry(c), (counts.get(industry(c)) ?? 0) + 1);
    const api = (p: string) => call(t.app, t.b.adminToken, 'GET', `/api/v1${p}`);
    const k = await api(`/aggregate/contacts?${qs({ field: 'id', function: 'COUNT', group_by: 'company.industry' })}`);
    expect(k.status).toBe(200);
    expect(new Map(k.body.results.map((g: { group: string | null; count: number }) => [g.group, g.count]))).toEqual(counts);
    const client = await memoryClient(t.db, t.b);
    const listed = (await client.listTools()).tools;
    const m = await callOk(client, listed, 'crm_aggregate', { object: 'contacts', groupBy: ['company.industry'] });
    expect(new Map(m.groups.map((g: { values: Record<string, string | null>; count: number }) => [g.values['company.industry'], g.count]))).toEqual(counts);
    // The tree form too: uniqueValues on a related field, with owner.name nested under it.
    const tree = await callOk(client, listed, 'crm_aggregate', {
      object: 'contacts',
      aggregates: { ind: { uniqueValues: { property: 'company.industry', size: 10, aggregates: { who: { uniqueValues: { property: 'owner.name' } } } } } },
    });
    const buckets = (tree.aggregates.ind as { uniqueValueBuckets: { value: string | null; count: number; aggregates: { who: { uniqueValueBuckets: { count: number }[] } } }[] }).uniqueValueBuckets;
    expect(new Map(buckets.map((b) => [b.value, b.count]))).toEqual(counts);
    for (const b of buckets) expect(b.aggregates.who.uniqueValueBuckets.reduce((n, x) => n + x.count, 0)).toBe(b.count);
    await client.close();
    const byOwner = await api(
      `/aggregate/contacts?${qs({ field: 'id', function: 'COUNT', group_by: 'owner.name', filter_field: 'company.industry', filter_operator: 'eq', filter_value: 'software' })}`,
    );
    const sw = contacts.filter((c) => industry(c) === 'software');
    const expected = new Map<string | null, number>();
    for (const c of sw) {
      const n = c.owner === t.b.admin.id ? 'beta Admin' : c.owner === t.b.member.id ? 'beta Member' : null;
      expected.set(n, (expected.get(n) ?? 0) + 1);
    }
    expect(new Map(byOwner.body.results.map((g: { group: string | null; count: number }) => [g.group, g.count]))).toEqual(expected);
  });
});

describe('errors name the fix', () => {
  it('an operator the field does not take lists the valid ones for its type, also on related fields and at the zod layer', async () => {
    const a = await api('POST', '/records/opportunities/search', { operator: 'and', conditions: [{ field: 'amount', operator: 'contains', value: '5' }] });
    expect(a.body.message).toContain('Valid operators for amount (CURRENCY): eq, neq, in, not_in, is_null, is_not_null, gt, gte, lt, lte, between');
    const b = await api('POST', '/records/contacts/search', { operator: 'and', conditions: [{ field: 'first_name', operator: 'like', value: 'a' }] });
    expect(b.status).toBe(400);
    expect(b.body.message).toContain('Valid operators for first_name (TEXT):');
    const c = await api('POST', '/records/contacts/search', { operator: 'and', conditions: [{ field: 'company.industry', operator: 'gt', value: 'software' }] });
    expect(c.body.message).toContain('Valid operators for company.industry (SELECT): eq, neq, in, not_in, is_null, is_not_null, contains, not_contains, starts_with');
    const d = await callError(mcp, 'crm_search', { object: 'contacts', filter: and({ field: 'do_not_contact', operator: 'gt', value: true }) });
    expect(d).toContain('Valid operators for do_not_contact (BOOLEAN): eq, neq, is_null, is_not_null');
  });

  it('unknown fields list the valid ones, also through a relation; sort and groupBy follow one relation', async () => {
    const u = await api('POST', '/records/contacts/search', { operator: 'and', conditions: [{ field: 'nope', operator: 'eq', value: 1 }] });
    expect(u.body.message).toMatch(/Valid fields: .*first_name/);
    const r = await api('POST', '/records/contacts/search', { operator: 'and', conditions: [{ field: 'company.nope', operator: 'eq', value: 1 }] });
    expect(r.body.message).toMatch(/Valid fields: .*company\.industry/);
    const o = await api('POST', '/records/contacts/search', { operator: 'and', conditions: [{ field: 'owner.phone', operator: 'eq', value: 1 }] });
    expect(o.body.message).toMatch(/Valid fields: .*owner\.name.*owner\.email/);
    const s = await api('GET', `/records/contacts?${qs({ sort_by: 'first_name.x' })}`);
    expect(s.body.message).toMatch(/relation field.*company\.<field of companies>/);
    const g = await api('GET', `/aggregate/opportunities?${qs({ field: 'id', function: 'COUNT', group_by: 'contact.company.industry' })}`);
    expect(g.body.message).toMatch(/one relation/);
  });

  it('FILTER_VALUE_HELP is short and names each feature', () => {
    expect(FILTER_VALUE_HELP.length).toBeLessThanOrEqual(500);
    for (const w of ["'me'", 'today', 'this_', 'last_N_days', 'last_7_days', 'time zone', 'company.industry', 'owner.name']) expect(FILTER_VALUE_HELP).toContain(w);
  });
});
