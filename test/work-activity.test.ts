import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { InMemoryTransport } from '@modelcontextprotocol/sdk/inMemory.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createMcpServer } from '../src/mcp/server.js';
import { setClock } from '../src/services/clock.js';
import { call, silent, type TestApp, testApp } from './helpers.js';

/**
 * GET /activity/{object}/{id}: a record's timeline, newest first and paginated, written in the same
 * transaction as every write: field changes with old and new values, associations, tasks, notes
 * and emails, with the user's name and the surface (REST here, MCP tool names below; the CLI in
 * work-cli.test.ts). Failed writes leave no entry.
 */
const T0 = Date.parse('2026-03-02T09:00:00Z');
const at = (minutes: number) => new Date(T0 + minutes * 60_000).toISOString();

let t: TestApp;
const api = (token: string, method: string, url: string, body?: unknown) => call(t.app, token, method, `/api/v1${url}`, body);
const admin = () => t.a.adminToken;
const member = () => t.a.memberToken;

interface Entry {
  id: number;
  action: string;
  at: string;
  user: { id: string; name: string | null } | null;
  via: string;
  details: any;
}

async function timeline(object: string, id: string, query = 'limit=100', token = admin()): Promise<Entry[]> {
  const r = await api(token, 'GET', `/activity/${object}/${id}?${query}`);
  expect(r.status, JSON.stringify(r.body)).toBe(200);
  return r.body.data;
}

const activityRows = () => t.a.ctx.db.kysely.selectFrom('activity').selectAll().orderBy('id').execute();
const activityCount = async () =>
  Number(
    (
      await t.a.ctx.db.kysely
        .selectFrom('activity')
        .select((eb) => eb.fn.countAll<number>().as('n'))
        .executeTakeFirstOrThrow()
    ).n,
  );

let ada: string;
let grace: string;
let acme: string;
let deal: string;
let task: string;

beforeAll(async () => {
  t = await testApp();
  // A scripted history, one step per minute so every entry has its own time.
  let minute = 0;
  const step = async <T>(fn: () => Promise<T>): Promise<T> => {
    setClock(Date.parse(at(minute++)));
    return fn();
  };
  const ok = (r: { status: number; body: any }) => {
    expect(r.status, JSON.stringify(r.body)).toBeLessThan(300);
    return r.body.data;
  };
  acme = (await step(async () => ok(await api(admin(), 'POST', '/records/companies', { name: 'Acme' })))).id; // 0
  ada = (await step(async () => ok(await api(admin(), 'POST', '/records/contacts', { first_name: 'Ada', last_name: 'Lovelace', email: 'ada@example.com' })))).id; // 1
  grace = (await step(async () => ok(await api(admin(), 'POST', '/records/contacts', { first_name: 'Grace', email: 'grace@example.com' })))).id; // 2
  deal = (await step(async () => ok(await api(admin(), 'POST', '/records/opportunities', { name: 'Big deal', amount: 5000 })))).id; // 3
  await step(async () => ok(await api(member(), 'PUT', `/records/contacts/${ada}`, { job_title: 'CTO', status: 'customer', company: acme }))); // 4
  await step(async () => ok(await api(admin(), 'PUT', `/records/contacts/${ada}/associations/opportunities/${deal}`))); // 5
  task = (await step(async () => ok(await api(member(), 'POST', '/tasks', { title: 'Send the contract', links: [{ object: 'contacts', id: ada }] })))).id; // 6
  await step(async () => ok(await api(member(), 'PUT', `/tasks/${task}/complete`))); // 7
  await step(async () => ok(await api(admin(), 'POST', '/notes', { body: 'Shared: wants a discount', object: 'contacts', record_id: ada }))); // 8
  await step(async () => ok(await api(admin(), 'POST', '/notes', { body: 'Private: do not give a discount', visibility: 'private', object: 'contacts', record_id: ada }))); // 9
  await step(async () =>
    ok(
      await api(admin(), 'POST', '/inbox/threads', {
        subject: 'Contract',
        contact_id: ada,
        messages: [
          { direction: 'outbound', from_email: 'sales@alpha.test', to: ['ada@example.com'], body: 'Contract attached', sent_at: '2026-03-02T09:10:00Z' },
          { direction: 'inbound', from_email: 'ada@example.com', to: ['sales@alpha.test'], body: 'Signed!', sent_at: '2026-03-02T09:10:30Z' },
        ],
      }),
    ),
  ); // 10
  await step(async () => ok(await api(admin(), 'PUT', `/records/contacts/${ada}`, { job_title: 'CEO' }))); // 11
  setClock(null);
});

afterAll(async () => {
  setClock(null);
  await t.close();
});

describe('a contact timeline written through REST', () => {
  it('has every kind of entry, newest first, with who and through which surface', async () => {
    const entries = await timeline('contacts', ada);
    expect(entries.map((e) => [e.action, e.at])).toEqual([
      ['updated', at(11)],
      ['email_received', at(10)],
      ['email_sent', at(10)],
      ['note_added', at(8)],
      ['related_status_changed', at(7)],
      ['related_created', at(6)],
      ['associated', at(5)],
      ['updated', at(4)],
      ['created', at(1)],
    ]);
    for (const e of entries) expect(e.via).toBe('rest');
    const ids = entries.map((e) => e.id);
    expect(ids).toEqual([...ids].sort((a, b) => b - a));
    const adminUser = { id: t.a.admin.id, name: 'alpha Admin' };
    const memberUser = { id: t.a.member.id, name: 'alpha Member' };
    const [ceo, received, sent, note, completed, created, associated, changed, born] = entries;
    expect(born).toMatchObject({ user: adminUser, details: { fields: expect.arrayContaining(['first_name', 'last_name', 'email']) } });
    // Field changes carry old and new values, relation fields included.
    expect(changed).toMatchObject({ user: memberUser, details: { changes: { job_title: [null, 'CTO'], status: ['lead', 'customer'], company: [null, acme] } } });
    expect(ceo).toMatchObject({ user: adminUser, details: { changes: { job_title: ['CTO', 'CEO'] } } });
    expect(associated).toMatchObject({ user: adminUser, details: { object: 'opportunities', id: deal } });
    // Tasks linked to the contact.
    expect(created).toMatchObject({ user: memberUser, details: { object: 'tasks', id: task, name: 'Send the contract', field: 'contact' } });
    expect(completed).toMatchObject({ user: memberUser, details: { object: 'tasks', id: task, field: 'contact', from: 'open', to: 'completed' } });
    // The shared note, not the private one.
    expect(note).toMatchObject({ user: adminUser, details: { note_id: expect.any(String) } });
    expect(entries.filter((e) => e.action.startsWith('note_'))).toHaveLength(1);
    // Emails.
    expect(sent).toMatchObject({ user: adminUser, details: { subject: 'Contract', sent_at: '2026-03-02T09:10:00.000Z' } });
    expect(received).toMatchObject({ details: { subject: 'Contract', sent_at: '2026-03-02T09:10:30.000Z', thread_id: sent!.details.thread_id } });
  });

  it('the other side of the association and the task have their own timelines', async () => {
    expect((await timeline('opportunities', deal)).map((e) => [e.action, e.details])).toEqual([
      ['associated', { object: 'contacts', id: ada }],
      ['created', { fields: expect.arrayContaining(['name', 'amount']) }],
    ]);
    const taskEntries = await timeline('tasks', task);
    expect(taskEntries.map((e) => e.action)).toEqual(['updated', 'created']);
    expect(taskEntries[0]!.details.changes).toEqual({ status: ['open', 'completed'], completed_at: [null, at(7)] });
    expect(taskEntries[1]!.details.fields).toEqual(expect.arrayContaining(['title', 'assignee', 'contact']));
    // Setting the company on Ada is a link seen from the company.
    expect((await timeline('companies', acme)).map((e) => [e.action, e.details?.id ?? null])).toEqual([
      ['related_linked', ada],
      ['created', null],
    ]);
  });

  it('relinking and deleting a task move its entries between the linked records', async () => {
    const reopened = await api(member(), 'PUT', `/tasks/${task}/complete`, { completed: false });
    expect(reopened.body.data.status).toBe('open');
    expect((await timeline('contacts', ada, 'limit=1'))[0]).toMatchObject({ action: 'related_status_changed', details: { from: 'completed', to: 'open' } });
    await api(member(), 'PUT', `/tasks/${task}`, { contact: grace });
    expect((await timeline('contacts', ada, 'limit=1'))[0]).toMatchObject({ action: 'related_unlinked', details: { id: task } });
    expect((await timeline('contacts', grace, 'limit=1'))[0]).toMatchObject({ action: 'related_linked', details: { id: task } });
    await api(admin(), 'DELETE', `/tasks/${task}`);
    expect((await timeline('contacts', grace, 'limit=1'))[0]).toMatchObject({ action: 'related_deleted', via: 'rest', details: { id: task, name: 'Send the contract' } });
    // A deleted record keeps its timeline, ending in 'deleted'.
    const gone = await timeline('tasks', task);
    expect(gone[0]).toMatchObject({ action: 'deleted', user: { name: 'alpha Admin' }, details: { name: 'Send the contract' } });
  });

  it('dissociating is recorded on both sides', async () => {
    await api(admin(), 'DELETE', `/records/contacts/${ada}/associations/opportunities/${deal}`);
    expect((await timeline('contacts', ada, 'limit=1'))[0]).toMatchObject({ action: 'dissociated', details: { object: 'opportunities', id: deal } });
    expect((await timeline('opportunities', deal, 'limit=1'))[0]).toMatchObject({ action: 'dissociated', details: { object: 'contacts', id: ada } });
  });

  it('pages newest first with total and a cursor, without gaps or duplicates', async () => {
    const full = await timeline('contacts', ada);
    const seen: number[] = [];
    let cursor: string | null = null;
    do {
      const r = await api(admin(), 'GET', `/activity/contacts/${ada}?limit=2${cursor ? `&cursor=${cursor}` : ''}`);
      expect(r.body.total).toBe(full.length);
      expect(r.body.data.length).toBeLessThanOrEqual(2);
      seen.push(...r.body.data.map((e: Entry) => e.id));
      cursor = r.body.nextCursor;
    } while (cursor);
    expect(seen).toEqual(full.map((e) => e.id));
    // The default page is 50, the maximum 100.
    expect((await api(admin(), 'GET', `/activity/contacts/${ada}?limit=101`)).status).toBe(400);
  });

  it('filters by action', async () => {
    const emails = await timeline('contacts', ada, 'actions=email_sent,email_received');
    expect(emails.map((e) => e.action)).toEqual(['email_received', 'email_sent']);
    const r = await api(admin(), 'GET', `/activity/contacts/${ada}?actions=updated&limit=1`);
    expect(r.body.total).toBe(2);
    expect(r.body.nextCursor).not.toBeNull();
  });

  it('errors: unknown record 404, unknown object 400 with the valid ones, bad cursor 400', async () => {
    const missing = await api(admin(), 'GET', '/activity/contacts/no-such-contact');
    expect(missing.status).toBe(404);
    expect(missing.body).toEqual({ error: true, code: 'RECORD_NOT_FOUND', message: "No contacts record with id 'no-such-contact'" });
    const obj = await api(admin(), 'GET', `/activity/people/${ada}`);
    expect(obj.status).toBe(400);
    expect(obj.body.code).toBe('INVALID_OBJECT');
    expect(obj.body.message).toMatch(/companies.*contacts/);
    for (const junk of ['zzzz', ...['0', '-5', '1.5', 'null'].map((j) => Buffer.from(j).toString('base64url'))]) {
      const cursor = await api(admin(), 'GET', `/activity/contacts/${ada}?cursor=${junk}`);
      expect(cursor.status, junk).toBe(400);
      expect(cursor.body.message).toMatch(/nextCursor/);
    }
    const unknown = await api(admin(), 'GET', `/activity/contacts/${ada}?since=yesterday`);
    expect(unknown.status).toBe(400);
    expect(unknown.body.message).toMatch(/since/);
  });

  it("workspace B cannot read A's timelines", async () => {
    const r = await api(t.b.adminToken, 'GET', `/activity/contacts/${ada}`);
    expect(r.status).toBe(404);
    expect(r.body.code).toBe('RECORD_NOT_FOUND');
    const rows = await activityRows();
    expect(rows.every((row) => row.workspace_id === t.a.workspace.id)).toBe(true);
  });
});

describe('failed writes leave no activity', () => {
  async function unchanged(label: string, expectedStatus: number, fn: () => Promise<{ status: number; body: any }>) {
    const before = await activityRows();
    const r = await fn();
    expect(r.status, `${label}: ${JSON.stringify(r.body)}`).toBe(expectedStatus);
    expect(r.body.error, label).toBe(true);
    expect(await activityRows(), label).toEqual(before);
    return r.body;
  }

  it('a batch create with one bad row writes no record and no entry', async () => {
    const contacts = (await api(admin(), 'GET', '/records/contacts')).body.total;
    const body = await unchanged('batch with a bad row', 400, () =>
      api(admin(), 'POST', '/records/contacts/batch/create', { records: [{ first_name: 'Fine' }, { first_name: 'Bad', status: 'vip' }, { first_name: 'Also fine' }] }),
    );
    expect(body.message).toMatch(/Row 1: Field 'status' must be one of/);
    expect((await api(admin(), 'GET', '/records/contacts')).body.total).toBe(contacts);
  });

  it('a batch whose second row hits a unique value inside the transaction rolls back the first row and its entry', async () => {
    const contacts = (await api(admin(), 'GET', '/records/contacts')).body.total;
    await unchanged('batch with a duplicate', 409, () =>
      api(admin(), 'POST', '/records/contacts/batch/create', {
        records: [
          { first_name: 'New', email: 'new@example.com' },
          { first_name: 'Copy', email: 'ada@example.com' },
        ],
      }),
    );
    expect((await api(admin(), 'GET', '/records/contacts')).body.total).toBe(contacts);
  });

  it('a create or update pointing at a record that does not exist', async () => {
    const msg = await unchanged('relation', 400, () => api(admin(), 'POST', '/records/contacts', { first_name: 'Orphan', company: 'no-such-company' }));
    expect(msg.message).toMatch(/no companies record has id 'no-such-company'/);
    await unchanged('task link', 400, () => api(admin(), 'POST', '/tasks', { title: 'Orphan task', links: [{ object: 'opportunities', id: 'no-such-deal' }] }));
    await unchanged('update relation', 400, () => api(admin(), 'PUT', `/records/contacts/${grace}`, { company: 'no-such-company', job_title: 'Admiral' }));
    await unchanged('association', 404, () => api(admin(), 'PUT', `/records/contacts/${ada}/associations/opportunities/no-such-deal`));
  });

  it('a duplicate email, on create and on update', async () => {
    const body = await unchanged('duplicate create', 409, () => api(admin(), 'POST', '/records/contacts', { first_name: 'Ada again', email: 'ADA@example.com' }));
    expect(body).toMatchObject({ code: 'DUPLICATE_RECORD', message: expect.stringMatching(/email/) });
    await unchanged('duplicate update', 409, () => api(admin(), 'PUT', `/records/contacts/${grace}`, { email: 'ada@example.com', job_title: 'Admiral' }));
    expect((await api(admin(), 'GET', `/records/contacts/${grace}`)).body.data.job_title).toBeNull();
  });

  it('notes, threads and tasks that fail validation or permission', async () => {
    const note = (await api(admin(), 'POST', '/notes', { body: 'Admin note', object: 'contacts', record_id: ada })).body.data.id;
    await unchanged('note on a missing record', 404, () => api(admin(), 'POST', '/notes', { body: 'x', object: 'contacts', record_id: 'nope' }));
    await unchanged("member edits admin's note", 403, () => api(member(), 'PUT', `/notes/${note}`, { body: 'mine now' }));
    await unchanged("member deletes admin's note", 403, () => api(member(), 'DELETE', `/notes/${note}`));
    await unchanged('thread on a missing contact', 400, () =>
      api(admin(), 'POST', '/inbox/threads', { subject: 'x', contact_id: 'nope', messages: [{ direction: 'inbound', from_email: 'a@b.co', to: ['c@d.co'], body: 'x' }] }),
    );
    await unchanged('bad contact update', 400, () => api(admin(), 'PUT', `/records/contacts/${ada}`, { status: 'vip' }));
    await unchanged('task on a missing id', 404, () => api(admin(), 'PUT', '/tasks/nope/complete'));
  });

  it('a write that changes nothing leaves nothing', async () => {
    const before = await activityCount();
    expect((await api(admin(), 'PUT', `/records/contacts/${ada}`, { job_title: 'CEO' })).status).toBe(200);
    const id = (await api(admin(), 'POST', '/tasks', { title: 'Twice done', status: 'completed' })).body.data.id;
    const afterCreate = await activityCount();
    expect(afterCreate).toBe(before + 1);
    expect((await api(admin(), 'PUT', `/tasks/${id}/complete`)).status).toBe(200);
    expect(await activityCount()).toBe(afterCreate);
  });
});

describe('MCP writes record the tool name as the surface', () => {
  let client: Client;
  const tool = async (name: string, args: Record<string, unknown>) => (await client.callTool({ name, arguments: args })) as CallToolResult;

  beforeAll(async () => {
    // The MCP surface (src/mcp/server.ts, tools/index.ts) is usable: an in-process SDK client over
    // the in-memory transport, acting as workspace A's member.
    const server = await createMcpServer({
      db: t.db,
      log: silent,
      actor: { workspaceId: t.a.workspace.id, userId: t.a.member.id, role: 'member', via: 'mcp' },
    });
    const [a, b] = InMemoryTransport.createLinkedPair();
    await server.connect(a);
    client = new Client({ name: 'work-activity-test', version: '1.0.0' });
    await client.connect(b);
  });
  afterAll(() => client?.close());

  it('crm_create_record and crm_update_record on a task show up in its timeline and the contact timeline', async () => {
    const created = await tool('crm_create_record', { object: 'tasks', values: { title: 'Agent task', contact: grace, assignee: t.a.member.id, due_at: '2026-04-01T10:00:00Z' } });
    expect(created.isError, JSON.stringify(created.content)).toBeFalsy();
    const id = (created.structuredContent as { record: { id: string } }).record.id;
    const updated = await tool('crm_update_record', { object: 'tasks', id, values: { status: 'completed', priority: 'high' } });
    expect(updated.isError, JSON.stringify(updated.content)).toBeFalsy();

    const own = await timeline('tasks', id);
    expect(own.map((e) => [e.action, e.via, e.user?.name])).toEqual([
      ['updated', 'mcp:crm_update_record', 'alpha Member'],
      ['created', 'mcp:crm_create_record', 'alpha Member'],
    ]);
    expect(own[0]!.details.changes).toMatchObject({ status: ['open', 'completed'], priority: ['medium', 'high'] });
    const contact = await timeline('contacts', grace, 'limit=2');
    expect(contact.map((e) => [e.action, e.via])).toEqual([
      ['related_status_changed', 'mcp:crm_update_record'],
      ['related_created', 'mcp:crm_create_record'],
    ]);
    // The same rows, read straight from the table.
    const rows = await t.a.ctx.db.kysely.selectFrom('activity').select(['action', 'via', 'object']).where('record_id', 'in', [id, grace]).orderBy('id').execute();
    expect(rows.filter((r) => r.via.startsWith('mcp:'))).toEqual([
      { action: 'created', via: 'mcp:crm_create_record', object: 'tasks' },
      { action: 'related_created', via: 'mcp:crm_create_record', object: 'contacts' },
      { action: 'updated', via: 'mcp:crm_update_record', object: 'tasks' },
      { action: 'related_status_changed', via: 'mcp:crm_update_record', object: 'contacts' },
    ]);
  });

  it('a failed or dry-run MCP write leaves no entry', async () => {
    const before = await activityRows();
    const bad = await tool('crm_create_record', { object: 'tasks', values: { title: 'Orphan', contact: 'no-such-contact' } });
    expect(bad.isError).toBe(true);
    expect((bad.content[0] as { text: string }).text).toMatch(/no-such-contact/);
    const dup = await tool('crm_create_record', { object: 'contacts', values: { first_name: 'Dup', email: 'ada@example.com' } });
    expect(dup.isError).toBe(true);
    const dry = await tool('crm_update_record', { object: 'contacts', id: ada, values: { job_title: 'Dry' }, dry_run: true });
    expect(dry.isError, JSON.stringify(dry.content)).toBeFalsy();
    expect(await activityRows()).toEqual(before);
  });
});
