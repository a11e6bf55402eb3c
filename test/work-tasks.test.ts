import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { setClock } from '../src/services/clock.js';
import { call, type TestApp, testApp } from './helpers.js';

/**
 * Tasks over REST: every endpoint, the modes against a pinned clock and several time zones,
 * filters, keyset pagination, statistics, and tenancy.
 *
 * The clock is pinned at 2026-03-28T23:30:00Z. In UTC that is still Saturday 28 March; in Paris
 * it is already 00:30 on Sunday 29 March, the day the clocks go forward (CET +01:00 -> CEST
 * +02:00 at 01:00 UTC), so the Paris day is [2026-03-28T23:00Z, 2026-03-29T22:00Z): 23 hours.
 */
const NOW = '2026-03-28T23:30:00.000Z';

let t: TestApp;
const api = (token: string, method: string, url: string, body?: unknown) => call(t.app, token, method, `/api/v1${url}`, body);
const admin = () => t.a.adminToken;
const member = () => t.a.memberToken;

/** Task name -> id, for the fixed set created in beforeAll. */
const ids: Record<string, string> = {};
const nameOf = (id: string) => Object.keys(ids).find((k) => ids[k] === id) ?? id;
const names = (data: { id: string }[]) => data.map((r) => nameOf(r.id));
let contactId: string;
let companyId: string;
let opportunityId: string;

async function list(query: string, token = admin()): Promise<string[]> {
  const r = await api(token, 'GET', `/tasks?limit=100${query ? `&${query}` : ''}`);
  expect(r.status, JSON.stringify(r.body)).toBe(200);
  expect(r.body.total).toBe(r.body.data.length);
  return names(r.body.data);
}

beforeAll(async () => {
  setClock(Date.parse(NOW));
  t = await testApp();
  contactId = (await api(admin(), 'POST', '/records/contacts', { first_name: 'Ada', last_name: 'Lovelace', email: 'ada@example.com' })).body.data.id;
  companyId = (await api(admin(), 'POST', '/records/companies', { name: 'Analytical Engines' })).body.data.id;
  opportunityId = (await api(admin(), 'POST', '/records/opportunities', { name: 'Engine deal', company: companyId })).body.data.id;
  const specs: [string, Record<string, unknown>][] = [
    ['T1 long overdue', { due_at: '2026-03-27T12:00:00Z' }],
    ['T2 utc morning', { due_at: '2026-03-28T10:00:00Z', priority: 'low' }],
    ['T3 paris just started', { due_at: '2026-03-28T23:10:00Z', contact: contactId }],
    ['T4 later tonight', { due_at: '2026-03-28T23:45:00Z' }],
    ['T5 paris evening', { due_at: '2026-03-29T21:30:00Z', contact: contactId }],
    ['T6 paris tomorrow', { due_at: '2026-03-29T22:00:00Z' }],
    ['T6b paris tomorrow late', { due_at: '2026-03-29T22:30:00Z' }],
    ['T7 due exactly now', { due_at: NOW }],
    ['T8 paris yesterday', { due_at: '2026-03-28T22:59:59Z' }],
    ['T9 done', { due_at: '2026-03-27T09:00:00Z', status: 'completed' }],
    ['T10 cancelled', { due_at: '2026-03-28T23:40:00Z', status: 'cancelled' }],
    ['T11 no due date', {}],
    ['T12 member upcoming', { due_at: '2026-03-30T10:00:00Z', assignee: t.a.member.id, company: companyId }],
    ['T13 in progress overdue', { due_at: '2026-03-28T20:00:00Z', status: 'in_progress', priority: 'high', opportunity: opportunityId }],
    ['T14 waiting upcoming', { due_at: '2026-04-05T08:00:00Z', status: 'waiting', priority: 'urgent' }],
  ];
  for (const [title, extra] of specs) {
    const r = await api(admin(), 'POST', '/tasks', { title, ...extra });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    ids[title.split(' ')[0]!] = r.body.data.id;
  }
});

// Tests that create tasks of their own clean up after themselves, even when they fail, so one
// failure does not cascade into the exact-membership checks of the others.
afterEach(async () => {
  const fixture = new Set(Object.values(ids));
  const all = (await api(admin(), 'GET', '/tasks?mode=all&limit=100')).body.data as { id: string }[];
  for (const { id } of all) if (!fixture.has(id)) await api(admin(), 'DELETE', `/tasks/${id}`);
});

afterAll(async () => {
  setClock(null);
  await t.close();
});

describe('GET /tasks modes against a pinned clock', () => {
  it('overdue: due before now, not completed or cancelled, soonest first (the same in every zone)', async () => {
    const expected = ['T1', 'T2', 'T13', 'T8', 'T3'];
    expect(await list('mode=overdue')).toEqual(expected);
    expect(await list('mode=overdue&tz=Europe/Paris')).toEqual(expected);
    expect(await list('mode=overdue&tz=Pacific/Kiritimati')).toEqual(expected);
  });

  it('today in UTC is 28 March: from midnight UTC to midnight UTC, open tasks only', async () => {
    // T7 (due exactly now) is today but not overdue; T10 is cancelled; T5 is tomorrow in UTC.
    expect(await list('mode=today')).toEqual(['T2', 'T13', 'T8', 'T3', 'T7', 'T4']);
    expect(await list('mode=today&tz=UTC')).toEqual(['T2', 'T13', 'T8', 'T3', 'T7', 'T4']);
  });

  it('today in Paris is the 23-hour day of 29 March (DST starts)', async () => {
    // [2026-03-28T23:00Z, 2026-03-29T22:00Z): T8 (22:59:59Z) is still the 28th in Paris, T5 (21:30Z)
    // is 23:30 CEST on the 29th, T6 (22:00Z) is midnight of the 30th, T6b would be inside a naive 24-hour day.
    expect(await list('mode=today&tz=Europe/Paris')).toEqual(['T3', 'T7', 'T4', 'T5']);
  });

  it('upcoming: due from the end of today on, open only', async () => {
    expect(await list('mode=upcoming')).toEqual(['T5', 'T6', 'T6b', 'T12', 'T14']);
    expect(await list('mode=upcoming&tz=Europe/Paris')).toEqual(['T6', 'T6b', 'T12', 'T14']);
  });

  it('today and upcoming in a zone behind UTC: New York is still the evening of the 28th', async () => {
    // 23:30Z is 19:30 EDT on the 28th: the day is [2026-03-28T04:00Z, 2026-03-29T04:00Z).
    expect(await list('mode=today&tz=America/New_York')).toEqual(['T2', 'T13', 'T8', 'T3', 'T7', 'T4']);
    expect(await list('mode=upcoming&tz=America/New_York')).toEqual(['T5', 'T6', 'T6b', 'T12', 'T14']);
  });

  it('my_open: assigned to the caller and still open, undated first, then by due date', async () => {
    expect(await list('mode=my_open')).toEqual(['T11', 'T1', 'T2', 'T13', 'T8', 'T3', 'T7', 'T4', 'T5', 'T6', 'T6b', 'T14']);
    expect(await list('mode=my_open', member())).toEqual(['T12']);
  });

  it('completed, and all (newest first)', async () => {
    expect(await list('mode=completed')).toEqual(['T9']);
    const all = await list('mode=all');
    expect(all).toHaveLength(15);
    expect(new Set(all)).toEqual(new Set(Object.keys(ids)));
    expect(await list('')).toEqual(all);
  });

  it('the mode boundaries move with the clock', async () => {
    try {
      // One hour later T4 (23:45Z) is overdue, and in UTC it is the 29th: T5 is due today.
      setClock(Date.parse('2026-03-29T00:30:00Z'));
      expect(await list('mode=overdue')).toEqual(['T1', 'T2', 'T13', 'T8', 'T3', 'T7', 'T4']);
      expect(await list('mode=today')).toEqual(['T5', 'T6', 'T6b']);
      expect(await list('mode=today&tz=Europe/Paris')).toEqual(['T3', 'T7', 'T4', 'T5']);
    } finally {
      setClock(Date.parse(NOW));
    }
  });

  it('a 25-hour day (New York, DST ends 1 November 2026) covers its extra hour', async () => {
    try {
      setClock(Date.parse('2026-11-01T12:00:00Z'));
      // The New York day of 1 November is [04:00Z, 05:00Z next day).
      const inside = (await api(admin(), 'POST', '/tasks', { title: 'NY late', due_at: '2026-11-02T04:30:00Z' })).body.data.id;
      const before = (await api(admin(), 'POST', '/tasks', { title: 'NY before', due_at: '2026-11-01T03:59:00Z' })).body.data.id;
      const after = (await api(admin(), 'POST', '/tasks', { title: 'NY after', due_at: '2026-11-02T05:00:00Z' })).body.data.id;
      const today = (await api(admin(), 'GET', '/tasks?mode=today&tz=America/New_York&limit=100')).body.data.map((r: { id: string }) => r.id);
      expect(today).toEqual([inside]);
      const upcoming = (await api(admin(), 'GET', '/tasks?mode=upcoming&tz=America/New_York&limit=100')).body.data.map((r: { id: string }) => r.id);
      expect(upcoming).toEqual([after]);
      for (const id of [inside, before, after]) expect((await api(admin(), 'DELETE', `/tasks/${id}`)).status).toBe(200);
    } finally {
      setClock(Date.parse(NOW));
    }
  });

  it('a day whose midnight is skipped (Santiago, DST starts 00:00 -> 01:00 on 6 September 2026) starts at 01:00', async () => {
    try {
      setClock(Date.parse('2026-09-06T12:00:00Z'));
      // The Santiago day of 6 September is [04:00Z, 03:00Z next day): 23 hours, from 01:00 -03.
      const make = async (title: string, due_at: string) => (await api(admin(), 'POST', '/tasks', { title, due_at })).body.data.id as string;
      const lateSaturday = await make('CL 23:30 on the 5th', '2026-09-06T03:30:00Z');
      const first = await make('CL 01:00 on the 6th', '2026-09-06T04:00:00Z');
      const last = await make('CL 23:59 on the 6th', '2026-09-07T02:59:00Z');
      const monday = await make('CL 00:00 on the 7th', '2026-09-07T03:00:00Z');
      const ids = async (mode: string) => (await api(admin(), 'GET', `/tasks?mode=${mode}&tz=America/Santiago&q=CL&limit=100`)).body.data.map((r: { id: string }) => r.id);
      expect(await ids('today')).toEqual([first, last]);
      expect(await ids('upcoming')).toEqual([monday]);
      expect(await ids('overdue')).toEqual([lateSaturday, first]);
      for (const id of [lateSaturday, first, last, monday]) expect((await api(admin(), 'DELETE', `/tasks/${id}`)).status).toBe(200);
    } finally {
      setClock(Date.parse(NOW));
    }
  });

  it('a zone with a 45-minute offset (Kathmandu, +05:45)', async () => {
    // 23:30Z is 05:15 on the 29th: the day is [2026-03-28T18:15Z, 2026-03-29T18:15Z).
    expect(await list('mode=today&tz=Asia/Kathmandu')).toEqual(['T13', 'T8', 'T3', 'T7', 'T4']);
    expect(await list('mode=upcoming&tz=Asia/Kathmandu')).toEqual(['T5', 'T6', 'T6b', 'T12', 'T14']);
  });

  it('refuses an unknown mode or time zone with the valid choices', async () => {
    const bad = await api(admin(), 'GET', '/tasks?mode=soon');
    expect(bad.status).toBe(400);
    expect(bad.body).toMatchObject({ error: true, code: 'VALIDATION_ERROR' });
    expect(bad.body.message).toMatch(/my_open.*overdue.*today.*upcoming.*completed.*all/);
    const tz = await api(admin(), 'GET', '/tasks?mode=today&tz=Europe/Atlantis');
    expect(tz.status).toBe(400);
    expect(tz.body.message).toMatch(/Unknown time zone 'Europe\/Atlantis'.*IANA/);
  });
});

describe('GET /tasks filters', () => {
  it('assignee: a user id, or me', async () => {
    expect(await list(`assignee=${t.a.member.id}`)).toEqual(['T12']);
    expect(await list('assignee=me', member())).toEqual(['T12']);
    expect(await list('assignee=me')).toHaveLength(14);
    expect(await list(`mode=upcoming&assignee=${t.a.admin.id}`)).toEqual(['T5', 'T6', 'T6b', 'T14']);
  });

  it('status and priority (comma-separated lists)', async () => {
    expect(new Set(await list('status=in_progress,waiting'))).toEqual(new Set(['T13', 'T14']));
    expect(await list('status=cancelled')).toEqual(['T10']);
    expect(new Set(await list('priority=high,urgent'))).toEqual(new Set(['T13', 'T14']));
    expect(await list('mode=overdue&priority=low')).toEqual(['T2']);
    const bad = await api(admin(), 'GET', '/tasks?status=done');
    expect(bad.status).toBe(400);
    expect(bad.body.message).toMatch(/open.*in_progress.*waiting.*completed.*cancelled/);
  });

  it('due_from and due_to (inclusive instants)', async () => {
    expect(await list('mode=my_open&due_from=2026-03-28T23:00:00Z&due_to=2026-03-29T21:30:00Z')).toEqual(['T3', 'T7', 'T4', 'T5']);
    expect(await list('mode=upcoming&due_from=2026-03-30T00:00:00Z')).toEqual(['T12', 'T14']);
    const bad = await api(admin(), 'GET', '/tasks?due_from=soonish');
    expect(bad.status).toBe(400);
    expect(bad.body.message).toMatch(/ISO 8601.*relative date/);
  });

  it('linked record: object + record_id', async () => {
    expect(new Set(await list(`object=contacts&record_id=${contactId}`))).toEqual(new Set(['T3', 'T5']));
    expect(await list(`object=companies&record_id=${companyId}`)).toEqual(['T12']);
    expect(await list(`object=opportunities&record_id=${opportunityId}`)).toEqual(['T13']);
    const half = await api(admin(), 'GET', `/tasks?record_id=${contactId}`);
    expect(half.status).toBe(400);
    expect(half.body.message).toMatch(/both object and record_id/);
    const wrong = await api(admin(), 'GET', `/tasks?object=notes&record_id=${contactId}`);
    expect(wrong.status).toBe(400);
    expect(wrong.body.message).toMatch(/contacts, companies, opportunities/);
  });

  it('q: text in the title, case-insensitive', async () => {
    expect(await list('q=PARIS')).toEqual(expect.arrayContaining(['T3', 'T5', 'T6', 'T6b', 'T8']));
    expect(new Set(await list('q=paris'))).toEqual(new Set(['T3', 'T5', 'T6', 'T6b', 'T8']));
    expect(await list('q=paris&mode=today&tz=Europe/Paris')).toEqual(['T3', 'T5']);
    expect(await list('q=nothing-like-this')).toEqual([]);
  });

  it('refuses unknown query parameters, naming them', async () => {
    const r = await api(admin(), 'GET', '/tasks?owner=me');
    expect(r.status).toBe(400);
    expect(r.body).toMatchObject({ error: true, code: 'VALIDATION_ERROR' });
    expect(r.body.message).toMatch(/owner/);
  });
});

describe('GET /tasks cursor pagination', () => {
  async function walk(query: string, limit: number, token = admin()) {
    const seen: string[] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const r = await api(token, 'GET', `/tasks?limit=${limit}&${query}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
      expect(r.status, JSON.stringify(r.body)).toBe(200);
      expect(r.body.data.length).toBeLessThanOrEqual(limit);
      seen.push(...names(r.body.data));
      cursor = r.body.nextCursor;
      pages++;
      expect(pages).toBeLessThan(50);
    } while (cursor);
    return { seen, pages };
  }

  it('pages through every mode with no gaps and no duplicates', async () => {
    for (const query of ['mode=all', 'mode=my_open', 'mode=overdue', 'mode=upcoming&tz=Europe/Paris', 'mode=today&tz=Europe/Paris', 'mode=completed', 'q=paris']) {
      const full = await list(query);
      for (const limit of [1, 2, 4]) {
        const { seen, pages } = await walk(query, limit);
        expect(seen, `${query} by ${limit}`).toEqual(full);
        expect(pages).toBe(Math.max(1, Math.ceil(full.length / limit)));
      }
    }
  });

  it('ties on the sort column (same created_at under the pinned clock) break by insertion order', async () => {
    // Every task was created at the same pinned instant: only the tie-breaker orders them.
    const first = await api(admin(), 'GET', '/tasks?mode=all&limit=3');
    expect(first.body.total).toBe(15);
    expect(new Set(first.body.data.map((r: { created_at: string }) => r.created_at))).toEqual(new Set([NOW]));
    const { seen } = await walk('mode=all', 3);
    expect(new Set(seen).size).toBe(15);
  });

  it('a cursor from another mode or a mangled cursor is refused with the fix', async () => {
    const p = await api(admin(), 'GET', '/tasks?mode=all&limit=2');
    const other = await api(admin(), 'GET', `/tasks?mode=my_open&limit=2&cursor=${p.body.nextCursor}`);
    expect(other.status).toBe(400);
    expect(other.body.message).toMatch(/cursor/i);
    const junk = await api(admin(), 'GET', '/tasks?cursor=not-a-cursor');
    expect(junk.status).toBe(400);
    expect(junk.body.message).toMatch(/nextCursor/);
    const big = await api(admin(), 'GET', '/tasks?limit=101');
    expect(big.status).toBe(400);
    expect(big.body.message).toMatch(/limit must be an integer from 1 to 100/);
  });
});

describe('POST /tasks', () => {
  it('defaults: assignee is the caller, status open, priority medium', async () => {
    const r = await api(member(), 'POST', '/tasks', { title: 'Member default' });
    expect(r.status).toBe(201);
    expect(r.body.data).toMatchObject({ title: 'Member default', assignee: t.a.member.id, status: 'open', priority: 'medium', completed_at: null, due_at: null });
    expect(r.body.data.created_at).toBe(NOW);
    const me = await api(admin(), 'POST', '/tasks', { title: 'Explicit me', assignee: 'me', time_estimate: 3600, description: 'Prepare the deck' });
    expect(me.body.data).toMatchObject({ assignee: t.a.admin.id, time_estimate: 3600, description: 'Prepare the deck' });
    for (const id of [r.body.data.id, me.body.data.id]) await api(admin(), 'DELETE', `/tasks/${id}`);
  });

  it('links: contacts, companies and opportunities', async () => {
    const r = await api(admin(), 'POST', '/tasks', {
      title: 'Linked three ways',
      links: [
        { object: 'contacts', id: contactId },
        { object: 'companies', id: companyId },
        { object: 'opportunities', id: opportunityId },
      ],
    });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    expect(r.body.data).toMatchObject({ contact: contactId, company: companyId, opportunity: opportunityId });
    const got = await api(admin(), 'GET', `/tasks/${r.body.data.id}`);
    expect(got.status).toBe(200);
    expect(got.body.data.id).toBe(r.body.data.id);
    expect(await list(`object=opportunities&record_id=${opportunityId}`)).toEqual(expect.arrayContaining(['T13', r.body.data.id]));
    await api(admin(), 'DELETE', `/tasks/${r.body.data.id}`);
  });

  it('a completed task is created with completed_at', async () => {
    const r = await api(admin(), 'POST', '/tasks', { title: 'Born done', status: 'completed' });
    expect(r.body.data).toMatchObject({ status: 'completed', completed_at: NOW });
    await api(admin(), 'DELETE', `/tasks/${r.body.data.id}`);
  });

  it('refuses bad input with actionable messages', async () => {
    const cases: [unknown, RegExp, string?][] = [
      [{}, /Field 'title' is required/, 'MISSING_REQUIRED_FIELD'],
      [{ title: 'x', priority: 'asap' }, /low, medium, high, urgent/],
      [{ title: 'x', status: 'done' }, /open, in_progress, waiting, completed, cancelled/],
      [{ title: 'x', due_at: 'tomorrow' }, /ISO 8601/],
      [{ title: 'x', time_estimate: -5 }, /time_estimate/],
      [{ title: 'x', shoe_size: 42 }, /Unknown field 'shoe_size'/],
      [{ title: 'x', links: [{ object: 'notes', id: 'n1' }] }, /contacts, companies, opportunities/],
      [{ title: 'x', links: 'contacts' }, /links must be/],
      [{ title: 'x', links: [{ object: 'contacts', id: 'missing-contact' }] }, /no contacts record has id 'missing-contact'/],
      [{ title: 'x', assignee: 'nobody' }, /assignee/],
      [{ title: 'x', completed_at: NOW }, /PUT \/tasks\/\{id\}\/complete/],
      [[{ title: 'x' }], /JSON object/],
    ];
    for (const [body, message, code] of cases) {
      const r = await api(admin(), 'POST', '/tasks', body);
      expect(r.status, JSON.stringify(body)).toBe(400);
      expect(r.body, JSON.stringify(body)).toMatchObject({ error: true, code: code ?? 'VALIDATION_ERROR' });
      expect(r.body.message, JSON.stringify(body)).toMatch(message);
    }
    expect(await list('mode=all')).toHaveLength(15);
  });
});

describe('PUT /tasks/{id} and PUT /tasks/{id}/complete', () => {
  it('updates fields, and a status change sets or clears completed_at', async () => {
    const id = (await api(admin(), 'POST', '/tasks', { title: 'Edit me', due_at: '2026-04-01T09:00:00Z' })).body.data.id;
    const u = await api(admin(), 'PUT', `/tasks/${id}`, { title: 'Edited', priority: 'high', due_at: '2026-04-02T09:00:00+02:00', assignee: t.a.member.id });
    expect(u.status).toBe(200);
    expect(u.body.data).toMatchObject({ title: 'Edited', priority: 'high', due_at: '2026-04-02T07:00:00.000Z', assignee: t.a.member.id, status: 'open' });
    const done = await api(admin(), 'PUT', `/tasks/${id}`, { status: 'completed' });
    expect(done.body.data).toMatchObject({ status: 'completed', completed_at: NOW });
    const back = await api(admin(), 'PUT', `/tasks/${id}`, { status: 'in_progress' });
    expect(back.body.data).toMatchObject({ status: 'in_progress', completed_at: null });
    const links = await api(admin(), 'PUT', `/tasks/${id}`, { links: [{ object: 'contacts', id: contactId }] });
    expect(links.body.data.contact).toBe(contactId);
    expect((await api(admin(), 'DELETE', `/tasks/${id}`)).status).toBe(200);
  });

  it('refuses bad updates and unknown ids', async () => {
    const bad = await api(admin(), 'PUT', `/tasks/${ids.T1}`, { priority: 'whenever' });
    expect(bad.status).toBe(400);
    expect(bad.body).toMatchObject({ error: true, code: 'VALIDATION_ERROR' });
    expect(bad.body.message).toMatch(/low, medium, high, urgent/);
    const direct = await api(admin(), 'PUT', `/tasks/${ids.T1}`, { completed_at: NOW });
    expect(direct.status).toBe(400);
    expect(direct.body.message).toMatch(/complete/);
    const missing = await api(admin(), 'PUT', '/tasks/no-such-task', { title: 'x' });
    expect(missing.status).toBe(404);
    expect(missing.body).toEqual({ error: true, code: 'RECORD_NOT_FOUND', message: expect.stringMatching(/no-such-task/) });
  });

  it('completes and reopens; completed_at is set to now and cleared', async () => {
    const id = (await api(admin(), 'POST', '/tasks', { title: 'Finish me', due_at: '2026-03-20T09:00:00Z' })).body.data.id;
    expect(await list('mode=overdue')).toContain(id);
    const done = await api(admin(), 'PUT', `/tasks/${id}/complete`);
    expect(done.status).toBe(200);
    expect(done.body.data).toMatchObject({ id, status: 'completed', completed_at: NOW });
    expect(await list('mode=overdue')).not.toContain(id);
    expect(await list('mode=completed')).toContain(id);
    // Completing again changes nothing.
    const again = await api(admin(), 'PUT', `/tasks/${id}/complete`, { completed: true });
    expect(again.body.data).toMatchObject({ status: 'completed', completed_at: NOW });
    const reopened = await api(admin(), 'PUT', `/tasks/${id}/complete`, { completed: false });
    expect(reopened.status).toBe(200);
    expect(reopened.body.data).toMatchObject({ status: 'open', completed_at: null });
    expect(await list('mode=overdue')).toContain(id);
    const bad = await api(admin(), 'PUT', `/tasks/${id}/complete`, { completed: 'yes' });
    expect(bad.status).toBe(400);
    expect(bad.body.message).toMatch(/'completed' is true \(complete\) or false \(reopen\)/);
    const missing = await api(admin(), 'PUT', '/tasks/nope/complete');
    expect(missing.status).toBe(404);
    expect(missing.body.code).toBe('RECORD_NOT_FOUND');
    await api(admin(), 'DELETE', `/tasks/${id}`);
  });
});

describe('GET /tasks/stats', () => {
  it('counts by status and priority, overdue, and open tasks per assignee with names', async () => {
    const r = await api(admin(), 'GET', '/tasks/stats');
    expect(r.status).toBe(200);
    expect(r.body.data).toEqual({
      total: 15,
      open: 13,
      overdue: 5,
      by_status: { open: 11, in_progress: 1, waiting: 1, completed: 1, cancelled: 1 },
      by_priority: { low: 1, medium: 12, high: 1, urgent: 1 },
      open_by_assignee: expect.arrayContaining([
        { assignee: t.a.admin.id, name: 'alpha Admin', open: 12 },
        { assignee: t.a.member.id, name: 'alpha Member', open: 1 },
      ]),
    });
    expect(r.body.data.open_by_assignee).toHaveLength(2);
  });

  it('for one assignee, me included', async () => {
    const mine = (await api(member(), 'GET', '/tasks/stats?assignee=me')).body.data;
    expect(mine).toMatchObject({ total: 1, open: 1, overdue: 0, by_status: { open: 1 }, open_by_assignee: [{ assignee: t.a.member.id, name: 'alpha Member', open: 1 }] });
    const admins = (await api(member(), 'GET', `/tasks/stats?assignee=${t.a.admin.id}`)).body.data;
    expect(admins).toMatchObject({ total: 14, open: 12, overdue: 5 });
  });

  it('overdue follows the clock', async () => {
    try {
      setClock(Date.parse('2026-04-10T00:00:00Z'));
      // Every open task with a due date is overdue by then; T11 has none.
      expect((await api(admin(), 'GET', '/tasks/stats')).body.data.overdue).toBe(12);
    } finally {
      setClock(Date.parse(NOW));
    }
  });

  it('refuses unknown parameters', async () => {
    const r = await api(admin(), 'GET', '/tasks/stats?group_by=owner');
    expect(r.status).toBe(400);
    expect(r.body.code).toBe('VALIDATION_ERROR');
  });
});

describe('DELETE /tasks/{id}', () => {
  it('deletes, then answers 404', async () => {
    const id = (await api(admin(), 'POST', '/tasks', { title: 'Short-lived' })).body.data.id;
    const d = await api(admin(), 'DELETE', `/tasks/${id}`);
    expect(d.status).toBe(200);
    expect(d.body).toEqual({ data: { id, deleted: true } });
    expect((await api(admin(), 'GET', `/tasks/${id}`)).status).toBe(404);
    const again = await api(admin(), 'DELETE', `/tasks/${id}`);
    expect(again.status).toBe(404);
    expect(again.body).toMatchObject({ error: true, code: 'RECORD_NOT_FOUND' });
  });
});

describe('tenancy and authentication', () => {
  it("workspace B sees none of A's tasks and cannot touch them", async () => {
    const B = t.b.adminToken;
    const listed = await api(B, 'GET', '/tasks?mode=all');
    expect(listed.body).toEqual({ data: [], total: 0, nextCursor: null });
    expect((await api(B, 'GET', '/tasks/stats')).body.data).toMatchObject({ total: 0, open: 0, overdue: 0, open_by_assignee: [] });
    for (const [method, url, body] of [
      ['GET', `/tasks/${ids.T1}`, undefined],
      ['PUT', `/tasks/${ids.T1}`, { title: 'hijacked' }],
      ['PUT', `/tasks/${ids.T1}/complete`, {}],
      ['DELETE', `/tasks/${ids.T1}`, undefined],
    ] as const) {
      const r = await api(B, method, url, body);
      expect(r.status, `${method} ${url}`).toBe(404);
      expect(r.body.code).toBe('RECORD_NOT_FOUND');
    }
    // Nor link a task to A's contact or assign it to A's user.
    const link = await api(B, 'POST', '/tasks', { title: 'x', contact: contactId });
    expect(link.status).toBe(400);
    const assign = await api(B, 'POST', '/tasks', { title: 'x', assignee: t.a.admin.id });
    expect(assign.status).toBe(400);
    expect((await api(admin(), 'GET', `/tasks/${ids.T1}`)).body.data.title).toBe('T1 long overdue');
    expect((await api(B, 'GET', '/tasks?mode=all')).body.total).toBe(0);
    // And the other way round: B's task stays in B.
    const own = await api(t.b.memberToken, 'POST', '/tasks', { title: 'Beta task', due_at: '2026-03-28T12:00:00Z' });
    expect(own.body.data.assignee).toBe(t.b.member.id);
    expect(await list('mode=all')).not.toContain(own.body.data.id);
    expect(await list('mode=overdue')).toEqual(['T1', 'T2', 'T13', 'T8', 'T3']);
    expect((await api(admin(), 'GET', '/tasks/stats')).body.data.total).toBe(15);
    expect((await api(B, 'GET', '/tasks?mode=overdue')).body.data.map((x: { id: string }) => x.id)).toEqual([own.body.data.id]);
    expect((await api(admin(), 'GET', `/tasks/${own.body.data.id}`)).status).toBe(404);
  });

  it('needs a token', async () => {
    const r = await call(t.app, null, 'GET', '/api/v1/tasks');
    expect(r.status).toBe(401);
    expect(r.body).toMatchObject({ error: true, code: 'UNAUTHORIZED' });
  });
});
