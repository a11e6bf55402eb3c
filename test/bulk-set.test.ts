import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bulkOperation } from '../src/services/bulk.js';
import { withRollback } from '../src/services/dry-run.js';
import { createRecords, updateRecords } from '../src/services/records.js';
import { call, indexedDocs, makeWorkspace, matchKeys, sqlAll, type TestApp, type TestWorkspace, testApp } from './helpers.js';
import { dbDigest } from './mcp-helpers.js';

/**
 * Bulk updates written set-based (issue 16): what they leave behind (records, search documents,
 * match keys, stage history, timeline) is what the same values written record by record leave,
 * the index finds the new values and no longer the old, one failure leaves nothing, and a dry run
 * answers exactly what the update then does while writing nothing.
 */

let t: TestApp;
/** Two workspaces holding the same data: `a` changes through POST /bulk, `b` record by record. */
let a: TestWorkspace;
let b: TestWorkspace;
const label = new Map<string, string>();
const ids: Record<'a' | 'b', Record<string, string>> = { a: {}, b: {} };

const bulk = (body: unknown, w = a) => call(t.app, w.adminToken, 'POST', '/api/v1/bulk', body);
const api = (method: string, url: string, w = a) => call(t.app, w.adminToken, method, `/api/v1${url}`);
/** Ids in a text replaced by the names they were given, so two workspaces' rows compare. */
const named = (s: string) => s.replace(/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/g, (id) => label.get(id) ?? id).replace(/\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z/g, 'a time');

async function seed(w: TestWorkspace, side: 'a' | 'b') {
  const companies = await createRecords(w.ctx, 'companies', [
    { name: 'Acme', domain: 'acme.test' },
    { name: 'Globex', domain: 'globex.test' },
  ]);
  const [acme, globex] = companies.map((c) => c.id);
  const people = await createRecords(w.ctx, 'contacts', [
    { first_name: 'Ann', last_name: 'Archer', email: 'ann@acme.test', job_title: 'Clerk', city: 'Paris', company: acme },
    { first_name: 'Ben', last_name: 'Baker', email: 'ben@acme.test', job_title: 'Clerk', city: 'Paris', company: acme },
    { first_name: 'Cat', last_name: 'Cooper', email: 'cat@globex.test', job_title: 'Welder', city: 'Berlin', company: globex },
    { first_name: 'Dan', last_name: 'Drake', email: 'dan@globex.test', job_title: 'Buyer', city: 'Rome' },
  ]);
  const deals = await createRecords(w.ctx, 'opportunities', [
    { name: 'Deal 1', amount: 1000, company: acme },
    { name: 'Deal 2', amount: 2000, company: globex },
  ]);
  const tasks = await createRecords(w.ctx, 'tasks', [{ title: 'Call Ann' }, { title: 'Call Ben', status: 'completed' }]);
  const all = { Acme: acme!, Globex: globex!, Ann: people[0]!.id, Ben: people[1]!.id, Cat: people[2]!.id, Dan: people[3]!.id };
  Object.assign(all, { 'Deal 1': deals[0]!.id, 'Deal 2': deals[1]!.id, 'Call Ann': tasks[0]!.id, 'Call Ben': tasks[1]!.id });
  for (const [k, v] of Object.entries(all)) {
    ids[side][k] = v;
    label.set(v, k);
  }
}

/** Everything an update derives, of one workspace, with ids as names and times dropped. */
async function derived(w: TestWorkspace) {
  const ws = w.workspace.id;
  const docs = (await indexedDocs(t.db, ws)).map((d) => named(JSON.stringify([d.record_id, d.name, d.body, d.exact]))).sort();
  const keys = (await matchKeys(w.ctx.db, ws)).map((k) => named(JSON.stringify([k.record_id, k.kind, k.key]))).sort();
  const activity = (await sqlAll(w.ctx.db, sql`SELECT object, record_id, action, payload, via FROM activity WHERE workspace_id = ${ws} AND action <> 'created' AND action <> 'related_created'`))
    .map((e) => named(JSON.stringify([e.object, e.record_id, e.action, e.payload === null ? null : JSON.parse(e.payload)])))
    .sort();
  const stages = (await sqlAll(w.ctx.db, sql`SELECT record_id, step_key, left_at FROM stage_history WHERE workspace_id = ${ws}`))
    .map((h) => named(JSON.stringify([h.record_id, h.step_key, h.left_at === null])))
    .sort();
  const records: string[] = [];
  for (const object of ['contacts', 'companies', 'opportunities', 'tasks']) {
    const page = (await api('GET', `/records/${object}?limit=100`, w)).body.data as Record<string, unknown>[];
    for (const r of page) {
      const { created_at: _c, updated_at: _u, completed_at, ...rest } = r;
      records.push(named(JSON.stringify({ ...rest, completed: completed_at != null })));
    }
  }
  // The typo-tolerant word list (a bulk rewrite lists only the changed values' words: the rest are listed already).
  const words = (await sqlAll<{ term: string }>(w.ctx.db, sql`SELECT term FROM search_terms WHERE workspace_id = ${ws}`)).map((x) => x.term).sort();
  return { docs, keys, activity, stages, words, records: records.sort() };
}

beforeAll(async () => {
  t = await testApp();
  a = t.a;
  b = await makeWorkspace(t.db, 'bulkset-b');
  for (const w of [a, b]) {
    label.set(w.admin.id, 'admin');
    label.set(w.member.id, 'member');
    for (const p of await sqlAll(w.ctx.db, sql`SELECT id, name FROM pipelines WHERE workspace_id = ${w.workspace.id}`)) label.set(p.id, p.name);
  }
  await seed(a, 'a');
  await seed(b, 'b');
});

afterAll(async () => {
  await t?.close();
});

describe('bulk update, set-based', () => {
  /** The same update through POST /bulk in `a` and record by record (updateRecords) in `b`. */
  async function both(object: string, names: string[], values: Record<string, unknown> | ((side: 'a' | 'b') => Record<string, unknown>)) {
    const of = (side: 'a' | 'b') => (typeof values === 'function' ? values(side) : values);
    const r = await bulk({ action: 'update', object, ids: names.map((n) => ids.a[n]), values: of('a') });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    for (const n of names) await updateRecords(b.ctx, object, [{ id: ids.b[n]!, values: of('b') }]);
    return r.body.data;
  }

  it('leaves the records, search documents, match keys, stage history and timeline that record-by-record updates leave', async () => {
    expect(await derived(a)).toEqual(await derived(b));
    // A text field in the search document only; a name (document and match keys); a relation
    // (document body, match keys, the companies' timelines); a profile URL (match keys); a select (neither).
    await both('contacts', ['Ann', 'Ben', 'Cat', 'Dan'], { job_title: 'Procurement Lead' });
    await both('contacts', ['Ann', 'Cat'], { last_name: 'Newname' });
    await both('contacts', ['Ann', 'Dan'], (side) => ({ company: ids[side].Globex }));
    await both('contacts', ['Ben', 'Cat', 'Dan'], { linkedin_url: 'https://www.linkedin.com/in/shared' });
    await both('contacts', ['Ann', 'Ben'], { source: 'event' });
    // Timeline entries built in SQL: several fields, some already as asked (Ann and Ben are in
    // Paris), text that JSON escapes, a field cleared, a number and a date.
    await both('contacts', ['Ann', 'Ben', 'Dan'], { city: 'Paris', job_title: 'Lead "QA" \\ Zoë\n' });
    await both('contacts', ['Ann', 'Dan'], { job_title: null, last_contacted_at: '2026-05-01T10:00:00.000Z' });
    await both('opportunities', ['Deal 1', 'Deal 2'], { probability: 35.5, close_date: '2027-01-15' });
    await both('opportunities', ['Deal 1', 'Deal 2'], { probability: 40 });
    // Stored otherwise than shown (a boolean's 0/1, a multi-select's JSON, a currency's minor units): entries made in JavaScript.
    await both('contacts', ['Ann', 'Ben'], { do_not_contact: true, tags: ['vip', 'event'] });
    await both('opportunities', ['Deal 1'], { amount: 1500.5 });
    // A company renamed: its contacts' documents hold the new name.
    await both('companies', ['Acme', 'Globex'], { name: 'Initech' });
    // Pipeline moves (step defaults, stage history, the company's timeline) and task completion stamps.
    await both('opportunities', ['Deal 1', 'Deal 2'], { status: 'proposal' });
    await both('tasks', ['Call Ann', 'Call Ben'], { status: 'completed' });
    await both('tasks', ['Call Ann', 'Call Ben'], { status: 'open' });
    const got = await derived(a);
    const want = await derived(b);
    expect(got).toEqual(want);
    expect(got.activity.filter((e) => e.includes('"updated"')).length).toBeGreaterThan(10);
  });

  it("a new value's words join the word list: typo-tolerant search finds them", async () => {
    const made = (await createRecords(a.ctx, 'contacts', [{ first_name: 'Wordy' }, { first_name: 'Wordier', job_title: 'Typist' }])).map((m) => m.id);
    const r = await bulk({ action: 'update', object: 'contacts', ids: made, values: { job_title: 'Xylographer', city: 'Quixotica' } });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    const words = (await sqlAll<{ term: string }>(a.ctx.db, sql`SELECT term FROM search_terms WHERE workspace_id = ${a.workspace.id} AND term IN ('xylographer', 'quixotica')`))
      .map((x) => x.term)
      .sort();
    expect(words).toEqual(['quixotica', 'xylographer']);
    for (const q of ['Xylogrpher', 'Quixotika']) {
      const found = ((await api('GET', `/search?q=${q}`)).body.data as { id: string; match: string }[])
        .filter((h) => h.match === 'fuzzy')
        .map((h) => h.id)
        .sort();
      expect(found, q).toEqual([...made].sort());
    }
    for (const id of made) expect((await api('DELETE', `/records/contacts/${id}`)).status).toBe(200);
  });

  it('the index finds the new value and no longer the old; match keys follow the new email', async () => {
    const before = (await api('GET', '/search?q=Welder')).body.data as { id: string }[];
    expect(before).toEqual([]);
    await bulk({ action: 'update', object: 'contacts', ids: [ids.a.Ann, ids.a.Ben], values: { job_title: 'Glassblower' } });
    const found = ((await api('GET', '/search?q=Glassblower')).body.data as { id: string }[]).map((h) => h.id).sort();
    expect(found).toEqual([ids.a.Ann, ids.a.Ben].sort());
    expect((await api('GET', '/search?q=Procurement')).body.data.map((h: { id: string }) => h.id)).not.toContain(ids.a.Ann);

    await bulk({ action: 'update', object: 'contacts', ids: [ids.a.Dan], values: { email: 'daniel@newmail.test' } });
    const keys = (await matchKeys(a.ctx.db, a.workspace.id)).filter((k) => k.record_id === ids.a.Dan && k.kind === 'email');
    expect(keys.map((k) => k.key)).toEqual(['daniel@newmail.test']);
    expect(((await api('GET', '/search?q=daniel@newmail.test')).body.data as { id: string }[]).map((h) => h.id)).toEqual([ids.a.Dan]);
  });

  it('one timeline entry per record that changes, none for those already as asked', async () => {
    const count = async () => (await sqlAll(a.ctx.db, sql`SELECT record_id FROM activity WHERE workspace_id = ${a.workspace.id} AND action = 'updated' ORDER BY id`)).map((r) => r.record_id);
    const was = (await count()).length;
    await bulk({ action: 'update', object: 'contacts', ids: [ids.a.Ann, ids.a.Ben, ids.a.Cat], values: { city: 'Paris' } });
    const added = (await count()).slice(was);
    // Ann and Ben were in Paris already.
    expect(added).toEqual([ids.a.Cat]);
    expect((await api('GET', `/activity/contacts/${ids.a.Cat}`)).body.data[0]).toMatchObject({ action: 'updated' });
  });

  it('a value that fails on one record leaves every record and everything derived as it was', async () => {
    const before = await dbDigest(t.db);
    // The second record collides with the first on the unique email.
    const dup = await bulk({ action: 'update', object: 'contacts', ids: [ids.a.Ann, ids.a.Ben, ids.a.Cat], values: { email: 'same@x.test', job_title: 'Lost' } });
    expect(dup.status).toBe(409);
    expect(dup.body.code).toBe('DUPLICATE_RECORD');
    expect(dup.body.message).toMatch(/same@x\.test/);
    // Its dry run answers the same refusal.
    const dry = await bulk({ action: 'update', object: 'contacts', ids: [ids.a.Ann, ids.a.Ben], values: { email: 'same@x.test' }, dry_run: true });
    expect(dry.status).toBe(409);
    const rel = await bulk({ action: 'update', object: 'contacts', ids: [ids.a.Ann, ids.a.Ben], values: { company: '00000000-0000-7000-8000-000000000000' } });
    expect(rel.status).toBe(400);
    expect(await dbDigest(t.db)).toBe(before);
  });
});

describe('bulk update dry run', () => {
  it('answers what the update then does, and writes nothing', async () => {
    const filter = { operator: 'and', conditions: [{ field: 'city', operator: 'in', value: ['Paris', 'Rome'] }] };
    const cases: [string, unknown, Record<string, unknown>][] = [
      ['contacts', filter, { job_title: 'Analyst', city: 'Rome' }],
      ['opportunities', { operator: 'and', conditions: [{ field: 'amount', operator: 'gte', value: 0 }] }, { status: 'negotiation' }],
      ['tasks', { operator: 'and', conditions: [{ field: 'title', operator: 'starts_with', value: 'Call' }] }, { status: 'completed' }],
    ];
    for (const [object, f, values] of cases) {
      const before = await dbDigest(t.db);
      const dry = (await bulk({ action: 'update', object, filter: f, values, dry_run: true })).body.data;
      expect(await dbDigest(t.db)).toBe(before);
      expect(dry.would_change).toBeGreaterThan(0);
      const acts = (await sqlAll(a.ctx.db, sql`SELECT id FROM activity WHERE workspace_id = ${a.workspace.id}`)).length;
      const real = (await bulk({ action: 'update', object, filter: f, values })).body.data;
      expect(real).toMatchObject({ matched: dry.matched, updated: dry.matched, dry_run: false });
      const updates = (await sqlAll(a.ctx.db, sql`SELECT record_id, payload FROM activity WHERE workspace_id = ${a.workspace.id} AND action = 'updated' ORDER BY id`)).slice(0);
      const added = updates.slice(updates.length - dry.would_change);
      expect(dry.would_change + dry.unchanged).toBe(dry.matched);
      const actual = added.map((e) => ({ id: e.record_id, changes: JSON.parse(e.payload).changes }));
      // Every record reported, same diffs (completion stamps are times: compared by field).
      const shape = (xs: { id: string; changes: Record<string, unknown> }[]) =>
        xs.map((x) => ({ id: x.id, changes: Object.fromEntries(Object.entries(x.changes).map(([k, v]) => [k, k === 'completed_at' ? 'time' : v])) })).sort((p, q) => p.id.localeCompare(q.id));
      expect(shape(dry.samples)).toEqual(shape(actual));
      const byField: Record<string, number> = {};
      for (const u of actual) for (const k of Object.keys(u.changes)) byField[k] = (byField[k] ?? 0) + 1;
      expect(dry.changes_by_field).toEqual(byField);
      expect((await sqlAll(a.ctx.db, sql`SELECT id FROM activity WHERE workspace_id = ${a.workspace.id}`)).length).toBeGreaterThan(acts);
    }
  });

  it('inside another dry run (a rolled-back call around it), it answers and leaves nothing', async () => {
    const before = await dbDigest(t.db);
    const out = await withRollback(a.ctx, (dry) => bulkOperation(dry, { action: 'update', object: 'contacts', ids: [ids.a.Ann, ids.a.Cat], values: { job_title: 'Nested' }, dry_run: true }));
    expect(out).toMatchObject({ matched: 2, would_change: 2, dry_run: true });
    expect(await dbDigest(t.db)).toBe(before);
  });
});
