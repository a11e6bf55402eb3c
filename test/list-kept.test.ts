import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { setClock } from '../src/services/clock.js';
import { DECODED_TYPES, decodeValue, FIELD_TYPES, type FieldDef } from '../src/services/field-types.js';
import { compileFilterKept } from '../src/services/filters.js';
import { getSchema } from '../src/services/schema.js';
import { call, type TestApp, testApp } from './helpers.js';

/**
 * Light listings' statements are compiled once and kept (the plain pages and count by table and
 * order, a filter by its text with the object's schema, the acting user and the zone), then run with
 * each request's cursor values and limit. What is kept must never answer another question: another
 * cursor, another user's 'me', another day's 'today', another workspace's field of the same name,
 * a schema changed since, or the rows written since.
 */

type Rec = Record<string, any> & { id: string };

function qs(params: Record<string, string | number | undefined>): string {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined) p.set(k, String(v));
  return p.toString();
}

const api = (t: TestApp, token: string) => (method: string, url: string, body?: unknown) => call(t.app, token, method, `/api/v1${url}`, body);

/** Every page of a listing, following nextCursor; each page's total with it. */
async function pageAll(get: ReturnType<typeof api>, path: string, params: Record<string, string | number | undefined>) {
  const rows: Rec[] = [];
  const totals: (number | null)[] = [];
  let cursor: string | undefined;
  for (let pages = 0; pages < 1000; pages++) {
    const r = await get('GET', `${path}?${qs({ ...params, cursor })}`);
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    rows.push(...r.body.data);
    totals.push(r.body.total);
    if (r.body.nextCursor === null) return { rows, totals };
    cursor = r.body.nextCursor;
  }
  throw new Error('more than 1000 pages');
}

const STATUSES = ['open', 'qualified', 'proposal', 'negotiation'];

/** The expected listing: records matching `keep`, by amount (empty lowest), then newest first as a tie-break is the service's seq order; compared as sets of ids per amount. */
function amountsOf(rows: Rec[]): (number | null)[] {
  return rows.map((r) => r.amount);
}

describe('kept list statements (light listings)', () => {
  let t: TestApp;
  let admin: ReturnType<typeof api>;
  let member: ReturnType<typeof api>;
  let all: Rec[] = [];
  const filters = JSON.stringify({
    operator: 'and',
    conditions: [
      { field: 'status', operator: 'in', value: ['open', 'proposal'] },
      { field: 'amount', operator: 'gte', value: 100 },
    ],
  });
  const matches = (r: Rec) => ['open', 'proposal'].includes(r.status) && r.amount !== null && r.amount >= 100;

  beforeAll(async () => {
    t = await testApp();
    admin = api(t, t.a.adminToken);
    member = api(t, t.a.memberToken);
    // Amounts with ties (several records share each), some empty; statuses in turn.
    const records = Array.from({ length: 40 }, (_, i) => ({
      name: `deal ${i}`,
      amount: i % 7 === 0 ? null : 50 * (i % 5),
      status: STATUSES[i % STATUSES.length],
      close_date: `2026-03-${String(10 + (i % 3)).padStart(2, '0')}`,
      owner: i % 2 ? t.a.member.id : t.a.admin.id,
    }));
    const r = await admin('POST', '/records/opportunities/batch/create', { records: records });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    all = r.body.data;
  });
  afterAll(() => t.close());
  afterEach(() => setClock(null));

  for (const dir of ['asc', 'desc'] as const) {
    it(`a filtered listing paged with ties, asked twice, then after writes in and out of the filter (${dir})`, async () => {
      for (let round = 0; round < 2; round++) {
        const { rows, totals } = await pageAll(admin, '/records/opportunities', { filters, sort_by: 'amount', sort_dir: dir, limit: 3 });
        const expected = all.filter(matches);
        expect(new Set(totals)).toEqual(new Set([expected.length]));
        expect(rows.map((r) => r.id).sort()).toEqual(expected.map((r) => r.id).sort());
        const sorted = [...amountsOf(expected)].sort((a, b) => (a as number) - (b as number));
        expect(amountsOf(rows)).toEqual(dir === 'asc' ? sorted : sorted.reverse());
      }
      // A record that enters the filter, one that leaves it: the kept statements read the rows anew.
      const added = await admin('POST', '/records/opportunities', { name: `late ${dir}`, amount: 150, status: 'proposal' });
      expect(added.status).toBe(201);
      const leaving = all.find((r) => matches(r))!;
      expect((await admin('PATCH', `/records/opportunities/${leaving.id}`, { status: 'negotiation' })).status).toBe(200);
      all = [...all.filter((r) => r.id !== leaving.id), added.body.data, { ...leaving, status: 'negotiation' }];
      const { rows, totals } = await pageAll(admin, '/records/opportunities', { filters, sort_by: 'amount', sort_dir: dir, limit: 4 });
      expect(new Set(totals)).toEqual(new Set([all.filter(matches).length]));
      expect(rows.map((r) => r.id).sort()).toEqual(
        all
          .filter(matches)
          .map((r) => r.id)
          .sort(),
      );
    });
  }

  it("'me' is the asking user's, with the same filter text", async () => {
    const mine = JSON.stringify({ operator: 'and', conditions: [{ field: 'owner', operator: 'eq', value: 'me' }] });
    for (let round = 0; round < 2; round++) {
      const a = await pageAll(admin, '/records/opportunities', { filters: mine, limit: 7 });
      const m = await pageAll(member, '/records/opportunities', { filters: mine, limit: 7 });
      expect(a.rows.length).toBeGreaterThan(0);
      expect(m.rows.length).toBeGreaterThan(0);
      expect(new Set(a.rows.map((r) => r.owner))).toEqual(new Set([t.a.admin.id]));
      expect(new Set(m.rows.map((r) => r.owner))).toEqual(new Set([t.a.member.id]));
    }
  });

  it("a relative date ('today') is read on the day asked, the same filter text on two days", async () => {
    const today = JSON.stringify({ operator: 'and', conditions: [{ field: 'close_date', operator: 'eq', value: 'today' }] });
    for (const day of ['2026-03-10', '2026-03-11', '2026-03-10', '2026-03-12']) {
      // Noon UTC: the same calendar day in the workspace's zone (UTC by default).
      setClock(Date.parse(`${day}T12:00:00Z`));
      const { rows, totals } = await pageAll(admin, '/records/opportunities', { filters: today, limit: 5 });
      const expected = all.filter((r) => r.close_date === day);
      expect(expected.length).toBeGreaterThan(0);
      expect(rows.map((r) => r.id).sort()).toEqual(expected.map((r) => r.id).sort());
      expect(new Set(totals)).toEqual(new Set([expected.length]));
    }
  });

  it('one filter text in two workspaces whose field of that name has another type; a field added at runtime', async () => {
    const beta = api(t, t.b.adminToken);
    const code = JSON.stringify({ operator: 'and', conditions: [{ field: 'code', operator: 'eq', value: '7' }] });
    // Not a field yet: refused, and nothing of it kept.
    expect((await admin('GET', `/records/opportunities?${qs({ filters: code })}`)).status).toBe(400);
    expect((await admin('POST', '/schema/opportunities/fields', { name: 'code', type: 'TEXT', indexed: true })).status).toBe(201);
    expect((await beta('POST', '/schema/opportunities/fields', { name: 'code', type: 'INTEGER', indexed: true })).status).toBe(201);
    const a7 = (await admin('POST', '/records/opportunities', { name: 'a seven', code: '7' })).body.data;
    await admin('POST', '/records/opportunities', { name: 'a oh-seven', code: '07' });
    const b7 = (await beta('POST', '/records/opportunities', { name: 'b seven', code: 7 })).body.data;
    await beta('POST', '/records/opportunities', { name: 'b eight', code: 8 });
    for (let round = 0; round < 2; round++) {
      const a = await admin('GET', `/records/opportunities?${qs({ filters: code })}`);
      const b = await beta('GET', `/records/opportunities?${qs({ filters: code })}`);
      expect(a.body.data.map((r: Rec) => r.id)).toEqual([a7.id]);
      expect(a.body.data[0].code).toBe('7');
      expect(b.body.data.map((r: Rec) => r.id)).toEqual([b7.id]);
      expect(b.body.data[0].code).toBe(7);
      expect([a.body.total, b.body.total]).toEqual([1, 1]);
    }
    // Another field added: the schema is new, and the kept statements (which list every field) with it.
    expect((await admin('POST', '/schema/opportunities/fields', { name: 'region', type: 'TEXT' })).status).toBe(201);
    const after = await admin('GET', `/records/opportunities?${qs({ filters: code })}`);
    expect(after.body.data.map((r: Rec) => r.id)).toEqual([a7.id]);
    expect(after.body.data[0]).toHaveProperty('region', null);
  });

  it('compileFilterKept: one compiled filter for one text, user and zone; none kept for values JSON would not write as they are, or a clock read', async () => {
    const schema = await getSchema(t.a.ctx);
    const obj = schema.objects.get('opportunities')!;
    const adapter = t.db.adapter;
    const f = (value: unknown) => ({ operator: 'and', conditions: [{ field: 'amount', operator: 'in', value }] });
    const one = compileFilterKept(obj, adapter, f([1, 2]), schema, { userId: 'u1' });
    const again = compileFilterKept(obj, adapter, JSON.parse(JSON.stringify(f([1, 2]))), schema, { userId: 'u1' });
    expect(one.key).toBeDefined();
    expect(again.key).toBe(one.key);
    expect(again.where).toBe(one.where);
    expect(compileFilterKept(obj, adapter, f([1, 2]), schema, { userId: 'u2' }).key).not.toBe(one.key);
    expect(compileFilterKept(obj, adapter, f([1, 2]), schema, { userId: 'u1', timeZone: 'Europe/Paris' }).key).not.toBe(one.key);
    // Values JSON would not write as they are (NaN and undefined in a list become null, a Date a
    // string): never kept under the text of another filter, whether or not they compile.
    const keyOf = (input: unknown) => {
      try {
        return compileFilterKept(obj, adapter, input, schema).key;
      } catch {
        return undefined;
      }
    };
    expect(keyOf(f([1, Number.NaN]))).toBeUndefined();
    expect(keyOf(f([1, undefined]))).toBeUndefined();
    expect(keyOf({ operator: 'and', conditions: [{ field: 'close_date', operator: 'eq', value: new Date(0) }] })).toBeUndefined();
    // A relative date: compiled each time.
    const today = { operator: 'and', conditions: [{ field: 'close_date', operator: 'eq', value: 'today' }] };
    const r1 = compileFilterKept(obj, adapter, today, schema);
    const r2 = compileFilterKept(obj, adapter, today, schema);
    expect(r1.key).toBeUndefined();
    expect(r2.where).not.toBe(r1.where);
  });
});

describe('compiled record decoders', () => {
  it('read as stored exactly the types decodeValue leaves as they are', () => {
    // record-rows' decoders call decodeValue only for DECODED_TYPES: a type decodeValue changes must be listed.
    for (const type of FIELD_TYPES) {
      const f = { name: 'x', column: 'x', type } as FieldDef;
      const changes = [1, 0, 1250, '["a"]', 'text'].some((v) => !Object.is(decodeValue(f, v), v));
      expect([type, changes]).toEqual([type, DECODED_TYPES.has(type)]);
    }
  });
});
