import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { call, type TestApp, testApp } from './helpers.js';

/** The Kasar records contract, end to end through Fastify (inject), on a fresh database. */

type Rec = Record<string, any> & { id: string };

function client(t: TestApp, token = t.a.adminToken) {
  return (method: string, url: string, body?: unknown) => call(t.app, token, method, `/api/v1${url}`, body);
}

function qs(params: Record<string, string | number | undefined>): string {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined) p.set(k, String(v));
  return p.toString();
}

/** Values in listing order: empty values lowest (first ascending, last descending). */
function sortedValues(values: (string | number | null)[], dir: 'asc' | 'desc'): (string | number | null)[] {
  const asc = [...values].sort((a, b) => (a === b ? 0 : a === null ? -1 : b === null ? 1 : a < b ? -1 : 1));
  return dir === 'asc' ? asc : asc.reverse();
}

/** Follow nextCursor from the first page to the last; every page must report the same total. */
async function pageAll(api: ReturnType<typeof client>, path: string, params: Record<string, string | number | undefined>) {
  const rows: Rec[] = [];
  const totals: number[] = [];
  let cursor: string | undefined;
  let pages = 0;
  for (;;) {
    const r = await api('GET', `${path}?${qs({ ...params, cursor })}`);
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    pages++;
    rows.push(...r.body.data);
    totals.push(r.body.total);
    expect(r.body.data.length).toBeLessThanOrEqual(Number(params.limit ?? 20));
    if (r.body.nextCursor === null) break;
    expect(typeof r.body.nextCursor).toBe('string');
    expect(r.body.data.length).toBe(Number(params.limit ?? 20));
    cursor = r.body.nextCursor;
    if (pages > 200) throw new Error('paging does not end');
  }
  return { rows, totals, pages };
}

const LAST_NAMES = ['Martin', 'dupont', 'Zhang', 'Martin', null, 'Abbott', 'martin', null];
const STATUSES = ['lead', 'qualified', 'customer', 'churned'];

describe('records: list, sort, project, page', () => {
  let t: TestApp;
  let api: ReturnType<typeof client>;
  let contacts: Rec[];
  let opps: Rec[];

  beforeAll(async () => {
    t = await testApp();
    api = client(t);
    const inputs = Array.from({ length: 29 }, (_, i) => ({
      first_name: `Person${String(i).padStart(2, '0')}`,
      last_name: LAST_NAMES[i % LAST_NAMES.length],
      status: STATUSES[(i * 7) % 4],
      email: i % 3 === 0 ? null : `person${i}@example.com`,
      tags: i % 5 === 0 ? ['vip', 'event'] : i % 5 === 1 ? ['newsletter'] : [],
    }));
    const r = await api('POST', '/records/contacts/batch/create', { records: inputs });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    contacts = r.body.data;
    expect(contacts.map((c) => c.first_name)).toEqual(inputs.map((x) => x.first_name));
    const o = await api('POST', '/records/opportunities/batch/create', {
      records: Array.from({ length: 13 }, (_, i) => ({
        name: `Deal ${i}`,
        amount: i % 4 === 3 ? null : (i * 1234.5) % 9000,
        close_date: i % 3 === 0 ? null : `2025-0${1 + (i % 9)}-1${i % 10}`,
      })),
    });
    expect(o.status, JSON.stringify(o.body)).toBe(201);
    opps = o.body.data;
  });
  afterAll(() => t.close());

  it('lists with data, total and nextCursor (default page of 20, newest first)', async () => {
    const r = await api('GET', '/records/contacts');
    expect(r.status).toBe(200);
    expect(r.body.total).toBe(contacts.length);
    expect(r.body.data).toHaveLength(20);
    expect(typeof r.body.nextCursor).toBe('string');
    const created = r.body.data.map((x: Rec) => x.created_at);
    expect(created).toEqual([...created].sort().reverse());
    // Every field of the object is present, empty ones as null.
    expect(Object.keys(r.body.data[0]).sort()).toEqual((await api('GET', '/schema/contacts')).body.data.fields.map((f: { name: string }) => f.name).sort());
  });

  it('filters with filter_field / filter_operator / filter_value', async () => {
    for (const status of STATUSES) {
      const r = await api('GET', `/records/contacts?${qs({ filter_field: 'status', filter_operator: 'eq', filter_value: status, limit: 100 })}`);
      expect(r.status).toBe(200);
      const want = contacts
        .filter((c) => c.status === status)
        .map((c) => c.id)
        .sort();
      expect(r.body.data.map((x: Rec) => x.id).sort()).toEqual(want);
      expect(r.body.total).toBe(want.length);
    }
    // 'equals' is the same operator as 'eq'; a comma list for 'in'.
    const eq = await api('GET', `/records/contacts?${qs({ filter_field: 'last_name', filter_operator: 'equals', filter_value: 'Martin', limit: 100 })}`);
    expect(eq.body.total).toBe(contacts.filter((c) => c.last_name === 'Martin').length);
    const inList = await api('GET', `/records/contacts?${qs({ filter_field: 'status', filter_operator: 'in', filter_value: 'lead,churned', limit: 100 })}`);
    expect(inList.body.total).toBe(contacts.filter((c) => ['lead', 'churned'].includes(c.status)).length);
    const nulls = await api('GET', `/records/contacts?${qs({ filter_field: 'email', filter_operator: 'is_null', limit: 100 })}`);
    expect(nulls.body.data.map((x: Rec) => x.id).sort()).toEqual(
      contacts
        .filter((c) => c.email === null)
        .map((c) => c.id)
        .sort(),
    );
    // between takes "low,high" in the query string, as in takes a comma list.
    const between = await api('GET', `/records/opportunities?${qs({ filter_field: 'amount', filter_operator: 'between', filter_value: '1000,5000', limit: 100 })}`);
    expect(between.status, JSON.stringify(between.body)).toBe(200);
    const inRange = opps
      .filter((o) => o.amount !== null && o.amount >= 1000 && o.amount <= 5000)
      .map((o) => o.id)
      .sort();
    expect(inRange.length).toBeGreaterThan(0);
    expect(between.body.data.map((x: Rec) => x.id).sort()).toEqual(inRange);
    const dates = await api('GET', `/records/opportunities?${qs({ filter_field: 'close_date', filter_operator: 'between', filter_value: '2025-02-01,2025-05-31', limit: 100 })}`);
    expect(dates.body.data.map((x: Rec) => x.id).sort()).toEqual(
      opps
        .filter((o) => o.close_date !== null && o.close_date >= '2025-02-01' && o.close_date <= '2025-05-31')
        .map((o) => o.id)
        .sort(),
    );
    const starts = await api('GET', `/records/contacts?${qs({ filter_field: 'last_name', filter_operator: 'starts_with', filter_value: 'MAR', limit: 100 })}`);
    expect(starts.body.total).toBe(contacts.filter((c) => c.last_name?.toLowerCase().startsWith('mar')).length);
  });

  it('filters with a JSON FilterGroup in ?filters=, combined with filter_field by AND', async () => {
    const group = {
      operator: 'or',
      conditions: [
        { field: 'tags', operator: 'contains', value: 'vip' },
        {
          operator: 'and',
          conditions: [
            { field: 'status', operator: 'eq', value: 'customer' },
            { field: 'email', operator: 'is_not_null' },
          ],
        },
      ],
    };
    const match = (c: Rec) => c.tags?.includes('vip') || (c.status === 'customer' && c.email !== null);
    const r = await api('GET', `/records/contacts?${qs({ filters: JSON.stringify(group), limit: 100 })}`);
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(r.body.data.map((x: Rec) => x.id).sort()).toEqual(
      contacts
        .filter(match)
        .map((c) => c.id)
        .sort(),
    );

    const both = await api('GET', `/records/contacts?${qs({ filters: JSON.stringify(group), filter_field: 'last_name', filter_operator: 'neq', filter_value: 'Martin', limit: 100 })}`);
    expect(both.status).toBe(200);
    expect(both.body.data.map((x: Rec) => x.id).sort()).toEqual(
      contacts
        .filter((c) => match(c) && c.last_name !== 'Martin')
        .map((c) => c.id)
        .sort(),
    );
  });

  it('projects fields (id always included)', async () => {
    const r = await api('GET', `/records/contacts?${qs({ fields: 'first_name,email', limit: 5 })}`);
    expect(r.status).toBe(200);
    expect(r.body.data).toHaveLength(5);
    for (const row of r.body.data) {
      expect(Object.keys(row).sort()).toEqual(['email', 'first_name', 'id']);
      const src = contacts.find((c) => c.id === row.id)!;
      expect(row).toEqual({ id: src.id, first_name: src.first_name, email: src.email });
    }
  });

  it('limit bounds the page; total counts everything that matches', async () => {
    const r = await api('GET', `/records/contacts?${qs({ limit: 3 })}`);
    expect(r.body.data).toHaveLength(3);
    expect(r.body.total).toBe(contacts.length);
    const all = await api('GET', `/records/contacts?${qs({ limit: 100 })}`);
    expect(all.body.data).toHaveLength(contacts.length);
    expect(all.body.nextCursor).toBeNull();
    const noTotal = await api('GET', `/records/contacts?${qs({ limit: 3, include_total: 'false' })}`);
    expect(noTotal.body.total).toBeNull();
    expect(noTotal.body.data).toHaveLength(3);
  });

  for (const dir of ['asc', 'desc'] as const) {
    it(`pages through every contact sorted by a nullable text field (${dir}), no duplicates or gaps`, async () => {
      const { rows, totals, pages } = await pageAll(api, '/records/contacts', { sort_by: 'last_name', sort_dir: dir, limit: 4 });
      expect(pages).toBe(Math.ceil(contacts.length / 4));
      expect(new Set(totals)).toEqual(new Set([contacts.length]));
      const ids = rows.map((r) => r.id);
      expect(new Set(ids).size).toBe(ids.length);
      expect([...ids].sort()).toEqual(contacts.map((c) => c.id).sort());
      expect(rows.map((r) => r.last_name)).toEqual(
        sortedValues(
          contacts.map((c) => c.last_name),
          dir,
        ),
      );
    });

    it(`pages a filtered listing sorted by a nullable number (${dir})`, async () => {
      const filters = JSON.stringify({ operator: 'and', conditions: [{ field: 'name', operator: 'starts_with', value: 'deal' }] });
      const { rows, totals } = await pageAll(api, '/records/opportunities', { sort_by: 'amount', sort_dir: dir, limit: 2, filters });
      expect(new Set(totals)).toEqual(new Set([opps.length]));
      const ids = rows.map((r) => r.id);
      expect(new Set(ids).size).toBe(opps.length);
      expect(rows.map((r) => r.amount)).toEqual(
        sortedValues(
          opps.map((o) => o.amount),
          dir,
        ),
      );
    });

    it(`pages sorted by a nullable date, the page size dividing the count exactly (${dir})`, async () => {
      const { rows } = await pageAll(api, '/records/opportunities', { sort_by: 'close_date', sort_dir: dir, limit: 13 });
      expect(rows).toHaveLength(opps.length);
      expect(rows.map((r) => r.close_date)).toEqual(
        sortedValues(
          opps.map((o) => o.close_date),
          dir,
        ),
      );
    });
  }

  it('pages with the default sort (created_at desc) across records created in the same millisecond', async () => {
    const { rows } = await pageAll(api, '/records/contacts', { limit: 6 });
    const ids = rows.map((r) => r.id);
    expect(new Set(ids).size).toBe(contacts.length);
    expect(rows.map((r) => r.created_at)).toEqual(
      sortedValues(
        contacts.map((c) => c.created_at),
        'desc',
      ),
    );
  });
});

describe('records: a first page sorted by a field with no empty values, or only empty ones', () => {
  let t: TestApp;
  let api: ReturnType<typeof client>;
  beforeAll(async () => {
    t = await testApp();
    api = client(t);
  });
  afterAll(() => t.close());

  it('lists every record in both directions, asked twice (a first page may be compiled once and kept)', async () => {
    for (const last_name of ['Young', 'Abbott', 'Moreau']) expect((await api('POST', '/records/contacts', { first_name: 'A', last_name })).status).toBe(201);
    for (const first_name of ['B', 'C']) expect((await api('POST', '/records/contacts', { first_name })).status).toBe(201);
    for (let round = 0; round < 2; round++) {
      for (const dir of ['asc', 'desc'] as const) {
        // Indexed fields (a light listing): last_name three values and two empty; status (default
        // 'lead') no empty value; owner empty everywhere.
        const byLast = await api('GET', `/records/contacts?sort_by=last_name&sort_dir=${dir}&limit=10`);
        expect(byLast.body.data.map((r: Rec) => r.last_name)).toEqual(sortedValues(['Young', 'Abbott', 'Moreau', null, null], dir));
        const byStatus = await api('GET', `/records/contacts?sort_by=status&sort_dir=${dir}&limit=10`);
        expect(byStatus.body.data.map((r: Rec) => r.status)).toEqual(['lead', 'lead', 'lead', 'lead', 'lead']);
        expect(byStatus.body.total).toBe(5);
        const byOwner = await api('GET', `/records/contacts?sort_by=owner&sort_dir=${dir}&limit=10`);
        expect(byOwner.body.data).toHaveLength(5);
        expect(byOwner.body.total).toBe(5);
        const short = await api('GET', `/records/contacts?sort_by=status&sort_dir=${dir}&limit=2&include_total=false`);
        expect(short.body.data).toHaveLength(2);
        expect(short.body.nextCursor).not.toBeNull();
      }
    }
  });
});

describe('records: get, create, update, delete', () => {
  let t: TestApp;
  let api: ReturnType<typeof client>;
  beforeAll(async () => {
    t = await testApp();
    api = client(t);
  });
  afterAll(() => t.close());

  it('creates with defaults and returns 201 with the stored record', async () => {
    const c = await api('POST', '/records/contacts', { first_name: 'Ada', last_name: 'Lovelace', email: ' ADA@Example.com ' });
    expect(c.status).toBe(201);
    expect(c.body.data).toMatchObject({ first_name: 'Ada', last_name: 'Lovelace', email: 'ada@example.com', status: 'lead', do_not_contact: false, created_by: t.a.admin.id });
    expect(c.body.data.id).toEqual(expect.any(String));
    expect(Date.parse(c.body.data.created_at)).not.toBeNaN();
    const o = await api('POST', '/records/opportunities', { name: 'Big deal', amount: '1234.5' });
    expect(o.status).toBe(201);
    expect(o.body.data).toMatchObject({ name: 'Big deal', amount: 1234.5, status: 'open', priority: 'medium', close_date: null });
    // An explicit value wins over the default.
    const q = await api('POST', '/records/contacts', { first_name: 'Q', status: 'qualified' });
    expect(q.body.data.status).toBe('qualified');
    const g = await api('GET', `/records/contacts/${c.body.data.id}`);
    expect(g.status).toBe(200);
    expect(g.body.data).toMatchObject(c.body.data);
  });

  it('PUT and PATCH update the given fields only; null clears a field', async () => {
    const c = (await api('POST', '/records/contacts', { first_name: 'Grace', last_name: 'Hopper', job_title: 'Admiral', city: 'Arlington' })).body.data;
    const put = await api('PUT', `/records/contacts/${c.id}`, { job_title: 'Rear Admiral', status: 'customer' });
    expect(put.status).toBe(200);
    expect(put.body.data).toMatchObject({ id: c.id, first_name: 'Grace', last_name: 'Hopper', job_title: 'Rear Admiral', status: 'customer', city: 'Arlington' });
    expect(put.body.data.updated_at >= c.updated_at).toBe(true);
    expect(put.body.data.created_at).toBe(c.created_at);
    const patch = await api('PATCH', `/records/contacts/${c.id}`, { city: null, tags: ['vip'] });
    expect(patch.status).toBe(200);
    expect(patch.body.data).toMatchObject({ job_title: 'Rear Admiral', status: 'customer', city: null, tags: ['vip'] });
    const g = await api('GET', `/records/contacts/${c.id}`);
    expect(g.body.data).toMatchObject({ job_title: 'Rear Admiral', city: null, tags: ['vip'] });
    // An 'id' in the body is ignored, not a way to move the record.
    const withId = await api('PATCH', `/records/contacts/${c.id}`, { id: 'other', last_name: 'H.' });
    expect(withId.status).toBe(200);
    expect(withId.body.data.id).toBe(c.id);
  });

  it('DELETE one: 200, then 404 on read and on a second delete', async () => {
    const c = (await api('POST', '/records/contacts', { first_name: 'Temp' })).body.data;
    const d = await api('DELETE', `/records/contacts/${c.id}`);
    expect(d.status).toBe(200);
    expect(d.body.data).toEqual({ id: c.id, deleted: true });
    expect((await api('GET', `/records/contacts/${c.id}`)).status).toBe(404);
    expect((await api('DELETE', `/records/contacts/${c.id}`)).status).toBe(404);
  });

  it('DELETE batch: {ids} -> {deleted, not_found}; also ?ids=', async () => {
    const made = (await api('POST', '/records/companies/batch/create', { records: [{ name: 'A' }, { name: 'B' }, { name: 'C' }, { name: 'D' }] })).body.data as Rec[];
    const before = (await api('GET', '/records/companies')).body.total;
    const d = await api('DELETE', '/records/companies', { ids: [made[0]!.id, made[1]!.id, 'no-such-id', made[0]!.id] });
    expect(d.status).toBe(200);
    expect(d.body.data.deleted.sort()).toEqual([made[0]!.id, made[1]!.id].sort());
    expect(d.body.data.not_found).toEqual(['no-such-id']);
    expect((await api('GET', '/records/companies')).body.total).toBe(before - 2);
    const q = await api('DELETE', `/records/companies?ids=${made[2]!.id},${made[3]!.id}`);
    expect(q.status).toBe(200);
    expect(q.body.data).toEqual({ deleted: [made[2]!.id, made[3]!.id], not_found: [] });
    expect((await api('GET', '/records/companies')).body.total).toBe(before - 4);
  });

  it('deleting a record empties the relation fields that pointed at it', async () => {
    const co = (await api('POST', '/records/companies', { name: 'Gone Inc' })).body.data;
    const c = (await api('POST', '/records/contacts', { first_name: 'Left', company: co.id })).body.data;
    expect(c.company).toBe(co.id);
    expect((await api('DELETE', `/records/companies/${co.id}`)).status).toBe(200);
    expect((await api('GET', `/records/contacts/${c.id}`)).body.data.company).toBeNull();
  });
});

describe('records: enriched get and associations', () => {
  let t: TestApp;
  let api: ReturnType<typeof client>;
  let acme: Rec, globex: Rec, ann: Rec, bob: Rec, deal: Rec, deal2: Rec;

  beforeAll(async () => {
    t = await testApp();
    api = client(t);
    acme = (await api('POST', '/records/companies', { name: 'Acme', owner: t.a.member.id })).body.data;
    globex = (await api('POST', '/records/companies', { name: 'Globex' })).body.data;
    ann = (await api('POST', '/records/contacts', { first_name: 'Ann', last_name: 'Lee', company: acme.id, owner: t.a.admin.id })).body.data;
    bob = (await api('POST', '/records/contacts', { first_name: 'Bob', company: acme.id })).body.data;
    deal = (await api('POST', '/records/opportunities', { name: 'Acme renewal', company: acme.id, contact: ann.id, amount: 5000 })).body.data;
    deal2 = (await api('POST', '/records/opportunities', { name: 'Side deal' })).body.data;
    for (const r of [acme, globex, ann, bob, deal, deal2]) expect(r?.id).toEqual(expect.any(String));
  });
  afterAll(() => t.close());

  it('a contact: its company and owner through relation fields, with names', async () => {
    const g = await api('GET', `/records/contacts/${ann.id}`);
    expect(g.status).toBe(200);
    const a = g.body.data.associations;
    expect(a.companies).toEqual({ total: 1, records: [{ id: acme.id, name: 'Acme', via: 'company' }] });
    expect(a.users).toEqual({ total: 1, records: [{ id: t.a.admin.id, name: t.a.admin.name, via: 'owner' }] });
    expect(a.opportunities).toEqual({ total: 1, records: [{ id: deal.id, name: 'Acme renewal', via: 'contact' }] });
  });

  it('a company: the contacts and opportunities that point at it (reverse relations)', async () => {
    const g = await api('GET', `/records/companies/${acme.id}`);
    const a = g.body.data.associations;
    expect(a.contacts.total).toBe(2);
    expect(a.contacts.records).toEqual(
      expect.arrayContaining([
        { id: ann.id, name: 'Ann Lee', via: 'company' },
        { id: bob.id, name: 'Bob', via: 'company' },
      ]),
    );
    expect(a.opportunities).toEqual({ total: 1, records: [{ id: deal.id, name: 'Acme renewal', via: 'company' }] });
    expect(a.users).toEqual({ total: 1, records: [{ id: t.a.member.id, name: t.a.member.name, via: 'owner' }] });
    // A record with no links has empty associations.
    expect((await api('GET', `/records/companies/${globex.id}`)).body.data.associations).toEqual({});
  });

  it('a long list of associated records is previewed (20) with the full total', async () => {
    const big = (await api('POST', '/records/companies', { name: 'Big Co' })).body.data;
    const r = await api('POST', '/records/contacts/batch/create', { records: Array.from({ length: 23 }, (_, i) => ({ first_name: `Emp${i}`, company: big.id })) });
    expect(r.status).toBe(201);
    const g = await api('GET', `/records/companies/${big.id}`);
    expect(g.body.data.associations.contacts.total).toBe(23);
    expect(g.body.data.associations.contacts.records).toHaveLength(20);
    const names = new Set((r.body.data as Rec[]).map((c) => c.first_name));
    for (const x of g.body.data.associations.contacts.records) {
      expect(names.has(x.name)).toBe(true);
      expect(x.via).toBe('company');
    }
  });

  it("filters on a related record's field ('company.name')", async () => {
    const r = await api('GET', `/records/contacts?${qs({ filter_field: 'company.name', filter_operator: 'eq', filter_value: 'Acme', limit: 100 })}`);
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    const list = await api('GET', '/records/contacts?limit=100');
    expect(r.body.data.map((x: Rec) => x.id).sort()).toEqual(
      (list.body.data as Rec[])
        .filter((c) => c.company === acme.id)
        .map((c) => c.id)
        .sort(),
    );
  });

  it('a projected get keeps its associations', async () => {
    const g = await api('GET', `/records/contacts/${ann.id}?fields=first_name`);
    expect(g.status).toBe(200);
    expect(g.body.data.first_name).toBe('Ann');
    expect(g.body.data.last_name).toBeUndefined();
    expect(g.body.data.associations.companies.records[0].id).toBe(acme.id);
  });

  it('PUT association creates an explicit link (idempotent) seen from both sides with names; DELETE removes it', async () => {
    const put = await api('PUT', `/records/contacts/${bob.id}/associations/opportunities/${deal2.id}`);
    expect(put.status).toBe(200);
    expect(put.body.data).toEqual({ object: 'contacts', id: bob.id, to_object: 'opportunities', to_id: deal2.id, created: true });
    const again = await api('PUT', `/records/contacts/${bob.id}/associations/opportunities/${deal2.id}`);
    expect(again.body.data.created).toBe(false);
    await api('PUT', `/records/contacts/${bob.id}/associations/companies/${globex.id}`);

    const bobView = (await api('GET', `/records/contacts/${bob.id}`)).body.data.associations;
    expect(bobView.opportunities).toEqual({ total: 1, records: [{ id: deal2.id, name: 'Side deal', via: 'association' }] });
    expect(bobView.companies.total).toBe(2);
    expect(bobView.companies.records).toEqual(
      expect.arrayContaining([
        { id: acme.id, name: 'Acme', via: 'company' },
        { id: globex.id, name: 'Globex', via: 'association' },
      ]),
    );
    const dealView = (await api('GET', `/records/opportunities/${deal2.id}`)).body.data.associations;
    expect(dealView.contacts).toEqual({ total: 1, records: [{ id: bob.id, name: 'Bob', via: 'association' }] });

    // Removing from the other side works: one link per pair.
    const del = await api('DELETE', `/records/opportunities/${deal2.id}/associations/contacts/${bob.id}`);
    expect(del.status).toBe(200);
    expect(del.body.data.deleted).toBe(true);
    expect((await api('GET', `/records/opportunities/${deal2.id}`)).body.data.associations).toEqual({});
    expect((await api('DELETE', `/records/opportunities/${deal2.id}/associations/contacts/${bob.id}`)).status).toBe(404);
  });

  it('associations to missing records or objects, or to itself, are refused', async () => {
    const missing = await api('PUT', `/records/contacts/${bob.id}/associations/companies/nope`);
    expect(missing.status).toBe(404);
    expect(missing.body.code).toBe('RECORD_NOT_FOUND');
    const badObject = await api('PUT', `/records/contacts/${bob.id}/associations/widgets/${acme.id}`);
    expect(badObject.status).toBe(400);
    expect(badObject.body.code).toBe('INVALID_OBJECT');
    const self = await api('PUT', `/records/contacts/${bob.id}/associations/contacts/${bob.id}`);
    expect(self.status).toBe(400);
    expect(self.body.code).toBe('VALIDATION_ERROR');
  });

  it('deleting a record removes its explicit associations', async () => {
    const x = (await api('POST', '/records/companies', { name: 'Short lived' })).body.data;
    await api('PUT', `/records/contacts/${ann.id}/associations/companies/${x.id}`);
    expect((await api('GET', `/records/contacts/${ann.id}`)).body.data.associations.companies.total).toBe(2);
    await api('DELETE', `/records/companies/${x.id}`);
    expect((await api('GET', `/records/contacts/${ann.id}`)).body.data.associations.companies).toEqual({ total: 1, records: [{ id: acme.id, name: 'Acme', via: 'company' }] });
  });
});

describe('records: POST /records/{object}/search', () => {
  let t: TestApp;
  let api: ReturnType<typeof client>;
  let opps: Rec[];
  beforeAll(async () => {
    t = await testApp();
    api = client(t);
    const stages = ['open', 'qualified', 'proposal', 'negotiation', 'closed_won', 'closed_lost'];
    const r = await api('POST', '/records/opportunities/batch/create', {
      records: Array.from({ length: 30 }, (_, i) => ({
        name: `${i % 2 ? 'Renewal' : 'New business'} ${i}`,
        amount: i % 7 === 0 ? null : 1000 * ((i * 13) % 17),
        status: stages[i % stages.length],
        probability: (i * 10) % 100,
      })),
    });
    expect(r.status).toBe(201);
    opps = r.body.data;
  });
  afterAll(() => t.close());

  const group = {
    operator: 'and',
    conditions: [
      { field: 'status', operator: 'in', value: ['proposal', 'negotiation', 'open'] },
      {
        operator: 'or',
        conditions: [
          { field: 'amount', operator: 'gt', value: 8000 },
          { field: 'amount', operator: 'is_null' },
        ],
      },
      { operator: 'not', conditions: [{ field: 'name', operator: 'contains', value: 'renewal' }] },
    ],
  };
  const match = (o: Rec) => ['proposal', 'negotiation', 'open'].includes(o.status) && (o.amount === null || o.amount > 8000) && !o.name.toLowerCase().includes('renewal');

  it('takes the FilterGroup as the body, or under "filter", with the same answer', async () => {
    const want = opps
      .filter(match)
      .map((o) => o.id)
      .sort();
    expect(want.length).toBeGreaterThan(0);
    expect(want.length).toBeLessThan(opps.length);
    const top = await api('POST', '/records/opportunities/search', { ...group, limit: 100 });
    expect(top.status, JSON.stringify(top.body)).toBe(200);
    expect(top.body.data.map((x: Rec) => x.id).sort()).toEqual(want);
    expect(top.body.total).toBe(want.length);
    const under = await api('POST', '/records/opportunities/search', { filter: group, limit: 100 });
    expect(under.status).toBe(200);
    expect(under.body.data.map((x: Rec) => x.id).sort()).toEqual(want);
    // Both at once is ambiguous.
    expect((await api('POST', '/records/opportunities/search', { ...group, filter: group })).status).toBe(400);
  });

  it('an empty body lists everything; sort, fields and cursor paging in the body', async () => {
    const all = await api('POST', '/records/opportunities/search', {});
    expect(all.status).toBe(200);
    expect(all.body.total).toBe(opps.length);
    const seen: Rec[] = [];
    let cursor: string | undefined;
    for (let i = 0; i < 50; i++) {
      const r = await api('POST', '/records/opportunities/search', {
        operator: 'or',
        conditions: [
          { field: 'probability', operator: 'gte', value: 50 },
          { field: 'status', operator: 'eq', value: 'closed_won' },
        ],
        sort_by: 'amount',
        sort_dir: 'desc',
        limit: 4,
        fields: ['name', 'amount'],
        ...(cursor ? { cursor } : {}),
      });
      expect(r.status, JSON.stringify(r.body)).toBe(200);
      seen.push(...r.body.data);
      for (const row of r.body.data) expect(Object.keys(row).sort()).toEqual(['amount', 'id', 'name']);
      if (!r.body.nextCursor) break;
      cursor = r.body.nextCursor;
    }
    const expected = opps.filter((o) => o.probability >= 50 || o.status === 'closed_won');
    expect(seen.map((r) => r.id).sort()).toEqual(expected.map((o) => o.id).sort());
    expect(seen.map((r) => r.amount)).toEqual(
      sortedValues(
        expected.map((o) => o.amount),
        'desc',
      ),
    );
  });
});

describe('records: batch create / update / upsert', () => {
  let t: TestApp;
  let api: ReturnType<typeof client>;
  beforeAll(async () => {
    t = await testApp();
    api = client(t);
  });
  afterAll(() => t.close());

  const total = async (object: string) => (await api('GET', `/records/${object}?limit=1`)).body.total as number;

  it('batch create: 201 with the records in order; also a bare array', async () => {
    const r = await api('POST', '/records/companies/batch/create', { records: [{ name: 'One' }, { name: 'Two', employees: 5 }] });
    expect(r.status).toBe(201);
    expect(r.body.data.map((x: Rec) => x.name)).toEqual(['One', 'Two']);
    expect(r.body.data[1].employees).toBe(5);
    const bare = await api('POST', '/records/companies/batch/create', [{ name: 'Three' }]);
    expect(bare.status).toBe(201);
    expect(bare.body.data[0].name).toBe('Three');
    expect(await total('companies')).toBe(3);
  });

  it('batch of 100 passes, 101 is refused with 400 and writes nothing', async () => {
    const before = await total('companies');
    const ok = await api('POST', '/records/companies/batch/create', { records: Array.from({ length: 100 }, (_, i) => ({ name: `C${i}` })) });
    expect(ok.status).toBe(201);
    expect(ok.body.data).toHaveLength(100);
    const tooMany = await api('POST', '/records/companies/batch/create', { records: Array.from({ length: 101 }, (_, i) => ({ name: `X${i}` })) });
    expect(tooMany.status).toBe(400);
    expect(tooMany.body).toMatchObject({ error: true, code: 'VALIDATION_ERROR' });
    expect(tooMany.body.message).toMatch(/100/);
    expect(await total('companies')).toBe(before + 100);
    const ids = (ok.body.data as Rec[]).map((r) => ({ id: r.id, city: 'Lyon' }));
    expect((await api('POST', '/records/companies/batch/update', { records: [...ids, { id: ids[0]!.id, city: 'Nice' }] })).status).toBe(400);
    expect((await api('POST', '/records/companies/batch/upsert', { records: Array.from({ length: 101 }, (_, i) => ({ name: `U${i}` })) })).status).toBe(400);
    expect(await total('companies')).toBe(before + 100);
    // Nothing of the refused update was applied.
    const lyon = await api('GET', `/records/companies?${qs({ filter_field: 'city', filter_operator: 'eq', filter_value: 'Lyon' })}`);
    expect(lyon.body.total).toBe(0);
  });

  it('a batch with one bad row writes nothing and names the row', async () => {
    const before = await total('contacts');
    const r = await api('POST', '/records/contacts/batch/create', {
      records: [{ first_name: 'Ok1' }, { first_name: 'Ok2', email: 'ok2@example.com' }, { first_name: 'Bad', email: 'not-an-email' }, { first_name: 'Ok3' }],
    });
    expect(r.status).toBe(400);
    expect(r.body).toMatchObject({ error: true, code: 'VALIDATION_ERROR' });
    expect(r.body.message).toMatch(/Row 2/);
    expect(r.body.message).toMatch(/email/);
    expect(r.body.details.index).toBe(2);
    expect(await total('contacts')).toBe(before);

    // Every failing row is reported, not only the first.
    const two = await api('POST', '/records/contacts/batch/create', { records: [{ first_name: 'A', status: 'nope' }, { first_name: 'B' }, { last_name: 'no first name' }] });
    expect(two.status).toBe(400);
    expect(two.body.details.errors.map((e: { index: number }) => e.index)).toEqual([0, 2]);
    expect(two.body.details.errors[1].code).toBe('MISSING_REQUIRED_FIELD');

    // A failure found while writing (a duplicate inside the batch) rolls back the rows before it.
    const dup = await api('POST', '/records/contacts/batch/create', {
      records: [{ first_name: 'D1', email: 'dup@example.com' }, { first_name: 'D2' }, { first_name: 'D3', email: 'DUP@example.com' }],
    });
    expect(dup.status).toBe(409);
    expect(dup.body.code).toBe('DUPLICATE_RECORD');
    expect(dup.body.message).toMatch(/Row 2/);
    expect(await total('contacts')).toBe(before);

    // So does a relation to a missing record.
    const rel = await api('POST', '/records/contacts/batch/create', { records: [{ first_name: 'R1' }, { first_name: 'R2', company: 'missing-company' }] });
    expect(rel.status).toBe(400);
    expect(rel.body.message).toMatch(/Row 1/);
    expect(await total('contacts')).toBe(before);
  });

  it('batch update: applies every row, or none when one fails', async () => {
    const made = (await api('POST', '/records/contacts/batch/create', { records: [{ first_name: 'U1' }, { first_name: 'U2' }, { first_name: 'U3' }] })).body.data as Rec[];
    const r = await api('POST', '/records/contacts/batch/update', {
      records: [
        { id: made[0]!.id, status: 'customer' },
        { id: made[1]!.id, city: 'Paris', status: 'qualified' },
      ],
    });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(r.body.data.map((x: Rec) => [x.id, x.status, x.city])).toEqual([
      [made[0]!.id, 'customer', null],
      [made[1]!.id, 'qualified', 'Paris'],
    ]);
    const bad = await api('POST', '/records/contacts/batch/update', {
      records: [
        { id: made[2]!.id, status: 'churned' },
        { id: 'missing', status: 'churned' },
      ],
    });
    expect(bad.status).toBe(404);
    expect(bad.body.code).toBe('RECORD_NOT_FOUND');
    expect(bad.body.message).toMatch(/Row 1/);
    expect((await api('GET', `/records/contacts/${made[2]!.id}`)).body.data.status).toBe('lead');
    const noId = await api('POST', '/records/contacts/batch/update', { records: [{ status: 'churned' }] });
    expect(noId.status).toBe(400);
  });

  it('batch upsert by id: existing ids update, rows without id create, unknown ids fail', async () => {
    const existing = (await api('POST', '/records/companies', { name: 'Upsert Co', city: 'Berlin' })).body.data;
    const before = await total('companies');
    const r = await api('POST', '/records/companies/batch/upsert', { records: [{ id: existing.id, city: 'Munich' }, { name: 'Fresh Co' }] });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(r.body.results).toEqual([
      { index: 0, id: existing.id, action: 'updated' },
      { index: 1, id: expect.any(String), action: 'created' },
    ]);
    expect(r.body.data[0]).toMatchObject({ id: existing.id, name: 'Upsert Co', city: 'Munich' });
    expect(r.body.data[1]).toMatchObject({ id: r.body.results[1].id, name: 'Fresh Co' });
    expect(await total('companies')).toBe(before + 1);
    const bad = await api('POST', '/records/companies/batch/upsert', { records: [{ name: 'Never' }, { id: 'nope', name: 'X' }] });
    expect(bad.status).toBe(404);
    expect(bad.body.message).toMatch(/Row 1/);
    expect(await total('companies')).toBe(before + 1);
  });

  it('batch upsert by a unique field (email, case-insensitive)', async () => {
    const existing = (await api('POST', '/records/contacts', { first_name: 'Old', email: 'keep@example.com' })).body.data;
    const before = await total('contacts');
    const r = await api('POST', '/records/contacts/batch/upsert', {
      key: 'email',
      records: [
        { email: 'KEEP@example.com', first_name: 'Renamed' },
        { email: 'new@example.com', first_name: 'New' },
      ],
    });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(r.body.results.map((x: { action: string }) => x.action)).toEqual(['updated', 'created']);
    expect(r.body.results[0].id).toBe(existing.id);
    expect(r.body.data[0]).toMatchObject({ id: existing.id, first_name: 'Renamed', email: 'keep@example.com' });
    expect(await total('contacts')).toBe(before + 1);
    // The key can also come as ?key=.
    const q = await api('POST', '/records/contacts/batch/upsert?key=email', { records: [{ email: 'new@example.com', city: 'Oslo' }] });
    expect(q.body.results[0].action).toBe('updated');
    expect(q.body.data[0].city).toBe('Oslo');
    // The key must be unique; every row must carry it.
    const notUnique = await api('POST', '/records/contacts/batch/upsert', { key: 'last_name', records: [{ last_name: 'X', first_name: 'Y' }] });
    expect(notUnique.status).toBe(400);
    expect(notUnique.body.message).toMatch(/email/);
    const missingKey = await api('POST', '/records/contacts/batch/upsert', { key: 'email', records: [{ email: 'a@example.com', first_name: 'A' }, { first_name: 'no key' }] });
    expect(missingKey.status).toBe(400);
    expect(missingKey.body.code).toBe('MISSING_REQUIRED_FIELD');
    expect(await total('contacts')).toBe(before + 1);
  });
});

describe('users, schema and health', () => {
  let t: TestApp;
  let api: ReturnType<typeof client>;
  beforeAll(async () => {
    t = await testApp();
    api = client(t);
  });
  afterAll(() => t.close());

  it('GET /me describes the token user and workspace', async () => {
    const r = await api('GET', '/me');
    expect(r.status).toBe(200);
    expect(r.body.data).toMatchObject({ id: t.a.admin.id, email: t.a.admin.email, name: t.a.admin.name, role: 'admin', workspace: t.a.workspace.name });
    const m = await client(t, t.a.memberToken)('GET', '/me');
    expect(m.body.data).toMatchObject({ id: t.a.member.id, role: 'member' });
  });

  it('GET /users lists the workspace users', async () => {
    const r = await api('GET', '/users');
    expect(r.status).toBe(200);
    expect(r.body.total).toBe(2);
    expect(r.body.data.map((u: { id: string }) => u.id).sort()).toEqual([t.a.admin.id, t.a.member.id].sort());
    expect(r.body.data[0]).toEqual(expect.objectContaining({ email: expect.any(String), name: expect.any(String), role: expect.any(String) }));
  });

  it('GET /schema lists the system objects with their fields', async () => {
    const r = await api('GET', '/schema');
    expect(r.status).toBe(200);
    const names = r.body.data.map((o: { name: string }) => o.name);
    expect(names).toEqual(expect.arrayContaining(['contacts', 'companies', 'opportunities']));
    const contacts = r.body.data.find((o: { name: string }) => o.name === 'contacts');
    expect(contacts.fields.map((f: { name: string }) => f.name)).toEqual(expect.arrayContaining(['id', 'first_name', 'last_name', 'email', 'phone', 'status', 'company', 'owner', 'created_at']));
  });

  it('GET /schema/{object} gives types, select options, relation targets and defaults', async () => {
    const r = await api('GET', '/schema/opportunities');
    expect(r.status).toBe(200);
    const byName = Object.fromEntries(r.body.data.fields.map((f: { name: string }) => [f.name, f]));
    expect(byName.amount.type).toBe('CURRENCY');
    expect(byName.probability.type).toBe('PERCENTAGE');
    expect(byName.close_date.type).toBe('DATE');
    expect(byName.status.type).toBe('SELECT');
    expect(byName.status.options.map((o: { value: string }) => o.value)).toEqual(expect.arrayContaining(['open', 'closed_won', 'closed_lost']));
    expect(byName.status.default).toBe('open');
    expect(byName.company).toMatchObject({ type: 'RELATION', target: 'companies' });
    expect(byName.name.required).toBe(true);
    const c = await api('GET', '/schema/contacts');
    const email = c.body.data.fields.find((f: { name: string }) => f.name === 'email');
    expect(email).toMatchObject({ type: 'EMAIL', unique: true });
  });

  it('GET /health answers without a token', async () => {
    const r = await call(t.app, null, 'GET', '/health');
    expect(r.status).toBe(200);
    expect(r.body.status).toBe('ok');
  });
});
