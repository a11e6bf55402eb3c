import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { call, type TestApp, testApp } from './helpers.js';

/** Custom objects and fields, created by admins over REST, behave like the system ones everywhere. */

type Rec = Record<string, any> & { id: string };

let t: TestApp;
const api = (method: string, url: string, body?: unknown, token = t.a.adminToken) => call(t.app, token, method, `/api/v1${url}`, body);
const ids = (rows: Rec[]) => rows.map((r) => r.id).sort();

const PROJECT = {
  name: 'projects',
  label: 'Project',
  label_plural: 'Projects',
  description: 'Client projects',
  display_fields: ['title'],
  fields: [
    { name: 'title', type: 'TEXT', required: true },
    { name: 'code', type: 'TEXT', unique: true },
    { name: 'budget', type: 'CURRENCY', scale: 2, min: 0 },
    { name: 'hours', type: 'FLOAT' },
    { name: 'score', type: 'INTEGER', min: 0, max: 10 },
    { name: 'done_pct', type: 'PERCENTAGE', min: 0, max: 100 },
    { name: 'starts_on', type: 'DATE' },
    { name: 'kickoff_at', type: 'DATETIME' },
    { name: 'stage', type: 'SELECT', options: ['planned', { value: 'running', label: 'In progress' }, 'finished'], default: 'planned' },
    { name: 'labels', type: 'MULTI_SELECT', options: ['internal', 'billable', 'urgent'] },
    { name: 'billable', type: 'BOOLEAN', default: true },
    { name: 'contact_email', type: 'EMAIL' },
    { name: 'site', type: 'URL' },
    { name: 'client', type: 'RELATION', target: 'companies' },
    { name: 'lead', type: 'RELATION', target: 'users' },
  ],
};

let acme: Rec;
let projects: Rec[];

beforeAll(async () => {
  t = await testApp();
  acme = (await api('POST', '/records/companies', { name: 'Acme' })).body.data;
});
afterAll(() => t.close());

describe('custom objects', () => {
  it('an admin creates an object with fields of every kind; GET /schema describes it', async () => {
    const r = await api('POST', '/schema', PROJECT);
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    expect(r.body.data).toMatchObject({ name: 'projects', label: 'Project', label_plural: 'Projects', system: false, display_fields: ['title'] });

    const all = await api('GET', '/schema');
    expect(all.body.data.map((o: { name: string }) => o.name)).toContain('projects');
    const one = await api('GET', '/schema/projects');
    expect(one.status).toBe(200);
    const byName = Object.fromEntries(one.body.data.fields.map((f: { name: string }) => [f.name, f]));
    // Built-in fields come with every object.
    for (const f of ['id', 'created_at', 'updated_at', 'created_by']) expect(byName[f]).toMatchObject({ read_only: true });
    for (const f of PROJECT.fields) expect(byName[f.name]).toMatchObject({ type: f.type, system: false });
    expect(byName.stage.options).toEqual([
      { value: 'planned', label: 'Planned' },
      { value: 'running', label: 'In progress' },
      { value: 'finished', label: 'Finished' },
    ]);
    expect(byName.stage.default).toBe('planned');
    expect(byName.labels.options.map((o: { value: string }) => o.value)).toEqual(['internal', 'billable', 'urgent']);
    expect(byName.title.required).toBe(true);
    expect(byName.code.unique).toBe(true);
    expect(byName.client.target).toBe('companies');
    expect(byName.budget.scale).toBe(2);
    expect(byName.score).toMatchObject({ min: 0, max: 10 });
  });

  it('records: create with defaults and validation by type', async () => {
    const r = await api('POST', '/records/projects/batch/create', {
      records: [
        {
          title: 'Website',
          code: 'P-1',
          budget: 12000.5,
          hours: 10.25,
          score: 7,
          done_pct: 40,
          starts_on: '2025-03-01',
          kickoff_at: '2025-03-01T09:00:00+01:00',
          stage: 'running',
          labels: ['billable', 'internal'],
          contact_email: 'PM@Acme.com',
          site: 'https://acme.example.com',
          client: acme.id,
          lead: t.a.member.id,
        },
        { title: 'App', code: 'P-2', budget: 50000, score: 9, starts_on: '2025-01-15', labels: ['urgent'], client: acme.id },
        { title: 'audit', code: 'P-3', score: 2, stage: 'finished', billable: false },
        { title: 'Migration', budget: 800, starts_on: '2025-06-30', stage: 'running', labels: ['internal'] },
        { title: 'Training' },
      ],
    });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    projects = r.body.data;
    expect(projects[0]).toMatchObject({ budget: 12000.5, contact_email: 'pm@acme.com', kickoff_at: '2025-03-01T08:00:00.000Z', labels: ['internal', 'billable'], billable: true, client: acme.id });
    expect(projects[4]).toMatchObject({ title: 'Training', stage: 'planned', billable: true, budget: null, labels: null });
    expect(projects[2]!.billable).toBe(false);

    const bad: [Record<string, unknown>, RegExp][] = [
      [{ title: 'x', stage: 'cancelled' }, /stage.*planned, running, finished/],
      [{ title: 'x', labels: ['nope'] }, /labels.*internal/],
      [{ title: 'x', score: 11 }, /score.*at most 10/],
      [{ title: 'x', score: 1.5 }, /score.*integer/],
      [{ title: 'x', budget: -1 }, /budget.*at least 0/],
      [{ title: 'x', hours: 'lots' }, /hours.*number/],
      [{ title: 'x', starts_on: '2025-02-30' }, /starts_on/],
      [{ title: 'x', kickoff_at: 'tomorrow' }, /kickoff_at/],
      [{ title: 'x', contact_email: 'nope' }, /^Field 'contact_email' must be a valid email address$/],
      [{ title: 'x', site: 'not a site' }, /site/],
      [{ title: 'x', billable: 'perhaps' }, /billable/],
      [{ title: 'x', client: 'missing' }, /client/],
      [{ title: 'x', lead: 'missing' }, /lead/],
      [{ title: 'x', nonsense: 1 }, /nonsense.*title/],
    ];
    for (const [body, msg] of bad) {
      const e = await api('POST', '/records/projects', body);
      expect(e.status, JSON.stringify(body)).toBe(400);
      expect(e.body.code).toBe('VALIDATION_ERROR');
      expect(e.body.message).toMatch(msg);
    }
    expect((await api('GET', '/records/projects')).body.total).toBe(projects.length);
  });

  it('required and unique are enforced', async () => {
    const missing = await api('POST', '/records/projects', { code: 'P-9' });
    expect(missing.status).toBe(400);
    expect(missing.body.code).toBe('MISSING_REQUIRED_FIELD');
    expect(missing.body.message).toContain('title');
    const dup = await api('POST', '/records/projects', { title: 'Copy', code: 'P-1' });
    expect(dup.status).toBe(409);
    expect(dup.body.code).toBe('DUPLICATE_RECORD');
    expect(dup.body.message).toContain('code');
    const dupUpdate = await api('PATCH', `/records/projects/${projects[1]!.id}`, { code: 'P-3' });
    expect(dupUpdate.status).toBe(409);
    expect((await api('PATCH', `/records/projects/${projects[1]!.id}`, { title: null })).body.code).toBe('MISSING_REQUIRED_FIELD');
    expect((await api('GET', '/records/projects')).body.total).toBe(projects.length);
  });

  it('update, filter, sort, search and page like any object', async () => {
    const u = await api('PUT', `/records/projects/${projects[3]!.id}`, { score: 5, labels: ['internal', 'urgent'] });
    expect(u.status).toBe(200);
    projects[3] = u.body.data;
    expect(projects[3]!.labels).toEqual(['internal', 'urgent']);

    const running = await api('GET', '/records/projects?filter_field=stage&filter_operator=eq&filter_value=running');
    expect(ids(running.body.data)).toEqual(ids(projects.filter((p) => p.stage === 'running')));
    const big = await api('GET', '/records/projects?filter_field=budget&filter_operator=gte&filter_value=800');
    expect(ids(big.body.data)).toEqual(ids(projects.filter((p) => p.budget !== null && p.budget >= 800)));
    const urgent = await api('POST', '/records/projects/search', { operator: 'and', conditions: [{ field: 'labels', operator: 'contains', value: 'urgent' }] });
    expect(ids(urgent.body.data)).toEqual(ids(projects.filter((p) => p.labels?.includes('urgent'))));
    const q = await api('POST', '/records/projects/search', {
      operator: 'or',
      conditions: [
        { field: 'starts_on', operator: 'between', value: ['2025-01-01', '2025-03-31'] },
        {
          operator: 'and',
          conditions: [
            { field: 'billable', operator: 'eq', value: false },
            { field: 'title', operator: 'contains', value: 'AUD' },
          ],
        },
      ],
    });
    expect(ids(q.body.data)).toEqual(
      ids(projects.filter((p) => (p.starts_on !== null && p.starts_on >= '2025-01-01' && p.starts_on <= '2025-03-31') || (p.billable === false && /aud/i.test(p.title)))),
    );
    const byClient = await api('GET', `/records/projects?filter_field=client&filter_operator=eq&filter_value=${acme.id}`);
    expect(ids(byClient.body.data)).toEqual(ids(projects.filter((p) => p.client === acme.id)));

    const sorted = await api('GET', '/records/projects?sort_by=score&sort_dir=desc&fields=title,score');
    const scores = projects.map((p) => p.score as number | null);
    const expected = [...scores.filter((s): s is number => s !== null).sort((a, b) => b - a), ...scores.filter((s) => s === null)];
    expect(sorted.body.data.map((r: Rec) => r.score)).toEqual(expected);
    expect(Object.keys(sorted.body.data[0]).sort()).toEqual(['id', 'score', 'title']);

    const seen: string[] = [];
    let cursor: string | undefined;
    do {
      const page = await api('GET', `/records/projects?sort_by=budget&sort_dir=asc&limit=2${cursor ? `&cursor=${cursor}` : ''}`);
      seen.push(...page.body.data.map((r: Rec) => r.id));
      cursor = page.body.nextCursor ?? undefined;
    } while (cursor);
    expect(seen.length).toBe(projects.length);
    expect(new Set(seen).size).toBe(projects.length);

    // Operators are checked against the custom field's type too.
    const wrongOp = await api('POST', '/records/projects/search', { operator: 'and', conditions: [{ field: 'score', operator: 'starts_with', value: '1' }] });
    expect(wrongOp.status).toBe(400);
    const wrongOption = await api('GET', '/records/projects?filter_field=stage&filter_operator=eq&filter_value=cancelled');
    expect(wrongOption.status).toBe(400);
    expect(wrongOption.body.message).toMatch(/planned/);
  });

  it('full-text search (GET /search) finds custom records and custom text fields', async () => {
    const r = await api('GET', '/search?q=Website');
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(r.body.data).toEqual(expect.arrayContaining([expect.objectContaining({ object: 'projects', id: projects[0]!.id })]));
    const only = await api('GET', '/search?q=Website&objects=projects');
    expect(only.body.data.every((x: { object: string }) => x.object === 'projects')).toBe(true);
  });

  it('relations reach custom objects both ways: enriched gets show them with names', async () => {
    const company = await api('GET', `/records/companies/${acme.id}`);
    const linked = projects.filter((p) => p.client === acme.id);
    expect(company.body.data.associations.projects.total).toBe(linked.length);
    expect(company.body.data.associations.projects.records).toEqual(expect.arrayContaining(linked.map((p) => ({ id: p.id, name: p.title, via: 'client' }))));
    const project = await api('GET', `/records/projects/${projects[0]!.id}`);
    expect(project.body.data.associations.companies).toEqual({ total: 1, records: [{ id: acme.id, name: 'Acme', via: 'client' }] });
    expect(project.body.data.associations.users.records[0]).toEqual({ id: t.a.member.id, name: t.a.member.name, via: 'lead' });
    // A field on a system object may point at the custom object.
    const f = await api('POST', '/schema/opportunities/fields', { name: 'project', type: 'RELATION', target: 'projects' });
    expect(f.status, JSON.stringify(f.body)).toBe(201);
    const opp = await api('POST', '/records/opportunities', { name: 'Phase 2', project: projects[1]!.id });
    expect(opp.status, JSON.stringify(opp.body)).toBe(201);
    const p1 = await api('GET', `/records/projects/${projects[1]!.id}`);
    expect(p1.body.data.associations.opportunities).toEqual({ total: 1, records: [{ id: opp.body.data.id, name: 'Phase 2', via: 'project' }] });
    expect((await api('POST', '/records/opportunities', { name: 'Phase 3', project: acme.id })).status).toBe(400);
    // Explicit associations work with custom objects too.
    expect((await api('PUT', `/records/projects/${projects[4]!.id}/associations/contacts/${(await api('POST', '/records/contacts', { first_name: 'Pat' })).body.data.id}`)).status).toBe(200);
    expect((await api('GET', `/records/projects/${projects[4]!.id}`)).body.data.associations.contacts.records[0]).toMatchObject({ name: 'Pat', via: 'association' });
  });

  it('deleting custom records, one and in batch', async () => {
    const extra = (await api('POST', '/records/projects/batch/create', { records: [{ title: 'Tmp1' }, { title: 'Tmp2' }] })).body.data as Rec[];
    expect((await api('DELETE', `/records/projects/${extra[0]!.id}`)).status).toBe(200);
    const d = await api('DELETE', '/records/projects', { ids: [extra[1]!.id, extra[0]!.id] });
    expect(d.body.data).toEqual({ deleted: [extra[1]!.id], not_found: [extra[0]!.id] });
    expect((await api('GET', '/records/projects')).body.total).toBe(projects.length);
  });

  it('an object may relate to itself; both ends show in enriched gets', async () => {
    const r = await api('POST', '/schema', {
      name: 'teams',
      fields: [
        { name: 'title', type: 'TEXT', required: true },
        { name: 'parent', type: 'RELATION', target: 'teams' },
      ],
    });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    const root = (await api('POST', '/records/teams', { title: 'Sales' })).body.data;
    const child = await api('POST', '/records/teams', { title: 'Sales EMEA', parent: root.id });
    expect(child.status, JSON.stringify(child.body)).toBe(201);
    expect((await api('GET', `/records/teams/${child.body.data.id}`)).body.data.associations.teams).toEqual({
      total: 1,
      records: [{ id: root.id, name: 'Sales', via: 'parent' }],
    });
    expect((await api('GET', `/records/teams/${root.id}`)).body.data.associations.teams).toEqual({
      total: 1,
      records: [{ id: child.body.data.id, name: 'Sales EMEA', via: 'parent' }],
    });
    const kids = await api('GET', `/records/teams?filter_field=parent&filter_operator=eq&filter_value=${root.id}`);
    expect(kids.body.data.map((x: Rec) => x.id)).toEqual([child.body.data.id]);
  });

  it('field names that are SQL keywords work everywhere', async () => {
    const r = await api('POST', '/schema', {
      name: 'keywords',
      fields: [
        { name: 'select', type: 'TEXT', required: true },
        { name: 'order', type: 'INTEGER' },
        { name: 'group', type: 'SELECT', options: ['a', 'b'] },
        { name: 'from', type: 'DATE' },
        { name: 'where', type: 'TEXT', unique: true },
      ],
    });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    const made = await api('POST', '/records/keywords/batch/create', {
      records: [
        { select: 'one', order: 2, group: 'a', from: '2025-01-01', where: 'w1' },
        { select: 'two', order: 1, group: 'b', where: 'w2' },
        { select: 'three', order: 3, group: 'a', from: '2025-03-01' },
      ],
    });
    expect(made.status, JSON.stringify(made.body)).toBe(201);
    const rows = made.body.data as Rec[];
    const sorted = await api('GET', '/records/keywords?sort_by=order&sort_dir=asc&fields=select,order');
    expect(sorted.body.data.map((x: Rec) => x.select)).toEqual(['two', 'one', 'three']);
    const q = await api('POST', '/records/keywords/search', {
      operator: 'and',
      conditions: [
        { field: 'group', operator: 'eq', value: 'a' },
        { field: 'select', operator: 'contains', value: 'O' },
        { field: 'from', operator: 'is_not_null' },
      ],
    });
    expect(ids(q.body.data)).toEqual(ids(rows.filter((x) => x.group === 'a' && /o/i.test(x.select) && x.from !== null)));
    expect((await api('POST', '/records/keywords', { select: 'dup', where: 'w1' })).status).toBe(409);
    const up = await api('POST', '/records/keywords/batch/upsert', { key: 'where', records: [{ where: 'w2', order: 9 }] });
    expect(up.status, JSON.stringify(up.body)).toBe(200);
    expect(up.body.data[0]).toMatchObject({ id: rows[1]!.id, order: 9 });
    const f = await api('POST', '/schema/keywords/fields', { name: 'table', type: 'TEXT', indexed: true });
    expect(f.status, JSON.stringify(f.body)).toBe(201);
    expect((await api('PATCH', `/records/keywords/${rows[0]!.id}`, { table: 't' })).body.data.table).toBe('t');
    expect((await api('DELETE', '/records/keywords', { ids: rows.map((x) => x.id) })).body.data.deleted).toHaveLength(3);
  });

  it('a duplicate object is 409; reserved and malformed names are 400', async () => {
    const dup = await api('POST', '/schema', { name: 'projects', fields: [{ name: 'x', type: 'TEXT' }] });
    expect(dup.status).toBe(409);
    expect(dup.body.code).toBe('DUPLICATE_RECORD');
    const sys = await api('POST', '/schema', { name: 'contacts', fields: [{ name: 'x', type: 'TEXT' }] });
    expect(sys.status).toBe(409);
    for (const name of ['users', 'records', 'schema', 'me']) {
      const r = await api('POST', '/schema', { name, fields: [{ name: 'x', type: 'TEXT' }] });
      expect(r.status, name).toBe(400);
      expect(r.body.message).toMatch(/reserved/);
    }
    for (const name of ['Bad-Name', '1abc', 'has space', '']) {
      const r = await api('POST', '/schema', { name, fields: [{ name: 'x', type: 'TEXT' }] });
      expect(r.status, name).toBe(400);
      expect(r.body.code).toBe('VALIDATION_ERROR');
    }
    for (const field of ['id', 'created_at', 'updated_at', 'created_by', 'seq', 'associations']) {
      const r = await api('POST', '/schema', {
        name: 'things',
        fields: [
          { name: 'title', type: 'TEXT' },
          { name: field, type: 'TEXT' },
        ],
      });
      expect(r.status, field).toBe(400);
      expect(r.body.message).toMatch(/reserved/);
      const f = await api('POST', '/schema/contacts/fields', { name: field, type: 'TEXT' });
      expect(f.status, field).toBeGreaterThanOrEqual(400);
      expect(f.status, field).toBeLessThan(500);
    }
    const bad = [
      { name: 'things', fields: [] },
      {
        name: 'things',
        fields: [
          { name: 'a', type: 'TEXT' },
          { name: 'a', type: 'TEXT' },
        ],
      },
      { name: 'things', fields: [{ name: 's', type: 'SELECT' }] },
      { name: 'things', fields: [{ name: 'r', type: 'RELATION', target: 'nowhere' }] },
      { name: 'things', fields: [{ name: 'n', type: 'NOPE' }] },
      { name: 'things', fields: [{ name: 's', type: 'SELECT', options: ['a'], default: 'b' }] },
      { name: 'things', fields: [{ name: 'b', type: 'BOOLEAN', unique: true }] },
      { name: 'things', display_fields: ['missing'], fields: [{ name: 'a', type: 'TEXT' }] },
    ];
    for (const body of bad) expect((await api('POST', '/schema', body)).status, JSON.stringify(body)).toBe(400);
    expect((await api('GET', '/schema')).body.data.map((o: { name: string }) => o.name)).not.toContain('things');
  });
});

describe('custom fields on system objects', () => {
  it('are listed with their options and usable in writes, filters, sorts and search', async () => {
    const tier = await api('POST', '/schema/contacts/fields', { name: 'tier', type: 'SELECT', options: ['gold', 'silver', 'bronze'] });
    expect(tier.status, JSON.stringify(tier.body)).toBe(201);
    expect(tier.body.data).toMatchObject({ name: 'tier', type: 'SELECT', system: false });
    const score = await api('POST', '/schema/contacts/fields', { name: 'nps', type: 'INTEGER', min: -100, max: 100 });
    expect(score.status).toBe(201);
    const schema = await api('GET', '/schema/contacts');
    const f = schema.body.data.fields.find((x: { name: string }) => x.name === 'tier');
    expect(f.options.map((o: { value: string }) => o.value)).toEqual(['gold', 'silver', 'bronze']);

    const made = (
      await api('POST', '/records/contacts/batch/create', {
        records: [{ first_name: 'G1', tier: 'gold', nps: 50 }, { first_name: 'S1', tier: 'silver', nps: -20 }, { first_name: 'G2', tier: 'gold', nps: 90 }, { first_name: 'N1' }],
      })
    ).body.data as Rec[];
    expect(made).toHaveLength(4);
    const bad = await api('POST', '/records/contacts', { first_name: 'X', tier: 'platinum' });
    expect(bad.status).toBe(400);
    expect(bad.body.message).toMatch(/tier.*gold, silver, bronze/);
    expect((await api('POST', '/records/contacts', { first_name: 'X', nps: 101 })).status).toBe(400);

    const gold = await api('GET', '/records/contacts?filter_field=tier&filter_operator=eq&filter_value=gold');
    expect(ids(gold.body.data)).toEqual(ids(made.filter((c) => c.tier === 'gold')));
    const notGold = await api('POST', '/records/contacts/search', {
      operator: 'and',
      conditions: [
        { field: 'tier', operator: 'neq', value: 'gold' },
        { field: 'first_name', operator: 'in', value: made.map((c) => c.first_name) },
      ],
    });
    expect(ids(notGold.body.data)).toEqual(ids(made.filter((c) => c.tier !== 'gold')));
    const sorted = await api('POST', '/records/contacts/search', { operator: 'and', conditions: [{ field: 'nps', operator: 'is_not_null' }], sort_by: 'nps', sort_dir: 'asc' });
    expect(sorted.body.data.map((c: Rec) => c.nps)).toEqual(
      made
        .map((c) => c.nps)
        .filter((n) => n !== null)
        .sort((a, b) => a - b),
    );
    const upd = await api('PATCH', `/records/contacts/${made[3]!.id}`, { tier: 'bronze' });
    expect(upd.body.data.tier).toBe('bronze');
    // A custom text field on a system object is searchable in full text.
    expect((await api('POST', '/schema/contacts/fields', { name: 'nickname', type: 'TEXT' })).status).toBe(201);
    const nick = (await api('POST', '/records/contacts', { first_name: 'Nick', nickname: 'Quokka' })).body.data;
    const found = await api('GET', '/search?q=Quokka');
    expect(found.body.data.map((x: { id: string }) => x.id)).toEqual([nick.id]);
  });

  it('a required field needs a default once records exist; the default fills existing records', async () => {
    const count = (await api('GET', '/records/contacts?limit=1')).body.total;
    expect(count).toBeGreaterThan(0);
    const noDefault = await api('POST', '/schema/contacts/fields', { name: 'region', type: 'TEXT', required: true });
    expect(noDefault.status).toBe(400);
    expect(noDefault.body.message).toMatch(/default/);
    const withDefault = await api('POST', '/schema/contacts/fields', { name: 'region', type: 'SELECT', options: ['emea', 'amer'], required: true, default: 'emea' });
    expect(withDefault.status, JSON.stringify(withDefault.body)).toBe(201);
    const emea = await api('GET', '/records/contacts?filter_field=region&filter_operator=eq&filter_value=emea&limit=1');
    expect(emea.body.total).toBe(count);
    expect((await api('POST', '/records/contacts', { first_name: 'R' })).body.data.region).toBe('emea');
    expect((await api('POST', '/records/contacts', { first_name: 'R', region: null })).body.code).toBe('MISSING_REQUIRED_FIELD');
  });

  it('a unique custom field; duplicates of an existing field name are 409', async () => {
    const f = await api('POST', '/schema/companies/fields', { name: 'vat_id', type: 'TEXT', unique: true });
    expect(f.status).toBe(201);
    expect((await api('POST', '/records/companies', { name: 'V1', vat_id: 'FR123' })).status).toBe(201);
    const dup = await api('POST', '/records/companies', { name: 'V2', vat_id: 'FR123' });
    expect(dup.status).toBe(409);
    expect(dup.body.message).toContain('vat_id');
    // Upsert by the custom unique field.
    const up = await api('POST', '/records/companies/batch/upsert', { key: 'vat_id', records: [{ vat_id: 'FR123', city: 'Lille' }] });
    expect(up.body.results[0].action).toBe('updated');
    const again = await api('POST', '/schema/companies/fields', { name: 'vat_id', type: 'TEXT' });
    expect(again.status).toBe(409);
    const sysName = await api('POST', '/schema/companies/fields', { name: 'name', type: 'TEXT' });
    expect(sysName.status).toBe(409);
    expect((await api('POST', '/schema/widgets/fields', { name: 'x', type: 'TEXT' })).body.code).toBe('INVALID_OBJECT');
  });

  it('members may use custom fields but not create them', async () => {
    const m = await api('POST', '/records/contacts', { first_name: 'Member made', tier: 'silver' }, t.a.memberToken);
    expect(m.status).toBe(201);
    const denied = await api('POST', '/schema/contacts/fields', { name: 'secret', type: 'TEXT' }, t.a.memberToken);
    expect(denied.status).toBe(403);
    expect(denied.body.code).toBe('PERMISSION_DENIED');
  });
});
