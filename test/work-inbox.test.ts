import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { setClock } from '../src/services/clock.js';
import { call, sqlGet, sqlRun, type TestApp, testApp } from './helpers.js';

/**
 * Inbox over REST: logging threads, listing with filters and pagination, one thread with its
 * messages in order, read/unread, interactions, integration status; users (/me, /users); tenancy.
 */

let t: TestApp;
const api = (token: string, method: string, url: string, body?: unknown) => call(t.app, token, method, `/api/v1${url}`, body);
const admin = () => t.a.adminToken;
const member = () => t.a.memberToken;
let ada: string;
let bob: string;
let acme: string;
const th: Record<'pricing' | 'security' | 'invoice', any> = {} as never;

async function threadIds(query = '', token = admin()): Promise<string[]> {
  const r = await api(token, 'GET', `/inbox/threads${query ? `?${query}` : ''}`);
  expect(r.status, JSON.stringify(r.body)).toBe(200);
  return r.body.data.map((x: { id: string }) => x.id);
}

const activityCount = async () => (await sqlGet<{ n: number }>(t.db, 'SELECT COUNT(*) AS n FROM activity'))!.n;
const threadCount = async () => (await sqlGet<{ n: number }>(t.db, 'SELECT COUNT(*) AS n FROM threads'))!.n;

beforeAll(async () => {
  t = await testApp();
  acme = (await api(admin(), 'POST', '/records/companies', { name: 'Acme' })).body.data.id;
  ada = (await api(admin(), 'POST', '/records/contacts', { first_name: 'Ada', last_name: 'Lovelace', email: 'ada@example.com', company: acme })).body.data.id;
  bob = (await api(admin(), 'POST', '/records/contacts', { first_name: 'Bob', last_name: 'Stone', email: 'bob@example.com' })).body.data.id;
  const log = async (body: unknown) => {
    const r = await api(admin(), 'POST', '/inbox/threads', body);
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    return r.body.data;
  };
  th.pricing = await log({
    subject: 'Pricing question',
    contact_id: ada,
    company_id: acme,
    messages: [
      {
        direction: 'inbound',
        from_email: 'Ada@Example.com',
        from_name: 'Ada Lovelace',
        to: ['sales@alpha.test'],
        body: 'Could you send the pricing for the team plan?',
        sent_at: '2026-03-01T10:00:00Z',
      },
      { direction: 'outbound', from_email: 'sales@alpha.test', from_name: 'Sales', to: ['ada@example.com'], body: 'Here it is: 10 EUR per seat.', sent_at: '2026-03-01T12:00:00+00:00' },
    ],
  });
  th.security = await log({
    subject: 'Security review',
    contact_id: bob,
    messages: [
      { direction: 'inbound', from_email: 'bob@example.com', from_name: 'Bob Stone', to: ['sales@alpha.test'], body: 'We need the SSO details before Friday.', sent_at: '2026-03-05T09:00:00Z' },
    ],
  });
  th.invoice = await log({
    subject: 'Invoice',
    company_id: acme,
    // Given out of order: stored and returned by sent_at.
    messages: [
      { direction: 'outbound', from_email: 'sales@alpha.test', to: ['billing@acme.com'], body: 'Paid, thanks.', sent_at: '2026-03-03T10:00:00Z' },
      { direction: 'inbound', from_email: 'billing@acme.com', from_name: 'Acme Billing', to: ['sales@alpha.test'], body: 'Invoice 42 attached.', sent_at: '2026-03-02T08:00:00Z' },
    ],
  });
});
afterAll(() => t.close());

describe('POST /inbox/threads', () => {
  it('returns the thread with its messages in time order, linked records named', async () => {
    expect(th.pricing).toMatchObject({
      subject: 'Pricing question',
      message_count: 2,
      last_message_at: '2026-03-01T12:00:00.000Z',
      snippet: 'Here it is: 10 EUR per seat.',
      unread: false, // the last message is ours
      contact: { id: ada, name: 'Ada Lovelace' },
      company: { id: acme, name: 'Acme' },
    });
    expect(th.pricing.messages.map((m: any) => [m.direction, m.from.email, m.sent_at])).toEqual([
      ['inbound', 'ada@example.com', '2026-03-01T10:00:00.000Z'],
      ['outbound', 'sales@alpha.test', '2026-03-01T12:00:00.000Z'],
    ]);
    expect(th.security).toMatchObject({ unread: true, contact: { id: bob, name: 'Bob Stone' }, company: null });
    expect(th.invoice.messages.map((m: any) => m.body)).toEqual(['Invoice 42 attached.', 'Paid, thanks.']);
    expect(th.invoice).toMatchObject({ unread: false, contact: null, company: { id: acme, name: 'Acme' }, last_message_at: '2026-03-03T10:00:00.000Z' });
  });

  it('messages without sent_at are stamped now and keep the order they were given in', async () => {
    let id: string | undefined;
    try {
      setClock(Date.parse('2026-03-10T08:00:00Z'));
      const bodies = ['one', 'two', 'three', 'four', 'five', 'six'];
      const r = await api(admin(), 'POST', '/inbox/threads', {
        subject: 'Same instant',
        messages: bodies.map((body, i) => ({ direction: i % 2 ? 'outbound' : 'inbound', from_email: 'x@example.com', to: ['y@example.com'], body })),
      });
      expect(r.status).toBe(201);
      id = r.body.data.id;
      expect(r.body.data.messages.map((m: any) => m.body)).toEqual(bodies);
      expect(new Set(r.body.data.messages.map((m: any) => m.sent_at))).toEqual(new Set(['2026-03-10T08:00:00.000Z']));
      const again = await api(admin(), 'GET', `/inbox/threads/${id}`);
      expect(again.body.data.messages.map((m: any) => m.body)).toEqual(bodies);
    } finally {
      setClock(null);
      // There is no endpoint to delete a thread; the fixture of the other tests is three threads.
      if (id) {
        await sqlRun(t.db, sql`DELETE FROM messages WHERE thread_id = ${id}`);
        await sqlRun(t.db, sql`DELETE FROM threads WHERE id = ${id}`);
      }
    }
  });

  it('refuses bad threads with actionable messages and writes nothing', async () => {
    const ok = { direction: 'inbound', from_email: 'a@example.com', to: ['b@example.com'], body: 'hi' };
    const cases: [unknown, RegExp][] = [
      [{ subject: 'x', messages: [] }, /messages/],
      [{ subject: '', messages: [ok] }, /subject/],
      [{ subject: 'x', messages: [{ ...ok, from_email: 'not-an-email' }] }, /from_email/],
      [{ subject: 'x', messages: [{ ...ok, direction: 'sideways' }] }, /inbound.*outbound/],
      [{ subject: 'x', messages: [{ ...ok, to: [] }] }, /to/],
      [{ subject: 'x', messages: [{ ...ok, sent_at: 'yesterday' }] }, /sent_at/],
      [{ subject: 'x', messages: [ok], labels: ['a'] }, /labels/],
      [{ subject: 'x', contact_id: 'no-such-contact', messages: [ok] }, /No contacts record with id 'no-such-contact'/],
      [{ subject: 'x', company_id: ada, messages: [ok] }, /No companies record/],
    ];
    const [threads, activity] = [await threadCount(), await activityCount()];
    for (const [body, message] of cases) {
      const r = await api(admin(), 'POST', '/inbox/threads', body);
      expect(r.status, JSON.stringify(body)).toBe(400);
      expect(r.body, JSON.stringify(body)).toMatchObject({ error: true, code: 'VALIDATION_ERROR' });
      expect(r.body.message, JSON.stringify(body)).toMatch(message);
    }
    expect(await threadCount()).toBe(threads);
    expect(await activityCount()).toBe(activity);
  });
});

describe('GET /inbox/threads', () => {
  it('newest conversation first, with total; read by anyone in the workspace', async () => {
    const r = await api(member(), 'GET', '/inbox/threads');
    expect(r.body.total).toBe(3);
    expect(r.body.nextCursor).toBeNull();
    expect(r.body.data.map((x: any) => x.id)).toEqual([th.security.id, th.invoice.id, th.pricing.id]);
    expect(r.body.data[0]).not.toHaveProperty('messages');
  });

  it('filters: unread, contact_id, company_id', async () => {
    expect(await threadIds('unread=true')).toEqual([th.security.id]);
    expect(await threadIds('unread=false')).toEqual([th.invoice.id, th.pricing.id]);
    expect(await threadIds(`contact_id=${ada}`)).toEqual([th.pricing.id]);
    expect(await threadIds(`company_id=${acme}`)).toEqual([th.invoice.id, th.pricing.id]);
    expect(await threadIds(`company_id=${acme}&contact_id=${bob}`)).toEqual([]);
  });

  it('q matches subject, message bodies and senders (case-insensitive); from matches senders only', async () => {
    expect(await threadIds('q=PRICING')).toEqual([th.pricing.id]);
    expect(await threadIds('q=sso details')).toEqual([th.security.id]);
    expect(await threadIds('q=billing@acme')).toEqual([th.invoice.id]);
    expect(await threadIds('q=bob stone')).toEqual([th.security.id]);
    expect(await threadIds('q=100%25')).toEqual([]); // % is a literal, not a wildcard
    expect(await threadIds('from=ada@example.com')).toEqual([th.pricing.id]);
    expect(await threadIds('from=Acme Billing')).toEqual([th.invoice.id]);
    expect(await threadIds('from=sales@alpha.test')).toEqual([th.invoice.id, th.pricing.id]);
    // 'SSO' is in a body, not a sender.
    expect(await threadIds('from=SSO')).toEqual([]);
  });

  it('pages with a cursor, no gaps or duplicates', async () => {
    const seen: string[] = [];
    let cursor: string | null = null;
    do {
      const r = await api(admin(), 'GET', `/inbox/threads?limit=1${cursor ? `&cursor=${cursor}` : ''}`);
      expect(r.body.data).toHaveLength(1);
      expect(r.body.total).toBe(3);
      seen.push(r.body.data[0].id);
      cursor = r.body.nextCursor;
    } while (cursor);
    expect(seen).toEqual([th.security.id, th.invoice.id, th.pricing.id]);
  });

  it('refuses bad parameters with the fix', async () => {
    const unread = await api(admin(), 'GET', '/inbox/threads?unread=yes');
    expect(unread.status).toBe(400);
    expect(unread.body.message).toMatch(/unread/);
    const unknown = await api(admin(), 'GET', '/inbox/threads?label=vip');
    expect(unknown.status).toBe(400);
    expect(unknown.body.message).toMatch(/label/);
    const limit = await api(admin(), 'GET', '/inbox/threads?limit=0');
    expect(limit.status).toBe(400);
    expect(limit.body.message).toMatch(/limit must be an integer from 1 to 100/);
    for (const junk of ['@@@', ...['null', '{}', '7', '{"t":null,"i":"x"}'].map((j) => Buffer.from(j).toString('base64url'))]) {
      const cursor = await api(admin(), 'GET', `/inbox/threads?cursor=${junk}`);
      expect(cursor.status, junk).toBe(400);
      expect(cursor.body.message).toMatch(/nextCursor/);
    }
  });
});

describe('GET and PUT /inbox/threads/{id}, GET /interactions/{id}', () => {
  it('one thread with its messages in order', async () => {
    const r = await api(admin(), 'GET', `/inbox/threads/${th.invoice.id}`);
    expect(r.status).toBe(200);
    expect(r.body.data.messages).toEqual([
      {
        id: expect.any(String),
        thread_id: th.invoice.id,
        direction: 'inbound',
        from: { email: 'billing@acme.com', name: 'Acme Billing' },
        to: ['sales@alpha.test'],
        subject: 'Invoice',
        body: 'Invoice 42 attached.',
        sent_at: '2026-03-02T08:00:00.000Z',
      },
      {
        id: expect.any(String),
        thread_id: th.invoice.id,
        direction: 'outbound',
        from: { email: 'sales@alpha.test', name: null },
        to: ['billing@acme.com'],
        subject: 'Invoice',
        body: 'Paid, thanks.',
        sent_at: '2026-03-03T10:00:00.000Z',
      },
    ]);
    const missing = await api(admin(), 'GET', '/inbox/threads/no-such-thread');
    expect(missing.status).toBe(404);
    expect(missing.body).toEqual({ error: true, code: 'RECORD_NOT_FOUND', message: "No thread with id 'no-such-thread'" });
  });

  it('marks read and unread', async () => {
    const read = await api(member(), 'PUT', `/inbox/threads/${th.security.id}`, { read: true });
    expect(read.status).toBe(200);
    expect(read.body.data).toMatchObject({ id: th.security.id, unread: false });
    expect(await threadIds('unread=true')).toEqual([]);
    const unread = await api(admin(), 'PUT', `/inbox/threads/${th.pricing.id}`, { unread: true });
    expect(unread.body.data.unread).toBe(true);
    expect((await api(admin(), 'PUT', `/inbox/threads/${th.pricing.id}`, { read: false })).body.data.unread).toBe(true);
    expect(await threadIds('unread=true')).toEqual([th.pricing.id]);
    expect((await api(admin(), 'PUT', `/inbox/threads/${th.security.id}`, { unread: true })).body.data.unread).toBe(true);
    expect((await api(admin(), 'PUT', `/inbox/threads/${th.pricing.id}`, { read: true })).body.data.unread).toBe(false);
  });

  it('refuses an ambiguous or empty update, and unknown threads', async () => {
    for (const body of [{}, { read: true, unread: true }, { read: 'yes' }, { starred: true }]) {
      const r = await api(admin(), 'PUT', `/inbox/threads/${th.security.id}`, body);
      expect(r.status, JSON.stringify(body)).toBe(400);
      expect(r.body.code).toBe('VALIDATION_ERROR');
    }
    expect((await api(admin(), 'PUT', `/inbox/threads/${th.security.id}`, {})).body.message).toMatch(/\{"read": true\|false\}/);
    const missing = await api(admin(), 'PUT', '/inbox/threads/no-such-thread', { read: true });
    expect(missing.status).toBe(404);
    expect(missing.body.code).toBe('RECORD_NOT_FOUND');
  });

  it('an interaction is one message with its thread', async () => {
    const m = th.pricing.messages[0];
    const r = await api(admin(), 'GET', `/interactions/${m.id}`);
    expect(r.status).toBe(200);
    expect(r.body.data).toMatchObject({
      id: m.id,
      type: 'email',
      direction: 'inbound',
      from: { email: 'ada@example.com', name: 'Ada Lovelace' },
      body: 'Could you send the pricing for the team plan?',
      thread: { id: th.pricing.id, subject: 'Pricing question', contact: { id: ada, name: 'Ada Lovelace' } },
    });
    const missing = await api(admin(), 'GET', '/interactions/no-such-message');
    expect(missing.status).toBe(404);
    expect(missing.body).toMatchObject({ error: true, code: 'RECORD_NOT_FOUND', message: expect.stringMatching(/no-such-message/) });
  });
});

describe('emails in the timeline', () => {
  it('each message is email_received or email_sent on the linked contact and company', async () => {
    const contact = (await api(admin(), 'GET', `/activity/contacts/${ada}?actions=email_received,email_sent`)).body.data;
    expect(contact.map((e: any) => [e.action, e.details.sent_at])).toEqual([
      ['email_sent', '2026-03-01T12:00:00.000Z'],
      ['email_received', '2026-03-01T10:00:00.000Z'],
    ]);
    expect(contact[0]).toMatchObject({ via: 'rest', user: { id: t.a.admin.id, name: 'alpha Admin' }, details: { thread_id: th.pricing.id, subject: 'Pricing question' } });
    const company = (await api(admin(), 'GET', `/activity/companies/${acme}?actions=email_received,email_sent`)).body.data;
    expect(company.map((e: any) => e.details.thread_id)).toEqual([th.invoice.id, th.invoice.id, th.pricing.id, th.pricing.id]);
  });
});

describe('integrations and users', () => {
  it('GET /integrations/status says honestly that nothing is configured', async () => {
    const r = await api(member(), 'GET', '/integrations/status');
    expect(r.status).toBe(200);
    expect(r.body.data.email).toMatchObject({ configured: false, provider: null, supported_providers: [] });
    expect(r.body.data.email.note).toMatch(/POST \/api\/v1\/inbox\/threads/);
    expect(r.body.data.calendar).toMatchObject({ configured: false, provider: null });
    for (const v of Object.values(r.body.data) as { configured: boolean }[]) expect(v.configured).toBe(false);
  });

  it('GET /me is the token user', async () => {
    expect((await api(admin(), 'GET', '/me')).body.data).toEqual({
      id: t.a.admin.id,
      email: 'admin@alpha.test',
      name: 'alpha Admin',
      role: 'admin',
      created_at: t.a.admin.created_at,
      workspace: 'alpha',
      time_zone: 'UTC',
    });
    expect((await api(member(), 'GET', '/me')).body.data).toMatchObject({ id: t.a.member.id, role: 'member', workspace: 'alpha' });
    expect((await api(t.b.memberToken, 'GET', '/me')).body.data).toMatchObject({ id: t.b.member.id, workspace: 'beta' });
  });

  it("GET /users lists this workspace's users only", async () => {
    const a = await api(member(), 'GET', '/users');
    expect(a.status).toBe(200);
    expect(a.body.total).toBe(2);
    expect(a.body.data.map((u: any) => [u.name, u.role])).toEqual([
      ['alpha Admin', 'admin'],
      ['alpha Member', 'member'],
    ]);
    expect((await api(t.b.adminToken, 'GET', '/users')).body.data.map((u: any) => u.email).sort()).toEqual(['admin@beta.test', 'member@beta.test']);
  });

  it('refuses a missing or wrong token', async () => {
    const none = await call(t.app, null, 'GET', '/api/v1/inbox/threads');
    expect(none.status).toBe(401);
    expect(none.body.code).toBe('UNAUTHORIZED');
    const wrong = await call(t.app, 'ksr_not-a-real-token', 'GET', '/api/v1/me');
    expect(wrong.status).toBe(401);
  });
});

describe('tenancy', () => {
  it("workspace B sees none of A's threads or messages", async () => {
    const B = t.b.adminToken;
    expect((await api(B, 'GET', '/inbox/threads')).body).toEqual({ data: [], total: 0, nextCursor: null });
    expect((await api(B, 'GET', `/inbox/threads?contact_id=${ada}`)).body.total).toBe(0);
    expect((await api(B, 'GET', '/inbox/threads?q=pricing')).body.total).toBe(0);
    for (const [method, url, body] of [
      ['GET', `/inbox/threads/${th.pricing.id}`, undefined],
      ['PUT', `/inbox/threads/${th.pricing.id}`, { unread: true }],
      ['GET', `/interactions/${th.pricing.messages[0].id}`, undefined],
    ] as const) {
      const r = await api(B, method, url, body);
      expect(r.status, `${method} ${url}`).toBe(404);
      expect(r.body.code).toBe('RECORD_NOT_FOUND');
    }
    expect((await api(admin(), 'GET', `/inbox/threads/${th.pricing.id}`)).body.data.unread).toBe(false);
    // B cannot log a thread against A's contact.
    const link = await api(B, 'POST', '/inbox/threads', { subject: 'x', contact_id: ada, messages: [{ direction: 'inbound', from_email: 'a@b.co', to: ['c@d.co'], body: 'x' }] });
    expect(link.status).toBe(400);
    expect((await api(admin(), 'GET', '/inbox/threads')).body.total).toBe(3);
    // B's own thread stays in B.
    const own = await api(B, 'POST', '/inbox/threads', { subject: 'Pricing in beta', messages: [{ direction: 'inbound', from_email: 'ada@example.com', to: ['c@d.co'], body: 'pricing?' }] });
    expect(own.status).toBe(201);
    expect(await threadIds('q=pricing')).toEqual([th.pricing.id]);
    expect((await api(admin(), 'GET', `/inbox/threads/${own.body.data.id}`)).status).toBe(404);
    expect((await api(admin(), 'GET', `/interactions/${own.body.data.messages[0].id}`)).status).toBe(404);
    expect(await threadIds('', B)).toEqual([own.body.data.id]);
  });
});
