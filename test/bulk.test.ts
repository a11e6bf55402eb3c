import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRecords } from '../src/services/records.js';
import { call, makeWorkspace, sqlAll, type TestApp, type TestWorkspace, tableOf as tableOfObject, testApp } from './helpers.js';

/**
 * POST /bulk through Fastify: update by ids or by a FilterGroup in one transaction, dry_run that
 * reports what would change and writes nothing, add_relation / remove_relation (associations seen
 * through GET /records/{object}/{id}), and the 10,000-record ceiling.
 */

let t: TestApp;
let ws: TestWorkspace;
const api = (method: string, url: string, body?: unknown, token = ws.adminToken) => call(t.app, token, method, `/api/v1${url}`, body);
const bulk = (body: unknown, token?: string) => api('POST', '/bulk', body, token);

const tableOf = (w: TestWorkspace, object: string) => tableOfObject(t.db, w.workspace.id, object);
/** Full contents of a record table, in insertion order. */
const rows = async (object: string, w = ws) => sqlAll(t.db, sql`SELECT * FROM ${sql.table(await tableOf(w, object))} ORDER BY seq`);
const activity = (w = ws) => sqlAll(w.ctx.db, sql`SELECT * FROM activity WHERE workspace_id = ${w.workspace.id} ORDER BY id`);
const associations = (w = ws) => sqlAll(w.ctx.db, sql`SELECT * FROM associations WHERE workspace_id = ${w.workspace.id} ORDER BY id`);
const stageHistory = (w = ws) => sqlAll(w.ctx.db, sql`SELECT * FROM stage_history WHERE workspace_id = ${w.workspace.id} ORDER BY id`);
/** Everything a bulk request could write. */
const everything = async () => ({
  contacts: await rows('contacts'),
  opportunities: await rows('opportunities'),
  companies: await rows('companies'),
  activity: await activity(),
  associations: await associations(),
  stages: await stageHistory(),
});

/** Record ids by a short name (typed loosely: every name used is set in beforeAll). */
const ids: Record<string, any> = {};
/** Samples in a stable order (the dry run reads records in index order). */
const byId = <T extends { id: string }>(list: T[]) => [...list].sort((a, b) => a.id.localeCompare(b.id));
let acme: string;
let globex: string;

beforeAll(async () => {
  t = await testApp();
  ws = t.a;
  acme = (await api('POST', '/records/companies', { name: 'Acme' })).body.data.id;
  globex = (await api('POST', '/records/companies', { name: 'Globex' })).body.data.id;
  const people = [
    { first_name: 'Ann', last_name: 'A', email: 'ann@x.test', status: 'lead', city: 'Paris' },
    { first_name: 'Ben', last_name: 'B', email: 'ben@x.test', status: 'qualified', city: 'Paris' },
    { first_name: 'Cat', last_name: 'C', email: 'cat@x.test', status: 'lead', city: 'Berlin' },
    { first_name: 'Dan', last_name: 'D', email: 'dan@x.test', status: 'qualified', city: 'Berlin' },
    { first_name: 'Eve', last_name: 'E', email: 'eve@x.test', status: 'customer', city: 'Rome' },
    { first_name: 'Fay', last_name: 'F', email: 'fay@x.test', status: 'lead', city: null },
  ];
  for (const p of people) {
    const r = await api('POST', '/records/contacts', p);
    expect(r.status).toBe(201);
    ids[p.first_name] = r.body.data.id;
  }
  for (const name of ['Deal 1', 'Deal 2', 'Deal 3']) {
    const r = await api('POST', '/records/opportunities', { name, amount: 1000, company: acme });
    ids[name] = r.body.data.id;
  }
  await api('PUT', `/pipelines/opportunities/${ids['Deal 3']}/move`, { step: 'proposal' });
});

afterAll(async () => {
  await t?.close();
});

describe('bulk update', () => {
  it('by ids: every record updated, one activity entry each', async () => {
    const before = (await activity()).length;
    const r = await bulk({ action: 'update', object: 'contacts', ids: [ids.Ann, ids.Cat], values: { job_title: 'Buyer', country: 'FR' } });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(r.body.data).toEqual({ action: 'update', object: 'contacts', matched: 2, dry_run: false, updated: 2 });
    for (const n of ['Ann', 'Cat']) expect((await api('GET', `/records/contacts/${ids[n]}`)).body.data).toMatchObject({ job_title: 'Buyer', country: 'FR' });
    for (const n of ['Ben', 'Dan', 'Eve', 'Fay']) expect((await api('GET', `/records/contacts/${ids[n]}`)).body.data.job_title).toBeNull();
    const added = (await activity()).slice(before);
    expect(added.map((a) => [a.record_id, a.action, a.via])).toEqual([
      [ids.Ann, 'updated', 'rest'],
      [ids.Cat, 'updated', 'rest'],
    ]);
    expect(JSON.parse(added[0]!.payload)).toEqual({ changes: { job_title: [null, 'Buyer'], country: [null, 'FR'] } });
  });

  it('by filter (FilterGroup): only the matching records change', async () => {
    const r = await bulk({ action: 'update', object: 'contacts', filter: { operator: 'and', conditions: [{ field: 'city', operator: 'eq', value: 'Berlin' }] }, values: { source: 'event' } });
    expect(r.body.data).toEqual({ action: 'update', object: 'contacts', matched: 2, dry_run: false, updated: 2 });
    const all = await rows('contacts');
    expect(all.filter((x) => x.source === 'event').map((x) => x.first_name)).toEqual(['Cat', 'Dan']);
    // An OR group, and the {field, operator, value} shorthand styles the records API accepts.
    const or = await bulk({
      action: 'update',
      object: 'contacts',
      filter: {
        operator: 'or',
        conditions: [
          { field: 'status', operator: 'eq', value: 'customer' },
          { field: 'city', operator: 'is_null' },
        ],
      },
      values: { source: 'partner' },
    });
    expect(or.body.data.matched).toBe(2);
    expect((await rows('contacts')).filter((x) => x.source === 'partner').map((x) => x.first_name)).toEqual(['Eve', 'Fay']);
  });

  it('one transaction: a value that fails on the second record leaves every record as it was', async () => {
    const before = await everything();
    // The first record takes the email, the second collides with it: all or nothing.
    const dup = await bulk({ action: 'update', object: 'contacts', ids: [ids.Ann, ids.Ben, ids.Cat], values: { email: 'shared@x.test', city: 'Lyon' } });
    expect(dup.status).toBe(409);
    expect(dup.body.code).toBe('DUPLICATE_RECORD');
    expect(await everything()).toEqual(before);
    // A relation to a record that does not exist, by filter.
    const rel = await bulk({
      action: 'update',
      object: 'contacts',
      filter: { operator: 'and', conditions: [{ field: 'status', operator: 'eq', value: 'lead' }] },
      values: { city: 'Oslo', company: '00000000-0000-7000-8000-000000000000' },
    });
    expect(rel.status).toBeGreaterThanOrEqual(400);
    expect(rel.status).toBeLessThan(500);
    expect(await everything()).toEqual(before);
    // Bad values, unknown or read-only fields, an id that does not exist: refused before writing.
    const bad = [
      { ids: [ids.Ann], values: { status: 'royalty' } },
      { ids: [ids.Ann], values: { shoe_size: 42 } },
      { ids: [ids.Ann], values: { created_at: '2020-01-01T00:00:00Z' } },
      { ids: [ids.Ann], values: { email: 'not-an-email' } },
      { ids: [ids.Ann], values: {} },
    ];
    for (const b of bad) {
      const r = await bulk({ action: 'update', object: 'contacts', ...b });
      expect(r.status, JSON.stringify(b)).toBe(400);
      expect(r.body.code).toBe('VALIDATION_ERROR');
    }
    const missing = await bulk({ action: 'update', object: 'contacts', ids: [ids.Ann, '00000000-0000-7000-8000-000000000001'], values: { city: 'Oslo' } });
    expect(missing.status).toBe(404);
    expect(missing.body.code).toBe('RECORD_NOT_FOUND');
    // Neither ids nor filter, or both; an unknown object or action.
    for (const b of [
      { action: 'update', object: 'contacts', values: { city: 'X' } },
      { action: 'update', object: 'contacts', ids: [ids.Ann], filter: { operator: 'and', conditions: [] }, values: { city: 'X' } },
      { action: 'rename', object: 'contacts', ids: [ids.Ann] },
    ]) {
      const r = await bulk(b);
      expect(r.status, JSON.stringify(b)).toBe(400);
      expect(r.body.code).toBe('VALIDATION_ERROR');
    }
    expect((await bulk({ action: 'update', object: 'widgets', ids: ['x'], values: { a: 1 } })).body.code).toBe('INVALID_OBJECT');
    expect(await everything()).toEqual(before);
  });
});

describe('bulk update dry_run', () => {
  it('reports would_change, unchanged, changes_by_field and samples, and writes nothing', async () => {
    const before = await everything();
    // Ben and Dan are qualified already; Dan is in Berlin already (Ann, Cat, Eve, Fay change status).
    const r = await bulk({ action: 'update', object: 'contacts', ids: [ids.Ann, ids.Ben, ids.Cat, ids.Dan, ids.Eve], values: { status: 'qualified', city: 'Berlin' }, dry_run: true });
    expect(r.status).toBe(200);
    const d = r.body.data;
    expect(d).toMatchObject({ action: 'update', object: 'contacts', matched: 5, dry_run: true, would_change: 4, unchanged: 1, changes_by_field: { status: 3, city: 3 } });
    expect(byId(d.samples)).toEqual(
      byId([
        { id: ids.Ann, changes: { status: ['lead', 'qualified'], city: ['Paris', 'Berlin'] } },
        { id: ids.Ben, changes: { city: ['Paris', 'Berlin'] } },
        { id: ids.Cat, changes: { status: ['lead', 'qualified'] } },
        { id: ids.Eve, changes: { status: ['customer', 'qualified'], city: ['Rome', 'Berlin'] } },
      ]),
    );
    // Nothing written: record tables, activity, associations, stage history all identical.
    expect(await everything()).toEqual(before);

    // By filter as well; then the real update does what the dry run said.
    const filter = { operator: 'and', conditions: [{ field: 'status', operator: 'in', value: ['lead', 'customer'] }] };
    const dry = (await bulk({ action: 'update', object: 'contacts', filter, values: { country: 'DE' }, dry_run: true })).body.data;
    expect(dry).toMatchObject({ matched: 4, would_change: 4, unchanged: 0, changes_by_field: { country: 4 } });
    expect(await everything()).toEqual(before);
    const actBefore = (await activity()).length;
    const real = (await bulk({ action: 'update', object: 'contacts', filter, values: { country: 'DE' } })).body.data;
    expect(real).toMatchObject({ matched: 4, updated: 4, dry_run: false });
    const changed = (await activity()).slice(actBefore).filter((a) => a.action === 'updated');
    expect(changed.map((a) => a.record_id).sort()).toEqual(dry.samples.map((s: { id: string }) => s.id).sort());
    for (const s of dry.samples) expect(JSON.parse(changed.find((a) => a.record_id === s.id)!.payload).changes).toEqual(s.changes);
  });

  it('on a pipeline object, the dry run reports exactly what the update then changes (step defaults included)', async () => {
    const before = await everything();
    const target = [ids['Deal 1'], ids['Deal 2'], ids['Deal 3']];
    const dry = (await bulk({ action: 'update', object: 'opportunities', ids: target, values: { status: 'proposal' }, dry_run: true })).body.data;
    expect(await everything()).toEqual(before);
    // Deals 1 and 2 move open -> proposal; Deal 3 is on proposal already.
    expect(dry).toMatchObject({ matched: 3, would_change: 2, unchanged: 1 });
    const act = (await activity()).length;
    const real = await bulk({ action: 'update', object: 'opportunities', ids: target, values: { status: 'proposal' } });
    expect(real.status).toBe(200);
    const updates = (await activity()).slice(act).filter((a) => a.action === 'updated');
    expect(updates.map((a) => a.record_id)).toEqual([ids['Deal 1'], ids['Deal 2']]);
    // What changed, per record, is what the dry run predicted.
    const actual = updates.map((a) => ({ id: a.record_id, changes: JSON.parse(a.payload).changes }));
    expect(byId(dry.samples)).toEqual(byId(actual));
    expect(actual[0]!.changes).toMatchObject({ status: ['open', 'proposal'], probability: [10, 50] });
    const byField: Record<string, number> = {};
    for (const u of actual) for (const f of Object.keys(u.changes)) byField[f] = (byField[f] ?? 0) + 1;
    expect(dry.changes_by_field).toEqual(byField);
    // The moves entered the stage history.
    expect((await stageHistory()).filter((h) => target.includes(h.record_id) && h.step_key === 'proposal' && h.left_at === null)).toHaveLength(3);
  });
});

describe('bulk relations', () => {
  const contactIds = () => ['Ann', 'Cat', 'Fay'].map((n) => ids[n]!);

  it('add_relation: dry run first (nothing written), then every chosen record is associated with the company', async () => {
    const filter = { operator: 'and', conditions: [{ field: 'email', operator: 'in', value: ['ann@x.test', 'cat@x.test', 'fay@x.test'] }] };
    const before = await everything();
    const dry = await bulk({ action: 'add_relation', object: 'contacts', filter, relation: { object: 'companies', id: globex }, dry_run: true });
    expect(dry.body.data).toEqual({ action: 'add_relation', object: 'contacts', matched: 3, dry_run: true, would_change: 3, unchanged: 0, relation: { object: 'companies', id: globex } });
    expect(await everything()).toEqual(before);

    const r = await bulk({ action: 'add_relation', object: 'contacts', filter, relation: { object: 'companies', id: globex } });
    expect(r.body.data).toEqual({ action: 'add_relation', object: 'contacts', matched: 3, dry_run: false, changed: 3, unchanged: 0, relation: { object: 'companies', id: globex } });
    for (const id of contactIds()) {
      const rec = (await api('GET', `/records/contacts/${id}`)).body.data;
      expect(rec.associations.companies.records).toContainEqual({ id: globex, name: 'Globex', via: 'association' });
    }
    const company = (await api('GET', `/records/companies/${globex}`)).body.data;
    expect(company.associations.contacts.total).toBe(3);
    expect(company.associations.contacts.records.map((x: { id: string }) => x.id).sort()).toEqual(contactIds().sort());
    expect(company.associations.contacts.records.every((x: { via: string }) => x.via === 'association')).toBe(true);
    // The timeline of both sides says so.
    const tl = (await api('GET', `/activity/contacts/${ids.Ann}`)).body.data;
    expect(tl[0]).toMatchObject({ action: 'associated' });
    // Again: already linked, nothing to do.
    const again = await bulk({ action: 'add_relation', object: 'contacts', ids: [...contactIds(), ids.Ben], relation: { object: 'companies', id: globex } });
    expect(again.body.data).toMatchObject({ matched: 4, changed: 1, unchanged: 3 });
    expect((await associations()).length).toBe(before.associations.length + 4);
  });

  it('remove_relation: dry run, then the links are gone from GET /records', async () => {
    const before = await everything();
    const dry = await bulk({ action: 'remove_relation', object: 'contacts', ids: [ids.Ann, ids.Ben, ids.Dan], relation: { object: 'companies', id: globex }, dry_run: true });
    expect(dry.body.data).toMatchObject({ matched: 3, dry_run: true, would_change: 2, unchanged: 1 });
    expect(await everything()).toEqual(before);
    const r = await bulk({ action: 'remove_relation', object: 'contacts', ids: [ids.Ann, ids.Ben, ids.Dan], relation: { object: 'companies', id: globex } });
    expect(r.body.data).toEqual({ action: 'remove_relation', object: 'contacts', matched: 3, dry_run: false, changed: 2, unchanged: 1, relation: { object: 'companies', id: globex } });
    const ann = (await api('GET', `/records/contacts/${ids.Ann}`)).body.data;
    expect(ann.associations.companies).toBeUndefined();
    const company = (await api('GET', `/records/companies/${globex}`)).body.data;
    expect(company.associations.contacts.records.map((x: { id: string }) => x.id).sort()).toEqual([ids.Cat, ids.Fay].sort());
    expect((await api('GET', `/activity/companies/${globex}`)).body.data[0]).toMatchObject({ action: 'dissociated' });
    // A relation target that does not exist.
    const missing = await bulk({ action: 'add_relation', object: 'contacts', ids: [ids.Ann], relation: { object: 'companies', id: '00000000-0000-7000-8000-000000000002' } });
    expect(missing.status).toBe(404);
    const noRelation = await bulk({ action: 'add_relation', object: 'contacts', ids: [ids.Ann] });
    expect(noRelation.status).toBe(400);
  });
});

describe('bulk limits', () => {
  it('a filter matching more than 10,000 records is refused (400) and nothing changes; 10,000 are accepted', async () => {
    const big = await makeWorkspace(t.db, 'bulkbig');
    const inputs = Array.from({ length: 10_001 }, (_, i) => ({ first_name: `P${i}`, last_name: i === 0 ? 'Odd' : 'Bulk' }));
    for (let i = 0; i < inputs.length; i += 5000) await createRecords(big.ctx, 'contacts', inputs.slice(i, i + 5000), { max: 5000, readBack: false });
    const req = (filter: unknown, dry_run: boolean) => call(t.app, big.adminToken, 'POST', '/api/v1/bulk', { action: 'update', object: 'contacts', filter, values: { city: 'Everywhere' }, dry_run });
    const acts = (await activity(big)).length;

    const all = { operator: 'and', conditions: [{ field: 'first_name', operator: 'starts_with', value: 'P' }] };
    for (const dry of [true, false]) {
      const r = await req(all, dry);
      expect(r.status).toBe(400);
      expect(r.body.code).toBe('VALIDATION_ERROR');
      expect(r.body.message).toMatch(/10000/);
    }
    const add = await call(t.app, big.adminToken, 'POST', '/api/v1/bulk', {
      action: 'add_relation',
      object: 'contacts',
      filter: all,
      relation: { object: 'contacts', id: (await rows('contacts', big))[0]!.id },
    });
    expect(add.status).toBe(400);
    // More than 10,000 ids.
    const many = await call(t.app, big.adminToken, 'POST', '/api/v1/bulk', { action: 'update', object: 'contacts', ids: Array.from({ length: 10_001 }, (_, i) => `id-${i}`), values: { city: 'X' } });
    expect(many.status).toBe(400);
    expect((await rows('contacts', big)).filter((x) => x.city !== null)).toHaveLength(0);
    expect(await activity(big)).toHaveLength(acts);

    // Exactly 10,000: a dry run answers for all of them.
    const ok = await req({ operator: 'and', conditions: [{ field: 'last_name', operator: 'eq', value: 'Bulk' }] }, true);
    expect(ok.status).toBe(200);
    expect(ok.body.data).toMatchObject({ matched: 10_000, would_change: 10_000, unchanged: 0, changes_by_field: { city: 10_000 } });
    expect(ok.body.data.samples.length).toBeGreaterThan(0);
    expect(ok.body.data.samples.length).toBeLessThanOrEqual(20);
  }, 20_000);
});
