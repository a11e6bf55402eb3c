import { type RawBuilder, sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rebuildDedupeKeys } from '../src/services/dedupe-keys.js';
import { getSchema } from '../src/services/schema.js';
import { call, indexedDocs, makeWorkspace, matchKeys, sqlAll, type TestApp, type TestWorkspace, tableOf as tableOfObject, testApp } from './helpers.js';

/**
 * POST /duplicates through Fastify: detection (clusters with evidence and a score), merge with a
 * dry run (nothing written, the merged record previewed), a real merge that moves every kind of link
 * to the primary, and unmerge as its exact undo (full before/after snapshots of every table involved).
 */

let t: TestApp;
const call_ = (ws: TestWorkspace, method: string, url: string, body?: unknown, token = ws.adminToken) => call(t.app, token, method, `/api/v1${url}`, body);

const tableOf = (ws: TestWorkspace, object: string) => tableOfObject(t.db, ws.workspace.id, object);
/** A query in a workspace's tables (on PostgreSQL, its schema). */
const all = (q: RawBuilder<unknown>, ws: TestWorkspace) => sqlAll(ws.ctx.db, q);
const sortRows = (rows: Record<string, any>[]) => rows.map((r) => JSON.stringify(r)).sort();

/** Everything a merge touches, as stored: record tables, links, notes, timeline, inbox, stages, match keys, search index. */
async function snapshot(ws: TestWorkspace) {
  const w = ws.workspace.id;
  const objects = ['companies', 'contacts', 'opportunities', 'tasks'];
  const records: Record<string, Record<string, any>[]> = {};
  for (const o of objects) records[o] = await all(sql`SELECT * FROM ${sql.table(await tableOf(ws, o))} ORDER BY seq`, ws);
  return {
    records,
    // Association row ids are internal; the links themselves must be the same.
    associations: sortRows(await all(sql`SELECT a_object, a_id, b_object, b_id, created_at, created_by FROM associations WHERE workspace_id = ${w}`, ws)),
    notes: await all(sql`SELECT * FROM notes WHERE workspace_id = ${w} ORDER BY id`, ws),
    activity: await all(sql`SELECT * FROM activity WHERE workspace_id = ${w} ORDER BY id`, ws),
    threads: await all(sql`SELECT * FROM threads WHERE workspace_id = ${w} ORDER BY id`, ws),
    messages: await all(sql`SELECT * FROM messages WHERE workspace_id = ${w} ORDER BY id`, ws),
    stages: await all(sql`SELECT * FROM stage_history WHERE workspace_id = ${w} ORDER BY id`, ws),
    dedupe: sortRows(await all(sql`SELECT * FROM dedupe_keys WHERE workspace_id = ${w}`, ws)),
    search: sortRows(await indexedDocs(t.db, w)),
    merges: (await all(sql`SELECT id FROM merges WHERE workspace_id = ${w}`, ws)).length,
  };
}
type Snapshot = Awaited<ReturnType<typeof snapshot>>;

/**
 * After an undo everything is as before, except what the undo itself adds: the primary's updated_at,
 * the 'merged' and 'unmerged' entries on the primary's timeline, and the merge's own row.
 */
function expectUndone(before: Snapshot, after: Snapshot, object: string, primaryId: string) {
  const strip = (rows: Record<string, any>[]) => rows.map((r) => (r.id === primaryId ? { ...r, updated_at: '(undone)' } : r));
  for (const o of Object.keys(before.records)) {
    if (o === object) expect(strip(after.records[o]!), o).toEqual(strip(before.records[o]!));
    else expect(after.records[o], o).toEqual(before.records[o]);
  }
  expect(after.associations).toEqual(before.associations);
  expect(after.notes).toEqual(before.notes);
  expect(after.activity.slice(0, before.activity.length)).toEqual(before.activity);
  // A merge that changed the primary's pipeline step also logged that move, before 'merged'.
  const added = after.activity.slice(before.activity.length).map((a) => [a.object, a.record_id, a.action]);
  expect(added.filter((a) => a[2] !== 'pipeline_moved')).toEqual([
    [object, primaryId, 'merged'],
    [object, primaryId, 'unmerged'],
  ]);
  expect(after.threads).toEqual(before.threads);
  expect(after.messages).toEqual(before.messages);
  expect(after.stages).toEqual(before.stages);
  expect(after.dedupe).toEqual(before.dedupe);
  expect(after.search).toEqual(before.search);
}

beforeAll(async () => {
  t = await testApp();
});

afterAll(async () => {
  await t?.close();
});

describe('detect', () => {
  let ws: TestWorkspace;
  const id: Record<string, any> = {};
  const detect = async (body: Record<string, unknown> = {}, token?: string) => {
    const r = await call_(ws, 'POST', '/duplicates', { action: 'detect', object: 'contacts', ...body }, token);
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    return r.body as { object: string; data: { score: number; records: { id: string; name: string }[]; evidence: any[] }[]; total: number };
  };
  const clusterOf = (data: Awaited<ReturnType<typeof detect>>['data'], recordId: string) => data.find((c) => c.records.some((r) => r.id === recordId));

  beforeAll(async () => {
    ws = await makeWorkspace(t.db, 'detect');
    const acme = (await call_(ws, 'POST', '/records/companies', { name: 'Acme' })).body.data.id;
    const globex = (await call_(ws, 'POST', '/records/companies', { name: 'Globex' })).body.data.id;
    const people: Record<string, Record<string, unknown>> = {
      linus: { first_name: 'Linus', last_name: 'Torvalds', phone: '+1 (503) 555-0142' },
      support: { first_name: 'Support', last_name: 'Desk', phone: '503.555.0142' },
      grace1: { first_name: 'Grace', last_name: 'Hopper', email: 'grace@navy.mil', company: acme },
      grace2: { first_name: 'grace', last_name: 'HOPPER', email: 'g.hopper@yale.edu', company: acme },
      grace3: { first_name: 'Grace', last_name: 'Hopper', email: 'grace@globex.com', company: globex },
      kath1: { first_name: 'Katherine', last_name: 'Johnson', email: 'kj@nasa.gov' },
      kath2: { first_name: 'Katharine', last_name: 'Johnson', email: 'k.johnson@nasa.gov' },
      alan1: { first_name: 'Alan', last_name: 'Turing', phone: '+44 20 7946 0000', company: acme },
      alan2: { first_name: 'Alan', last_name: 'Turing', phone: '020 7946 0000', company: acme },
      ada: { first_name: 'Ada', last_name: 'Lovelace', email: 'ada@example.com', linkedin_url: 'https://linkedin.com/in/ada' },
      bob: { first_name: 'Bob', last_name: 'Smith', email: 'bob@example.com', linkedin_url: 'https://linkedin.com/in/bobsmith' },
    };
    for (const [k, p] of Object.entries(people)) {
      const r = await call_(ws, 'POST', '/records/contacts', p);
      expect(r.status, JSON.stringify(r.body)).toBe(201);
      id[k] = r.body.data.id;
    }
  });

  it('finds the planted clusters, strongest first, each with its evidence per field and a score', async () => {
    const r = await detect();
    expect(r.object).toBe('contacts');
    expect(r.total).toBe(4);
    expect(r.data).toHaveLength(4);
    const scores = r.data.map((c) => c.score);
    expect(scores).toEqual([...scores].sort((a, b) => b - a));

    // Same name at the same company and the same phone: the strongest.
    const alan = r.data[0]!;
    expect(alan.records.map((x) => x.id).sort()).toEqual([id.alan1, id.alan2].sort());
    expect(alan.records.every((x) => x.name === 'Alan Turing')).toBe(true);
    expect(alan.evidence).toEqual(
      expect.arrayContaining([
        { kind: 'phone', field: 'phone', value: '2079460000', record_ids: expect.arrayContaining([id.alan1, id.alan2]) },
        { kind: 'name', field: 'first_name+last_name', value: 'alan turing', record_ids: expect.arrayContaining([id.alan1, id.alan2]) },
      ]),
    );
    expect(alan.evidence).toHaveLength(2);
    expect(alan.score).toBeCloseTo(1 - 0.15 * 0.3, 3);

    // The same phone written differently, names unrelated.
    const phone = clusterOf(r.data, id.linus)!;
    expect(phone.records.map((x) => x.id).sort()).toEqual([id.linus, id.support].sort());
    expect(phone.evidence).toEqual([{ kind: 'phone', field: 'phone', value: '5035550142', record_ids: expect.arrayContaining([id.linus, id.support]) }]);
    expect(phone.score).toBe(0.85);

    // The same name at the same company (case aside); the namesake at another company joins by the
    // name alone (issue 15), which is weaker evidence: the cluster's score is its strongest pair's.
    const grace = clusterOf(r.data, id.grace1)!;
    expect(grace.records.map((x) => x.id).sort()).toEqual([id.grace1, id.grace2, id.grace3].sort());
    expect(grace.evidence).toEqual([
      { kind: 'name', field: 'first_name+last_name', value: 'grace hopper', record_ids: expect.arrayContaining([id.grace1, id.grace2]) },
      { kind: 'name_only', field: 'first_name+last_name', value: 'grace hopper', record_ids: expect.arrayContaining([id.grace1, id.grace2, id.grace3]) },
    ]);
    expect(grace.score).toBe(0.7);
    expect(clusterOf(r.data, id.grace3)).toBe(grace);

    // Near spelling: a fuzzy name match with its similarity.
    const kath = clusterOf(r.data, id.kath1)!;
    expect(kath.records.map((x) => x.id).sort()).toEqual([id.kath1, id.kath2].sort());
    expect(kath.evidence).toHaveLength(1);
    expect(kath.evidence[0]).toMatchObject({ kind: 'fuzzy_name', field: 'first_name+last_name', record_ids: expect.arrayContaining([id.kath1, id.kath2]) });
    expect(kath.evidence[0].value).toMatch(/^kath[ae]rine johnson ~ kath[ae]rine johnson$/);
    expect(kath.evidence[0].similarity).toBeGreaterThanOrEqual(0.9);
    expect(kath.evidence[0].similarity).toBeLessThan(1);
    expect(kath.score).toBeCloseTo(0.6 * kath.evidence[0].similarity, 2);
    expect(r.data.map((c) => c.records[0]!.id === id.kath1 || c.records[0]!.id === id.kath2).at(-1)).toBe(true);

    // Different LinkedIn profiles share a host, not an identity.
    expect(clusterOf(r.data, id.ada)).toBeUndefined();
    expect(clusterOf(r.data, id.bob)).toBeUndefined();
  });

  it('record_id keeps the clusters of one record; limit and min_score narrow the list; members may detect', async () => {
    const one = await detect({ record_id: id.support });
    expect(one.total).toBe(1);
    expect(one.data[0]!.records.map((x) => x.id).sort()).toEqual([id.linus, id.support].sort());
    const none = await detect({ record_id: id.ada });
    expect(none).toEqual({ object: 'contacts', data: [], total: 0 });
    // A namesake at another company is in its namesakes' cluster, and drops out above the name alone's 0.6.
    expect((await detect({ record_id: id.grace3 })).total).toBe(1);
    expect((await detect({ record_id: id.grace3, min_score: 0.65 })).total).toBe(0);
    const top = await detect({ limit: 1 });
    expect(top.data).toHaveLength(1);
    expect(top.total).toBe(4);
    expect(top.data[0]!.records.map((x) => x.id).sort()).toEqual([id.alan1, id.alan2].sort());
    const strong = await detect({ min_score: 0.8 });
    expect(strong.total).toBe(2);
    const member = await detect({}, ws.memberToken);
    expect(member.total).toBe(4);
    const bad = await call_(ws, 'POST', '/duplicates', { action: 'detect', object: 'widgets' });
    expect(bad.body.code).toBe('INVALID_OBJECT');
    const badLimit = await call_(ws, 'POST', '/duplicates', { action: 'detect', object: 'contacts', limit: 0 });
    expect(badLimit.status).toBe(400);
  });

  it('companies: the same domain however written, and the same name without legal suffixes', async () => {
    const a = (await call_(ws, 'POST', '/records/companies', { name: 'Initech Inc', domain: 'initech.com' })).body.data.id;
    const b = (await call_(ws, 'POST', '/records/companies', { name: 'INITECH Corporation', website: 'https://www.initech.com/about' })).body.data.id;
    const r = (await call_(ws, 'POST', '/duplicates', { action: 'detect', object: 'companies' })).body;
    expect(r.total).toBe(1);
    const c = r.data[0];
    expect(c.records.map((x: { id: string }) => x.id).sort()).toEqual([a, b].sort());
    expect(c.evidence).toEqual(expect.arrayContaining([expect.objectContaining({ kind: 'domain', value: 'initech.com' }), expect.objectContaining({ kind: 'name', field: 'name', value: 'initech' })]));
    expect(c.score).toBeCloseTo(1 - 0.15 * 0.3, 3);
  });
});

describe('merge and unmerge', () => {
  let ws: TestWorkspace;
  const id: Record<string, any> = {};
  const api = (method: string, url: string, body?: unknown, token?: string) => call_(ws, method, url, body, token);
  const ok = async (method: string, url: string, body?: unknown) => {
    const r = await api(method, url, body);
    expect(r.status, `${method} ${url} ${JSON.stringify(r.body)}`).toBeLessThan(300);
    return r.body.data;
  };
  const merge = (body: Record<string, unknown>, token?: string) => api('POST', '/duplicates', { action: 'merge', object: 'contacts', ...body }, token);

  beforeAll(async () => {
    ws = await makeWorkspace(t.db, 'merge');
    id.acme = (await ok('POST', '/records/companies', { name: 'Acme' })).id;
    id.globex = (await ok('POST', '/records/companies', { name: 'Globex' })).id;
    id.initech = (await ok('POST', '/records/companies', { name: 'Initech' })).id;
    id.P = (
      await ok('POST', '/records/contacts', { first_name: 'Ada', last_name: 'Lovelace', email: 'ada@example.com', job_title: 'Countess', status: 'customer', company: id.acme, tags: ['vip'] })
    ).id;
    id.D1 = (
      await ok('POST', '/records/contacts', { first_name: 'Ada', last_name: 'Lovelace', phone: '+44 20 7946 0000', job_title: 'Mathematician', city: 'London', company: id.acme, tags: ['newsletter'] })
    ).id;
    id.D2 = (
      await ok('POST', '/records/contacts', {
        first_name: 'Augusta Ada',
        last_name: 'King',
        email: 'ada.king@example.com',
        phone: '020 7946 0001',
        city: 'Paris',
        country: 'UK',
        linkedin_url: 'https://linkedin.com/in/adaking',
        status: 'lead',
      })
    ).id;
    id.charles = (await ok('POST', '/records/contacts', { first_name: 'Charles', last_name: 'Babbage', email: 'charles@example.com' })).id;
    await ok('PUT', `/records/contacts/${id.D2}`, { source: 'referral' });

    // Relation fields pointing at the duplicates: tasks' contact, an opportunity's contact.
    id.T1 = (await ok('POST', '/tasks', { title: 'Call Ada', contact: id.D1 })).id;
    id.T2 = (await ok('POST', '/tasks', { title: 'Send the deck', contact: id.D2, company: id.globex })).id;
    id.T3 = (await ok('POST', '/tasks', { title: 'Primary task', contact: id.P })).id;
    id.O1 = (await ok('POST', '/records/opportunities', { name: 'Analytical Engine', contact: id.D2, company: id.acme, amount: 5000 })).id;
    id.O2 = (await ok('POST', '/records/opportunities', { name: 'Difference Engine', contact: id.P })).id;
    // Associations: some move, one would duplicate a link the primary has, one links the duplicates.
    for (const [from, to, toId] of [
      [id.D1, 'companies', id.globex],
      [id.D2, 'companies', id.globex],
      [id.P, 'companies', id.initech],
      [id.D1, 'companies', id.initech],
      [id.D1, 'contacts', id.D2],
      [id.D2, 'contacts', id.charles],
      [id.D1, 'opportunities', id.O2],
    ] as const)
      await ok('PUT', `/records/contacts/${from}/associations/${to}/${toId}`);
    // Notes (shared and private), email threads.
    id.N1 = (await ok('POST', '/notes', { body: 'Met at the Royal Society', object: 'contacts', record_id: id.D1 })).id;
    id.N2 = (await ok('POST', '/notes', { body: 'Private: prefers letters', object: 'contacts', record_id: id.D2, visibility: 'private' })).id;
    id.N3 = (await ok('POST', '/notes', { body: 'Primary note', object: 'contacts', record_id: id.P })).id;
    const message = (from: string) => ({ direction: 'inbound', from_email: from, to: ['sales@merge.test'], body: 'Hello', sent_at: '2026-02-01T10:00:00Z' });
    id.TH1 = (await ok('POST', '/inbox/threads', { subject: 'Engines', contact_id: id.D1, company_id: id.acme, messages: [message('ada@example.com')] })).id;
    id.TH2 = (await ok('POST', '/inbox/threads', { subject: 'Poetry', contact_id: id.D2, messages: [message('ada.king@example.com')] })).id;
  });

  it('dry run previews the merged record and what would move, and writes nothing', async () => {
    const before = await snapshot(ws);
    const r = await merge({ primary_id: id.P, duplicate_ids: [id.D1, id.D2], dry_run: true });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    const d = r.body.data;
    expect(d.dry_run).toBe(true);
    expect(d.merge_id).toBeUndefined();
    expect(d.primary_id).toBe(id.P);
    expect(d.merged_ids).toEqual([id.D1, id.D2]);
    // Primary values win; its empty fields are filled from the duplicates in the order given.
    expect(d.record).toEqual({
      id: id.P,
      first_name: 'Ada',
      last_name: 'Lovelace',
      email: 'ada@example.com',
      phone: '+44 20 7946 0000',
      job_title: 'Countess',
      status: 'customer',
      source: 'referral',
      company: id.acme,
      owner: null,
      city: 'London',
      country: 'UK',
      linkedin_url: 'https://linkedin.com/in/adaking',
      tags: ['vip'],
      do_not_contact: false,
      last_contacted_at: null,
    });
    expect(d.changes).toEqual({
      phone: { from: null, to: '+44 20 7946 0000', source: id.D1 },
      source: { from: null, to: 'referral', source: id.D2 },
      city: { from: null, to: 'London', source: id.D1 },
      country: { from: null, to: 'UK', source: id.D2 },
      linkedin_url: { from: null, to: 'https://linkedin.com/in/adaking', source: id.D2 },
    });
    expect(d.moves).toMatchObject({ relations: 3, associations: 6, notes: 2, threads: 2, stage_history: 0 });
    expect(d.moves.activity).toBeGreaterThan(0);
    // Duplicates in the other order: their values fill the gaps first.
    const reversed = (await merge({ primary_id: id.P, duplicate_ids: [id.D2, id.D1], dry_run: true })).body.data;
    expect(reversed.record).toMatchObject({ phone: '020 7946 0001', city: 'Paris', country: 'UK' });
    expect(await snapshot(ws)).toEqual(before);
  });

  it('dry run with overrides: a value, or {"from": id} to take a given record\'s value', async () => {
    const before = await snapshot(ws);
    const r = await merge({
      primary_id: id.P,
      duplicate_ids: [id.D1, id.D2],
      overrides: { job_title: { from: id.D1 }, email: { from: id.D2 }, city: { from: id.D2 }, status: 'qualified', country: null, last_name: { from: id.P } },
      dry_run: true,
    });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(r.body.data.record).toMatchObject({
      job_title: 'Mathematician',
      email: 'ada.king@example.com',
      city: 'Paris',
      status: 'qualified',
      country: null,
      last_name: 'Lovelace',
      phone: '+44 20 7946 0000',
    });
    expect(r.body.data.changes).toMatchObject({
      job_title: { from: 'Countess', to: 'Mathematician', source: id.D1 },
      email: { from: 'ada@example.com', to: 'ada.king@example.com', source: id.D2 },
      status: { from: 'customer', to: 'qualified', source: 'override' },
    });
    expect(r.body.data.changes.country).toBeUndefined();
    expect(r.body.data.changes.last_name).toBeUndefined();
    // Bad overrides and requests are refused, still without writing.
    for (const body of [
      { primary_id: id.P, duplicate_ids: [id.D1], overrides: { shoe_size: 44 } },
      { primary_id: id.P, duplicate_ids: [id.D1], overrides: { status: 'royalty' } },
      { primary_id: id.P, duplicate_ids: [id.D1], overrides: { email: { from: id.charles } } },
      { primary_id: id.P, duplicate_ids: [id.D1], overrides: { created_at: '2020-01-01' } },
      { primary_id: id.P, duplicate_ids: [id.P] },
      { primary_id: id.P, duplicate_ids: [] },
    ]) {
      for (const dry_run of [true, false]) {
        const bad = await merge({ ...body, dry_run });
        expect(bad.status, JSON.stringify(body)).toBe(400);
        expect(bad.body.code).toBe('VALIDATION_ERROR');
      }
    }
    const missing = await merge({ primary_id: id.P, duplicate_ids: [id.D1, '00000000-0000-7000-8000-000000000009'] });
    expect(missing.status).toBe(404);
    expect(await snapshot(ws)).toEqual(before);
  });

  it('a member may not merge or dry-run a merge (403); more than 20 duplicates are refused (400)', async () => {
    const before = await snapshot(ws);
    for (const dry_run of [true, false]) {
      const r = await merge({ primary_id: id.P, duplicate_ids: [id.D1], dry_run }, ws.memberToken);
      expect(r.status).toBe(403);
      expect(r.body.code).toBe('PERMISSION_DENIED');
    }
    const extra = await makeWorkspace(t.db, 'merge21');
    const imported = await call(t.app, extra.adminToken, 'POST', '/api/v1/import/contacts', {
      records: Array.from({ length: 22 }, (_, i) => ({ first_name: `P${i}`, last_name: `Many${i}`, email: `p${i}@many.test` })),
    });
    expect(imported.body.created).toBe(22);
    const list = (await call(t.app, extra.adminToken, 'GET', '/api/v1/records/contacts?limit=100&fields=id')).body.data.map((x: { id: string }) => x.id);
    const tooMany = await call(t.app, extra.adminToken, 'POST', '/api/v1/duplicates', { action: 'merge', object: 'contacts', primary_id: list[0], duplicate_ids: list.slice(1, 22) });
    expect(tooMany.status).toBe(400);
    expect(tooMany.body.code).toBe('VALIDATION_ERROR');
    expect(tooMany.body.message).toMatch(/20/);
    expect((await call(t.app, extra.adminToken, 'GET', '/api/v1/records/contacts?limit=1')).body.total).toBe(22);
    // Twenty is allowed (dry run).
    const twenty = await call(t.app, extra.adminToken, 'POST', '/api/v1/duplicates', { action: 'merge', object: 'contacts', primary_id: list[0], duplicate_ids: list.slice(1, 21), dry_run: true });
    expect(twenty.status).toBe(200);
    expect(twenty.body.data.merged_ids).toHaveLength(20);
    expect(await snapshot(ws)).toEqual(before);
  });

  it('a merge moves every link to the primary and records it in the timeline; unmerge restores everything exactly', async () => {
    const before = await snapshot(ws);
    const r = await merge({ primary_id: id.P, duplicate_ids: [id.D1, id.D2], overrides: { job_title: { from: id.D1 } } });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    const m = r.body.data;
    expect(m.dry_run).toBe(false);
    expect(typeof m.merge_id).toBe('string');
    expect(m.moves).toMatchObject({ relations: 3, associations: 6, notes: 2, threads: 2, stage_history: 0 });

    // The duplicates are gone; the primary holds the merged values.
    for (const d of [id.D1, id.D2]) expect((await api('GET', `/records/contacts/${d}`)).status).toBe(404);
    const p = await ok('GET', `/records/contacts/${id.P}`);
    expect(p).toMatchObject({ ...m.record, job_title: 'Mathematician', phone: '+44 20 7946 0000', city: 'London', country: 'UK', source: 'referral', email: 'ada@example.com' });
    // Relation fields: the tasks' and the opportunity's contact.
    for (const task of [id.T1, id.T2, id.T3]) expect((await ok('GET', `/tasks/${task}`)).contact).toBe(id.P);
    expect((await ok('GET', `/records/opportunities/${id.O1}`)).contact).toBe(id.P);
    // Associations, as GET /records shows them (no self-link, no twice-linked company).
    const assoc = p.associations;
    const via = (group: string) => (assoc[group]?.records ?? []).map((x: { id: string; via: string }) => `${x.id}:${x.via}`).sort();
    expect(via('companies')).toEqual([`${id.acme}:company`, `${id.globex}:association`, `${id.initech}:association`].sort());
    expect(via('contacts')).toEqual([`${id.charles}:association`]);
    expect(via('tasks')).toEqual([id.T1, id.T2, id.T3].map((x) => `${x}:contact`).sort());
    expect(via('opportunities')).toEqual([`${id.O1}:contact`, `${id.O2}:contact`, `${id.O2}:association`].sort());
    const charles = await ok('GET', `/records/contacts/${id.charles}`);
    expect(charles.associations.contacts.records.map((x: { id: string }) => x.id)).toEqual([id.P]);
    // Notes (the private one too) and email threads.
    const notes = (await api('GET', `/notes?object=contacts&record_id=${id.P}`)).body.data.map((n: { id: string }) => n.id).sort();
    expect(notes).toEqual([id.N1, id.N2, id.N3].sort());
    const threads = (await api('GET', `/inbox/threads?contact_id=${id.P}`)).body.data.map((x: { id: string }) => x.id).sort();
    expect(threads).toEqual([id.TH1, id.TH2].sort());
    // Timeline: the merge on top, then the duplicates' history (their creation, the note, the emails).
    const timeline = (await api('GET', `/activity/contacts/${id.P}?limit=100`)).body.data as { action: string; details: any }[];
    expect(timeline[0]).toMatchObject({
      action: 'merged',
      details: {
        merge_id: m.merge_id,
        merged: [
          { id: id.D1, name: 'Ada Lovelace' },
          { id: id.D2, name: 'Augusta Ada King' },
        ],
      },
    });
    expect(timeline.filter((e) => e.action === 'created')).toHaveLength(3);
    expect(timeline.map((e) => e.action)).toEqual(expect.arrayContaining(['note_added', 'email_received', 'updated', 'associated']));
    // Every activity entry of the duplicates now belongs to the primary.
    expect((await all(sql`SELECT COUNT(*) AS n FROM activity WHERE record_id IN (${id.D1}, ${id.D2})`, ws))[0]!.n).toBe(0);
    // Match keys and search follow: the duplicates no longer show up.
    // No key names them, and none names a record that is gone.
    const keys = await matchKeys(ws.ctx.db, ws.workspace.id);
    expect(keys.filter((k) => k.record_id === id.D1 || k.record_id === id.D2)).toEqual([]);
    expect(keys).toHaveLength(Number((await all(sql`SELECT COUNT(*) AS n FROM dedupe_keys WHERE workspace_id = ${ws.workspace.id}`, ws))[0]!.n));
    expect((await all(sql`SELECT COUNT(*) AS n FROM search_docs WHERE record_id IN (${id.D1}, ${id.D2})`, ws))[0]!.n).toBe(0);

    // A member may not undo it.
    const denied = await api('POST', '/duplicates', { action: 'unmerge', merge_id: m.merge_id }, ws.memberToken);
    expect(denied.status).toBe(403);
    expect(denied.body.code).toBe('PERMISSION_DENIED');

    // Undo: the merged records come back with their ids and values, every link moves back.
    const u = await api('POST', '/duplicates', { action: 'unmerge', merge_id: m.merge_id });
    expect(u.status, JSON.stringify(u.body)).toBe(200);
    expect(u.body.data).toEqual({ merge_id: m.merge_id, primary_id: id.P, restored_ids: [id.D1, id.D2] });
    const after = await snapshot(ws);
    expectUndone(before, after, 'contacts', id.P);
    expect(after.merges).toBe(before.merges + 1);
    // Through the API too: the records, their tasks, notes and threads.
    expect((await ok('GET', `/records/contacts/${id.D1}`)).job_title).toBe('Mathematician');
    expect((await ok('GET', `/records/contacts/${id.P}`)).job_title).toBe('Countess');
    expect((await ok('GET', `/tasks/${id.T2}`)).contact).toBe(id.D2);
    expect((await api('GET', `/inbox/threads?contact_id=${id.D1}`)).body.data.map((x: { id: string }) => x.id)).toEqual([id.TH1]);
    expect((await api('GET', `/activity/contacts/${id.P}`)).body.data[0]).toMatchObject({ action: 'unmerged', details: { merge_id: m.merge_id, restored: [id.D1, id.D2] } });

    // Twice: refused, nothing changes.
    const again = await api('POST', '/duplicates', { action: 'unmerge', merge_id: m.merge_id });
    expect(again.status).toBe(400);
    expect(again.body.code).toBe('VALIDATION_ERROR');
    expect(await snapshot(ws)).toEqual(after);
    const unknown = await api('POST', '/duplicates', { action: 'unmerge', merge_id: 'no-such-merge' });
    expect(unknown.status).toBe(404);

    // Detection sees them as a cluster again.
    const det = (await api('POST', '/duplicates', { action: 'detect', object: 'contacts', record_id: id.D1 })).body;
    expect(det.data[0].records.map((x: { id: string }) => x.id).sort()).toEqual([id.P, id.D1].sort());
  });

  it('merging two opportunities moves the stage history, tasks and notes, and unmerge puts them back', async () => {
    id.O3 = (await ok('POST', '/records/opportunities', { name: 'Jacquard deal', amount: 100, company: id.acme })).id;
    id.O4 = (await ok('POST', '/records/opportunities', { name: 'Jacquard Deal (copy)', amount: 250, close_date: '2026-06-30' })).id;
    await ok('PUT', `/pipelines/opportunities/${id.O4}/move`, { step: 'qualified' });
    await ok('PUT', `/pipelines/opportunities/${id.O4}/move`, { step: 'proposal' });
    id.T4 = (await ok('POST', '/tasks', { title: 'Chase the Jacquard deal', opportunity: id.O4 })).id;
    id.N4 = (await ok('POST', '/notes', { body: 'Loom pricing', object: 'opportunities', record_id: id.O4 })).id;
    await ok('PUT', `/records/opportunities/${id.O4}/associations/contacts/${id.charles}`);
    const history = (await all(sql`SELECT id FROM stage_history WHERE record_id = ${id.O4}`, ws)).map((h) => h.id);
    expect(history).toHaveLength(3);

    const before = await snapshot(ws);
    const dry = await api('POST', '/duplicates', { action: 'merge', object: 'opportunities', primary_id: id.O3, duplicate_ids: [id.O4], dry_run: true });
    expect(dry.body.data.moves).toMatchObject({ relations: 1, associations: 1, notes: 1, stage_history: 3, threads: 0 });
    expect(dry.body.data.record).toMatchObject({ name: 'Jacquard deal', amount: 100, close_date: '2026-06-30', status: 'open', probability: 10 });
    expect(await snapshot(ws)).toEqual(before);

    const r = await api('POST', '/duplicates', { action: 'merge', object: 'opportunities', primary_id: id.O3, duplicate_ids: [id.O4], overrides: { status: { from: id.O4 }, amount: 250 } });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect((await all(sql`SELECT COUNT(*) AS n FROM stage_history WHERE record_id = ${id.O4}`, ws))[0]!.n).toBe(0);
    expect((await all(sql`SELECT id FROM stage_history WHERE record_id = ${id.O3}`, ws)).map((h) => h.id)).toEqual(expect.arrayContaining(history));
    expect((await ok('GET', `/tasks/${id.T4}`)).opportunity).toBe(id.O3);
    expect((await api('GET', `/notes?object=opportunities&record_id=${id.O3}`)).body.data.map((n: { id: string }) => n.id)).toContain(id.N4);
    const o3 = await ok('GET', `/records/opportunities/${id.O3}`);
    expect(o3).toMatchObject({ status: 'proposal', amount: 250, close_date: '2026-06-30' });
    expect(o3.associations.contacts.records.map((x: { id: string }) => x.id)).toContain(id.charles);
    const timeline = (await api('GET', `/activity/opportunities/${id.O3}`)).body.data;
    expect(timeline[0]).toMatchObject({ action: 'merged' });
    // The step came from the duplicate: a move like any other, with its stage history.
    expect(timeline[1]).toMatchObject({ action: 'pipeline_moved', details: { from: 'open', to: 'proposal', merge: true } });
    expect((await all(sql`SELECT COUNT(*) AS n FROM stage_history WHERE record_id = ${id.O3} AND left_at IS NULL`, ws))[0]!.n).toBe(1);

    const u = await api('POST', '/duplicates', { action: 'unmerge', merge_id: r.body.data.merge_id });
    expect(u.status, JSON.stringify(u.body)).toBe(200);
    expectUndone(before, await snapshot(ws), 'opportunities', id.O3);
  });
});

describe('match keys follow the records', () => {
  // A record's keys are found from its stored values when it changes (no index on record_id): after
  // every kind of write the table holds exactly the keys the records' values give, as a rebuild
  // from the records makes them; no key of an old value, of a deleted record or a deleted company.
  let ws: TestWorkspace;
  const ok = async (method: string, url: string, body?: unknown) => {
    const r = await call_(ws, method, url, body);
    expect(r.status, `${method} ${url} ${JSON.stringify(r.body)}`).toBeLessThan(300);
    return r.body.data;
  };
  const stored = async () => sortRows(await all(sql`SELECT object_id, kind, key, record_seq FROM dedupe_keys WHERE workspace_id = ${ws.workspace.id}`, ws));
  const expectExact = async (step: string) => {
    const now = await stored();
    await rebuildDedupeKeys(ws.ctx.db, ws.workspace.id, await getSchema(ws.ctx));
    expect(now, step).toEqual(await stored());
  };

  it('after creates, updates, bulk updates, merges, unmerges and deletes, the keys are exactly those of the values', async () => {
    ws = await makeWorkspace(t.db, 'keys-follow');
    const acme = (await ok('POST', '/records/companies', { name: 'Acme Inc', domain: 'acme.example' })).id;
    const globex = (await ok('POST', '/records/companies', { name: 'Globex', domain: 'https://www.globex.example/' })).id;
    const ada = (await ok('POST', '/records/contacts', { first_name: 'Ada', last_name: 'Lovelace', email: 'ada@example.com', phone: '+1 415 555 0100', company: acme })).id;
    const twin = (await ok('POST', '/records/contacts', { first_name: 'Ada', last_name: 'Lovelace', email: 'ada@globex.example', company: globex })).id;
    const bob = (await ok('POST', '/records/contacts', { first_name: 'Bob', last_name: 'Stone', phone: '(415) 555-0101' })).id;
    await expectExact('created');
    await ok('PATCH', `/records/contacts/${ada}`, { email: 'Ada.Lovelace@Example.com', last_name: 'King', phone: null });
    await ok('PATCH', `/records/contacts/${bob}`, { company: acme, phone: '+1 415 555 0199' });
    await expectExact('updated');
    await ok('POST', '/bulk', { action: 'update', object: 'contacts', ids: [ada, twin, bob], values: { company: globex } });
    await expectExact('bulk updated');
    // A text field of the name key and a phone, the same on each: the set-based path (old key columns read before the UPDATE).
    await ok('POST', '/bulk', { action: 'update', object: 'contacts', ids: [ada, twin], values: { last_name: 'Byron' } });
    await expectExact('bulk renamed');
    await ok('POST', '/bulk', { action: 'update', object: 'contacts', ids: [bob], values: { phone: '+1 415 555 0142', first_name: 'Robert' } });
    await expectExact('bulk phone');
    // Contacts of the merged company now name the primary in their name keys; an unmerge puts them back.
    const m = await ok('POST', '/duplicates', { action: 'merge', object: 'companies', primary_id: acme, duplicate_ids: [globex] });
    expect((await ok('GET', `/records/contacts/${twin}`)).company).toBe(acme);
    await expectExact('merged');
    await ok('POST', '/duplicates', { action: 'unmerge', merge_id: m.merge_id });
    await expectExact('unmerged');
    await ok('POST', '/duplicates', { action: 'merge', object: 'contacts', primary_id: ada, duplicate_ids: [twin] });
    await expectExact('contacts merged');
    // A deleted company's contacts keep their names without it; a deleted contact leaves no key.
    await ok('DELETE', `/records/companies/${globex}`);
    expect((await ok('GET', `/records/contacts/${bob}`)).company).toBeNull();
    await expectExact('company deleted');
    await ok('DELETE', `/records/contacts/${bob}`);
    await expectExact('contact deleted');
    // A field made with a default gives every record its value: keys made of it follow.
    await ok('POST', '/schema/contacts/fields', { name: 'team_email', label: 'Team email', type: 'EMAIL', default: 'team@example.com' });
    expect((await matchKeys(ws.ctx.db, ws.workspace.id)).filter((k) => k.key === 'team@example.com').map((k) => k.record_id)).toEqual([ada]);
    await ok('PATCH', `/records/contacts/${ada}`, { team_email: 'ada.team@example.com' });
    await expectExact('field with a default');
    expect((await matchKeys(ws.ctx.db, ws.workspace.id)).filter((k) => k.record_id === bob || k.key.includes(globex))).toEqual([]);
    expect(await matchKeys(ws.ctx.db, ws.workspace.id)).toHaveLength((await stored()).length);
  });
});
