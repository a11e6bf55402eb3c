import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDatabase } from '../src/db/database.js';
import { migrate } from '../src/db/migrations.js';
import { recordActivity } from '../src/services/activity.js';
import { listChanges } from '../src/services/changes.js';
import { fromDatabaseError } from '../src/services/errors.js';
import { createRecord } from '../src/services/records.js';
import { createField, createObject, getSchema } from '../src/services/schema.js';
import { searchAll } from '../src/services/search.js';
import { createWorkspace } from '../src/services/users.js';
import { call, ctxFor, dropSchemaOf, makeWorkspace, onPostgres, schemaUrl, TEST_DATABASE_URL, type TestApp, testApp } from './helpers.js';

/**
 * Behaviours where SQLite and PostgreSQL differ by default, answered the same on both (the suite
 * runs on PostgreSQL with CRM_TEST_DATABASE_URL): case folding of non-ASCII letters, the order of
 * text and of empty values, numbers PostgreSQL cannot store, integer division in histograms.
 */
let t: TestApp;
const api = (method: string, url: string, body?: unknown) => call(t.app, t.a.adminToken, method, `/api/v1${url}`, body);

beforeAll(async () => {
  t = await testApp();
  for (const [first_name, last_name] of [
    ['Élodie', 'Zola'],
    ['élise', 'apple'],
    ['Emma', 'Banana'],
    ['ÉMILE', null],
    ['zoë', 'Äpfel'],
  ])
    expect((await api('POST', '/records/contacts', { first_name, last_name })).status).toBe(201);
});
afterAll(() => t.close());

describe('the same answers on both dialects', () => {
  it('contains folds the case of non-ASCII letters, as it does for ASCII ones', async () => {
    const names = async (value: string) =>
      (await api('GET', `/records/contacts?filter_field=first_name&filter_operator=contains&filter_value=${encodeURIComponent(value)}`)).body.data
        .map((r: { first_name: string }) => r.first_name)
        .sort();
    expect(await names('él')).toEqual(['Élodie', 'élise']);
    expect(await names('ÉL')).toEqual(['Élodie', 'élise']);
    expect(await names('émile')).toEqual(['ÉMILE']);
    // Case only: an accent is a different letter (full-text search folds accents; a filter does not).
    expect(await names('EM')).toEqual(['Emma']);
  });

  it('text sorts by code point, and an empty value first ascending, last descending', async () => {
    const order = async (dir: string) => (await api('GET', `/records/contacts?sort_by=last_name&sort_dir=${dir}&fields=last_name`)).body.data.map((r: { last_name: string | null }) => r.last_name);
    expect(await order('asc')).toEqual([null, 'Banana', 'Zola', 'apple', 'Äpfel']);
    expect(await order('desc')).toEqual(['Äpfel', 'apple', 'Zola', 'Banana', null]);
  });

  it('a number too small to store (subnormal) is refused with 400, not a 500', async () => {
    const r = await api('POST', '/records/opportunities', { name: 'Tiny', amount: 1, probability: 5e-324 });
    expect(r.status).toBe(400);
    expect(r.body).toMatchObject({ error: true, code: 'VALIDATION_ERROR', message: expect.stringContaining('2.3e-308') });
  });

  it('groups by a text field: the empty group first, then code-point order', async () => {
    const r = await api('POST', '/aggregate/contacts', { groupBy: ['last_name'], order: { by: 'group', dir: 'asc' } });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(r.body.data.groups.map((g: { last_name: string | null }) => g.last_name)).toEqual([null, 'Banana', 'Zola', 'apple', 'Äpfel']);
  });
});

describe('the change feed follows commit order', () => {
  // On SQLite one writer at a time makes ids follow commits; PostgreSQL assigns ids before commit.
  it.runIf(onPostgres)('an entry committed late with a lower id is not skipped by a poller', async () => {
    const ctx = t.a.ctx;
    const start = await listChanges(ctx, {});
    let cursor = start.next_cursor;
    while ((await listChanges(ctx, { since: cursor })).data.length) cursor = (await listChanges(ctx, { since: cursor })).next_cursor;
    // T1 appends its entry first and stays open; T2 (a create) runs and commits meanwhile.
    const t1 = await ctx.db.kysely.startTransaction().execute();
    await recordActivity(t1, ctx, [{ object: 'contacts', recordId: 'late-entry', action: 'created' }]);
    const t2 = createRecord(ctx, 'contacts', { first_name: 'Second' });
    await new Promise((r) => setTimeout(r, 300));
    const mid = await listChanges(ctx, { since: cursor });
    await t1.commit().execute();
    const created = await t2;
    const rest = await listChanges(ctx, { since: mid.next_cursor });
    const seen = [...mid.data, ...rest.data].map((e) => e.record_id);
    expect(seen).toEqual(['late-entry', created.id]);
  });
});

describe('two processes on one PostgreSQL database: caches follow the other one through notifications', () => {
  it.runIf(onPostgres)('a schema change and new words made through one handle are seen through the other, without a version query per request', async () => {
    const location = schemaUrl(TEST_DATABASE_URL!);
    const a = openDatabase({ file: location });
    await migrate(a);
    const b = openDatabase({ file: location });
    try {
      const w = await makeWorkspace(a, 'shared');
      const inB = ctxFor(b, w.workspace.id, w.admin.id, 'admin');
      await expect.poll(() => b.schemaToken!(w.workspace.id)).not.toBeNull();
      const first = await getSchema(inB);
      // Nothing changed: the very same schema object, read without asking the database.
      expect(await getSchema(inB)).toBe(first);
      await createField(w.ctx, 'contacts', { name: 'shoe_size', type: 'INTEGER' });
      await expect.poll(async () => (await getSchema(inB)).objects.get('contacts')!.byName.has('shoe_size'), { timeout: 2000 }).toBe(true);
      expect((await createRecord(inB, 'contacts', { first_name: 'Jonathan', shoe_size: 44 })).shoe_size).toBe(44);
      // At once, before any notification could arrive: a field or an object made through A is used through B.
      for (let i = 0; i < 10; i++) {
        await createField(w.ctx, 'contacts', { name: `f${i}`, type: 'TEXT' });
        expect((await createRecord(inB, 'contacts', { first_name: 'At once', [`f${i}`]: 'x' }))[`f${i}`]).toBe('x');
      }
      await createObject(w.ctx, { name: 'gadgets', fields: [{ name: 'title', type: 'TEXT' }] });
      expect((await createRecord(inB, 'gadgets', { title: 'made through A' })).title).toBe('made through A');
      // B's typo-tolerant search knows the words A writes next.
      expect((await searchAll(inB, { q: 'Bartholomew' })).data).toHaveLength(0);
      await createRecord(w.ctx, 'contacts', { first_name: 'Bartholomew' });
      await expect.poll(async () => (await searchAll(inB, { q: 'Bartholomev' })).data.map((h) => h.name), { timeout: 2000 }).toEqual(['Bartholomew']);
    } finally {
      await b.close();
      await a.close();
      await dropSchemaOf(location);
    }
  });
});

describe('what PostgreSQL refuses where SQLite does not answers 4xx or 503, never 500 (found by review)', () => {
  it('a word of 8,000 letters is stored and found; a very long value in an indexed field is 201 or 400', async () => {
    const word = 'q'.repeat(8000);
    const r = await api('POST', '/records/contacts', { first_name: word });
    expect(r.status, JSON.stringify(r.body).slice(0, 200)).toBe(201);
    const long = await api('POST', '/records/contacts', { first_name: 'Long', last_name: Array.from({ length: 1000 }, (_, i) => `w${i}abcd`).join(' ') });
    expect([201, 400]).toContain(long.status);
    if (long.status === 400) expect(long.body).toMatchObject({ error: true, code: 'VALIDATION_ERROR' });
  });

  it('a tampered cursor is a 400', async () => {
    const page = await api('GET', '/records/contacts?limit=1&sort_by=first_name');
    const c = JSON.parse(Buffer.from(page.body.nextCursor, 'base64url').toString());
    for (const bad of [
      { ...c, s: 1.5 },
      { ...c, s: 1e30 },
      { ...c, v: 'a\u0000' },
      { ...c, u: 2 },
      { ...c, u: true },
    ]) {
      const r = await api('GET', `/records/contacts?limit=1&sort_by=first_name&cursor=${Buffer.from(JSON.stringify(bad)).toString('base64url')}`);
      expect(r.status, JSON.stringify(bad)).toBe(400);
    }
  });

  it('a histogram interval whose buckets cannot be computed is a 400', async () => {
    expect((await api('POST', '/records/opportunities', { name: 'Big', amount: 12_345 })).status).toBe(201);
    for (const interval of [1e307, 1e-300]) {
      const r = await api('POST', '/aggregate/opportunities/tree', { aggregates: { h: { numberHistogram: { property: 'amount', interval } } } });
      expect([200, 400], `${interval}: ${JSON.stringify(r.body).slice(0, 200)}`).toContain(r.status);
      if (r.status === 400) expect(r.body).toMatchObject({ error: true, code: 'VALIDATION_ERROR' });
    }
  });

  it('a time zone alias Node accepts (US/Pacific-New) buckets as its canonical zone', async () => {
    const r = await api('POST', '/aggregate/contacts/tree', { aggregates: { m: { timeHistogram: { property: 'created_at', calendarInterval: '1d', timeZone: 'US/Pacific-New' } } } });
    expect(r.status, JSON.stringify(r.body).slice(0, 300)).toBe(200);
  });

  it.runIf(onPostgres)('a database that cannot be reached answers 503 with Retry-After', async () => {
    const down = openDatabase({ file: 'postgres://postgres@127.0.0.1:1/test' });
    try {
      const e = await createWorkspace(down, 'nowhere').catch((err: unknown) => err);
      expect(fromDatabaseError(e)).toMatchObject({ code: 'SERVICE_UNAVAILABLE', status: 503 });
    } finally {
      await down.close();
    }
  });
});
