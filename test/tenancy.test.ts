import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { call, type TestApp, testApp } from './helpers.js';

/** A token of workspace A sees, changes and counts nothing of workspace B (and the other way round). */

type Rec = Record<string, any> & { id: string };

let t: TestApp;
const asA = (method: string, url: string, body?: unknown) => call(t.app, t.a.adminToken, method, `/api/v1${url}`, body);
const asB = (method: string, url: string, body?: unknown) => call(t.app, t.b.adminToken, method, `/api/v1${url}`, body);

let aContacts: Rec[];
let bContacts: Rec[];
let aCompany: Rec;
let bCompany: Rec;

/** B's data as B sees it, to prove that nothing A tried changed it. */
async function snapshotB() {
  const contacts = await asB('GET', '/records/contacts?limit=100&sort_by=first_name&sort_dir=asc');
  const companies = await asB('GET', '/records/companies?limit=100&sort_by=name&sort_dir=asc');
  const assoc = await asB('GET', `/records/companies/${bCompany.id}`);
  return { contacts: contacts.body, companies: companies.body, assoc: assoc.body.data.associations };
}

beforeAll(async () => {
  t = await testApp();
  aCompany = (await asA('POST', '/records/companies', { name: 'Alpha Corp' })).body.data;
  bCompany = (await asB('POST', '/records/companies', { name: 'Beta Corp' })).body.data;
  aContacts = (
    await asA('POST', '/records/contacts/batch/create', {
      records: [
        { first_name: 'Anna', email: 'anna@alpha.test', company: aCompany.id },
        { first_name: 'Arno', email: 'shared@both.test' },
        { first_name: 'Avi', status: 'customer' },
      ],
    })
  ).body.data;
  bContacts = (
    await asB('POST', '/records/contacts/batch/create', {
      records: [
        { first_name: 'Bella', email: 'bella@beta.test', company: bCompany.id, status: 'customer' },
        { first_name: 'Boris', email: 'boris@beta.test' },
        { first_name: 'Bea', status: 'customer' },
        { first_name: 'Bruno' },
        { first_name: 'Britta', email: 'britta@beta.test' },
      ],
    })
  ).body.data;
  expect(aContacts).toHaveLength(3);
  expect(bContacts).toHaveLength(5);
});
afterAll(() => t.close());

describe('reading', () => {
  it('list and total count only the own workspace', async () => {
    const a = await asA('GET', '/records/contacts?limit=100');
    expect(a.body.total).toBe(aContacts.length);
    expect(a.body.data.map((r: Rec) => r.id).sort()).toEqual(aContacts.map((r) => r.id).sort());
    const b = await asB('GET', '/records/contacts?limit=100');
    expect(b.body.total).toBe(bContacts.length);
    expect(b.body.data.map((r: Rec) => r.id).sort()).toEqual(bContacts.map((r) => r.id).sort());
    // A filter that matches B's records matches nothing for A.
    const f = await asA('GET', '/records/contacts?filter_field=first_name&filter_operator=starts_with&filter_value=B');
    expect(f.body).toMatchObject({ data: [], total: 0, nextCursor: null });
    const customers = await asA('GET', '/records/contacts?filter_field=status&filter_operator=eq&filter_value=customer');
    expect(customers.body.total).toBe(aContacts.filter((c) => c.status === 'customer').length);
  });

  it("get by id of B's record: 404, with or without a projection", async () => {
    for (const r of [...bContacts]) {
      const g = await asA('GET', `/records/contacts/${r.id}`);
      expect(g.status).toBe(404);
      expect(g.body.code).toBe('RECORD_NOT_FOUND');
    }
    expect((await asA('GET', `/records/companies/${bCompany.id}?fields=name`)).status).toBe(404);
    // Nor its activity feed.
    expect((await asA('GET', `/activity/contacts/${bContacts[0]!.id}`)).status).toBe(404);
    expect((await asB('GET', `/activity/contacts/${bContacts[0]!.id}`)).status).toBe(200);
    // The id of B's company under another object name of A: still nothing.
    expect((await asA('GET', `/records/contacts/${bCompany.id}`)).status).toBe(404);
  });

  it("search (POST .../search and full-text /search) finds none of B's records", async () => {
    const s = await asA('POST', '/records/contacts/search', { operator: 'or', conditions: bContacts.map((c) => ({ field: 'first_name', operator: 'eq', value: c.first_name })) });
    expect(s.status).toBe(200);
    expect(s.body).toMatchObject({ data: [], total: 0 });
    const ids = await asA('POST', '/records/contacts/search', { filter: { operator: 'and', conditions: [{ field: 'id', operator: 'in', value: bContacts.map((c) => c.id) }] } });
    expect(ids.body.total).toBe(0);
    const own = await asB('POST', '/records/contacts/search', { operator: 'and', conditions: [{ field: 'id', operator: 'in', value: bContacts.map((c) => c.id) }] });
    expect(own.body.total).toBe(bContacts.length);
    const ft = await asA('GET', '/search?q=Bella');
    expect(ft.status, JSON.stringify(ft.body)).toBe(200);
    expect(ft.body.total).toBe(0);
    const ftB = await asB('GET', '/search?q=Bella');
    expect(ftB.body.data.map((x: { id: string }) => x.id)).toEqual([bContacts[0]!.id]);
  });

  it("aggregates count only the own workspace's records", async () => {
    const a = await asA('GET', '/aggregate/contacts?field=id&function=count');
    expect(a.status, JSON.stringify(a.body)).toBe(200);
    expect(a.body.value).toBe(aContacts.length);
    const b = await asB('GET', '/aggregate/contacts?field=id&function=count&filter_field=status&filter_operator=eq&filter_value=customer');
    expect(b.body.value).toBe(bContacts.filter((c) => c.status === 'customer').length);
  });

  it("a company's enriched associations show only its own workspace's records", async () => {
    const a = await asA('GET', `/records/companies/${aCompany.id}`);
    expect(a.body.data.associations.contacts).toEqual({ total: 1, records: [{ id: aContacts[0]!.id, name: 'Anna', via: 'company' }] });
  });

  it('/users and /me list only the own users and workspace', async () => {
    const u = await asA('GET', '/users');
    expect(u.body.total).toBe(2);
    expect(u.body.data.map((x: { id: string }) => x.id).sort()).toEqual([t.a.admin.id, t.a.member.id].sort());
    expect(JSON.stringify(u.body)).not.toContain(t.b.admin.email);
    const ub = await asB('GET', '/users');
    expect(ub.body.data.map((x: { id: string }) => x.id).sort()).toEqual([t.b.admin.id, t.b.member.id].sort());
    expect((await asA('GET', '/me')).body.data.workspace).toBe(t.a.workspace.name);
    expect((await asB('GET', '/me')).body.data.workspace).toBe(t.b.workspace.name);
  });
});

describe('writing', () => {
  it("update and delete of B's records: 404, and B's records unchanged", async () => {
    const before = await snapshotB();
    const target = bContacts[0]!;
    for (const method of ['PUT', 'PATCH']) {
      const r = await asA(method, `/records/contacts/${target.id}`, { first_name: 'Hacked', status: 'churned' });
      expect(r.status).toBe(404);
      expect(r.body.code).toBe('RECORD_NOT_FOUND');
    }
    const d = await asA('DELETE', `/records/contacts/${target.id}`);
    expect(d.status).toBe(404);
    const batchDelete = await asA('DELETE', '/records/contacts', { ids: bContacts.map((c) => c.id) });
    expect(batchDelete.status).toBe(200);
    expect(batchDelete.body.data).toEqual({ deleted: [], not_found: bContacts.map((c) => c.id) });
    const batchUpdate = await asA('POST', '/records/contacts/batch/update', { records: [{ id: target.id, first_name: 'Hacked' }] });
    expect(batchUpdate.status).toBe(404);
    const upsertById = await asA('POST', '/records/contacts/batch/upsert', { records: [{ id: target.id, first_name: 'Hacked' }] });
    expect(upsertById.status).toBe(404);
    expect(await snapshotB()).toEqual(before);
  });

  it("upsert by email matches only A's records: B's contact with that email is untouched", async () => {
    const before = await snapshotB();
    const r = await asA('POST', '/records/contacts/batch/upsert', { key: 'email', records: [{ email: 'bella@beta.test', first_name: 'Alpha Bella' }] });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(r.body.results[0].action).toBe('created');
    expect(r.body.results[0].id).not.toBe(bContacts[0]!.id);
    expect(await snapshotB()).toEqual(before);
    // Unique values are unique per workspace: B may use an email A already has.
    const dup = await asB('POST', '/records/contacts', { first_name: 'Other Arno', email: 'shared@both.test' });
    expect(dup.status).toBe(201);
    await asA('DELETE', `/records/contacts/${r.body.results[0].id}`);
    await asB('DELETE', `/records/contacts/${dup.body.data.id}`);
  });

  it("associations to or from B's records are refused", async () => {
    const before = await snapshotB();
    const fromA = await asA('PUT', `/records/contacts/${aContacts[1]!.id}/associations/companies/${bCompany.id}`);
    expect(fromA.status).toBe(404);
    expect(fromA.body.code).toBe('RECORD_NOT_FOUND');
    const fromB = await asA('PUT', `/records/companies/${bCompany.id}/associations/contacts/${aContacts[1]!.id}`);
    expect(fromB.status).toBe(404);
    // B's own association cannot be removed by A either.
    expect((await asB('PUT', `/records/companies/${bCompany.id}/associations/contacts/${bContacts[1]!.id}`)).status).toBe(200);
    const snap = await snapshotB();
    expect(snap.assoc.contacts.total).toBe(before.assoc.contacts.total + 1);
    expect((await asA('DELETE', `/records/companies/${bCompany.id}/associations/contacts/${bContacts[1]!.id}`)).status).toBe(404);
    expect(await snapshotB()).toEqual(snap);
    expect((await asA('GET', `/records/contacts/${aContacts[1]!.id}`)).body.data.associations).toEqual({});
  });

  it("a relation field pointing at B's record is rejected (create, update, batch)", async () => {
    const before = (await asA('GET', '/records/contacts?limit=1')).body.total;
    const c = await asA('POST', '/records/contacts', { first_name: 'Sneaky', company: bCompany.id });
    expect(c.status).toBe(400);
    expect(c.body.code).toBe('VALIDATION_ERROR');
    expect(c.body.message).toContain('company');
    const u = await asA('PATCH', `/records/contacts/${aContacts[2]!.id}`, { company: bCompany.id });
    expect(u.status).toBe(400);
    expect((await asA('GET', `/records/contacts/${aContacts[2]!.id}`)).body.data.company).toBeNull();
    const o = await asA('POST', '/records/opportunities', { name: 'Sneaky deal', contact: bContacts[0]!.id });
    expect(o.status).toBe(400);
    // An owner from B's users is not a user of A.
    const owner = await asA('POST', '/records/contacts', { first_name: 'Owned', owner: t.b.admin.id });
    expect(owner.status).toBe(400);
    expect((await asA('GET', '/records/contacts?limit=1')).body.total).toBe(before);
    expect((await asA('GET', '/records/opportunities?limit=1')).body.total).toBe(0);
  });
});

describe('schema', () => {
  it("A's custom objects and fields are invisible in B's schema, and B may reuse the names", async () => {
    const obj = await asA('POST', '/schema', { name: 'projects', fields: [{ name: 'title', type: 'TEXT', required: true }] });
    expect(obj.status, JSON.stringify(obj.body)).toBe(201);
    const fld = await asA('POST', '/schema/contacts/fields', { name: 'tier', type: 'SELECT', options: ['gold', 'silver'] });
    expect(fld.status, JSON.stringify(fld.body)).toBe(201);
    expect((await asA('POST', '/records/projects', { title: 'A project' })).status).toBe(201);

    const bSchema = await asB('GET', '/schema');
    expect(bSchema.body.data.map((o: { name: string }) => o.name)).not.toContain('projects');
    expect((await asB('GET', '/schema/projects')).body.code).toBe('INVALID_OBJECT');
    expect((await asB('GET', '/records/projects')).body.code).toBe('INVALID_OBJECT');
    const bContactsSchema = await asB('GET', '/schema/contacts');
    expect(bContactsSchema.body.data.fields.map((f: { name: string }) => f.name)).not.toContain('tier');
    const bWrite = await asB('POST', '/records/contacts', { first_name: 'Tiered', tier: 'gold' });
    expect(bWrite.status).toBe(400);
    expect(bWrite.body.message).toContain('tier');

    // B's own 'projects' is a separate object with its own fields and records.
    const bObj = await asB('POST', '/schema', { name: 'projects', fields: [{ name: 'code', type: 'INTEGER' }] });
    expect(bObj.status, JSON.stringify(bObj.body)).toBe(201);
    expect((await asB('GET', '/records/projects')).body.total).toBe(0);
    expect((await asB('POST', '/records/projects', { title: 'x' })).status).toBe(400);
    expect((await asB('POST', '/records/projects', { code: 7 })).status).toBe(201);
    expect((await asA('GET', '/records/projects')).body.total).toBe(1);
    const aFields = (await asA('GET', '/schema/projects')).body.data.fields.map((f: { name: string }) => f.name);
    expect(aFields).toContain('title');
    expect(aFields).not.toContain('code');
  });
});
