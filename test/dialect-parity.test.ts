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
  it.runIf(onPostgres)(
    'a schema change and new words made through one handle are seen through the other, without a version query per request',
    async () => {
      const location = schemaUrl(TEST_DATABASE_URL!);
      const a = openDatabase({ file: location });
      await migrate(a);
      const b = openDatabase({ file: location });
      try {
        const w = await makeWorkspace(a, 'shared');
        const inB = ctxFor(b, w.workspace.id, w.admin.id, 'admin');
        // The listening connection is live (a new backend: it may take a while on a loaded server).
        await expect.poll(() => b.schemaToken!(w.workspace.id), { timeout: 20_000 }).not.toBeNull();
        const first = await getSchema(inB);
        // Nothing changed: the very same schema object, read without asking the database.
        expect(await getSchema(inB)).toBe(first);
        await createField(w.ctx, 'contacts', { name: 'shoe_size', type: 'INTEGER' });
        await expect.poll(async () => (await getSchema(inB)).objects.get('contacts')!.byName.has('shoe_size'), { timeout: 20_000 }).toBe(true);
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
        await expect.poll(async () => (await searchAll(inB, { q: 'Bartholomev' })).data.map((h) => h.name), { timeout: 20_000 }).toEqual(['Bartholomew']);
      } finally {
        await b.close();
        await a.close();
        await dropSchemaOf(location);
      }
    },
    90_000,
  );
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

  it('a SystemV zone (a name Node accepts, PostgreSQL reads as a POSIX rule, their clocks disagreeing near changes) is refused with 400, naming an IANA zone', async () => {
    // Node (ICU) keeps SystemV/EST5EDT with rules of its own: at 2026-03-08 07:01Z it reads 02:01,
    // PostgreSQL 03:01. Neither is America/New_York's history; the names left the tz database.
    for (const timeZone of ['SystemV/EST5EDT', 'SystemV/AST4', 'systemv/pst8pdt']) {
      const r = await api('POST', '/aggregate/contacts/tree', { aggregates: { m: { timeHistogram: { property: 'created_at', calendarInterval: '1d', timeZone } } } });
      expect(r.status, `${timeZone}: ${JSON.stringify(r.body).slice(0, 300)}`).toBe(400);
      expect(r.body).toMatchObject({ error: true, code: 'VALIDATION_ERROR' });
      expect(r.body.message).toMatch(/America\/New_York/);
      const w = await api('PATCH', '/workspace', { time_zone: timeZone });
      expect(w.status, JSON.stringify(w.body)).toBe(400);
    }
    // The zones and aliases of the tz database stay accepted, fixed offsets included.
    for (const timeZone of ['EST5EDT', 'Etc/GMT+5', 'UTC', 'Etc/UTC', 'Asia/Kathmandu']) {
      const r = await api('POST', '/aggregate/contacts/tree', { aggregates: { m: { timeHistogram: { property: 'created_at', calendarInterval: '1d', timeZone } } } });
      expect(r.status, `${timeZone}: ${JSON.stringify(r.body).slice(0, 300)}`).toBe(200);
    }
  });

  it('instants near the ends of years 0001-9999: refused where a zone would move them out (PostgreSQL has no year 0), bucketed the same on both, without sampling ten thousand years', async () => {
    expect((await api('POST', '/schema', { name: 'moments', fields: [{ name: 'at', type: 'DATETIME' }] })).status).toBe(201);
    for (const at of ['0001-01-01T01:00:00Z', '9999-12-31T23:00:00Z']) {
      const r = await api('POST', '/records/moments', { at });
      expect(r.status, JSON.stringify(r.body)).toBe(400);
      expect(r.body.message).toMatch(/0001-01-02 and 9999-12-30/);
    }
    const ats = ['0001-01-02T01:00:00Z', '0001-03-01T12:00:00Z', '2026-03-08T06:59:00Z', '2026-03-08T07:01:00Z', '9999-06-30T12:00:00Z', '9999-12-30T23:00:00Z'];
    for (const at of ats) expect((await api('POST', '/records/moments', { at })).status).toBe(201);
    // The oracle: the local calendar date in the zone, by Intl, cut to the bucket's start.
    const local = (iso: string, timeZone: string) => {
      const p = Object.fromEntries(new Intl.DateTimeFormat('en-US', { timeZone, year: 'numeric', month: '2-digit', day: '2-digit' }).formatToParts(new Date(iso)).map((x) => [x.type, x.value]));
      return `${p.year!.padStart(4, '0')}-${p.month}-${p.day}`;
    };
    const cut = { '1d': (d: string) => d, '1M': (d: string) => `${d.slice(0, 7)}-01`, '1y': (d: string) => `${d.slice(0, 4)}-01-01` };
    for (const timeZone of ['America/New_York', 'Asia/Tokyo', 'UTC', 'Pacific/Kiritimati'])
      for (const calendarInterval of ['1d', '1M', '1y'] as const) {
        const h = await api('POST', '/aggregate/moments/tree', { aggregates: { m: { timeHistogram: { property: 'at', calendarInterval, timeZone } } } });
        expect(h.status, `${timeZone} ${calendarInterval}: ${JSON.stringify(h.body).slice(0, 300)}`).toBe(200);
        const expected = new Map<string, number>();
        for (const at of ats) expected.set(cut[calendarInterval](local(at, timeZone)), (expected.get(cut[calendarInterval](local(at, timeZone))) ?? 0) + 1);
        const got = new Map(h.body.aggregates.m.timeHistogramBuckets.map((b: { start: string; count: number }) => [b.start, b.count]));
        expect(got, `${timeZone} ${calendarInterval}`).toEqual(expected);
      }
  });

  it('an ASCII pattern matches letters that lowercase to ASCII (the Kelvin sign, dotted İ) as JavaScript folds them, on both', async () => {
    for (const first_name of ['\u212Aelvin', 'İsmail', 'Kate']) expect((await api('POST', '/records/contacts', { first_name, last_name: 'Fold' })).status).toBe(201);
    const names = async (value: string) =>
      (await api('GET', `/records/contacts?filter_field=first_name&filter_operator=contains&filter_value=${encodeURIComponent(value)}&limit=100`)).body.data
        .map((r: { first_name: string }) => r.first_name)
        .filter((n: string) => ['\u212Aelvin', 'İsmail', 'Kate'].includes(n))
        .sort();
    const oracle = (value: string) => ['\u212Aelvin', 'İsmail', 'Kate'].filter((n) => n.toLowerCase().includes(value.toLowerCase())).sort();
    for (const value of ['kelvin', 'KEL', 'k', 'ismail', 'i̇smail', 'smail', 'Kate']) expect(await names(value), value).toEqual(oracle(value));
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
