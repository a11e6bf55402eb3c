import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRecords } from '../src/services/records.js';
import { OPPORTUNITY_STATUSES } from '../src/services/system-objects.js';
import { cmpValue, decimal, expectNear, present, prng, type Rec, toCents } from './aggregate-reference.js';
import { call, listAll, type TestApp, testApp } from './helpers.js';

/**
 * Kasar style: GET /api/v1/aggregate/{object}. Every example of kasar-aggregate.txt, run against
 * our objects through HTTP, and checked against values computed here in plain JavaScript over the
 * records read back through the records service (never numbers copied from an answer).
 */

// ---------------------------------------------------------------------------------------------
// The JavaScript reference (documented semantics; shared pieces in aggregate-reference.ts)

function agg(fn: string, rs: Rec[], f: string, currency = false): unknown {
  const vs = present(rs, f);
  switch (fn) {
    case 'COUNT':
      return f === 'id' ? rs.length : vs.length;
    case 'COUNT_DISTINCT':
      return new Set(vs.map((v) => JSON.stringify(v))).size;
    case 'SUM':
      return currency ? decimal(vs.reduce((s: bigint, v) => s + toCents(v), 0n)) : vs.reduce((s: number, v) => s + (v as number), 0);
    case 'AVG':
      return vs.length ? (vs as number[]).reduce((s, v) => s + v, 0) / vs.length : null;
    case 'MIN':
    case 'MAX': {
      if (!vs.length) return null;
      const sorted = [...vs].sort(cmpValue);
      return fn === 'MIN' ? sorted[0] : sorted[sorted.length - 1];
    }
  }
  throw new Error(fn);
}

interface RefGroup {
  group: unknown;
  value: unknown;
  count: number;
}

function groupBy(rs: Rec[], key: (r: Rec) => unknown): Map<unknown, Rec[]> {
  const m = new Map<unknown, Rec[]>();
  for (const r of rs) {
    const k = key(r) ?? null;
    m.set(k, [...(m.get(k) ?? []), r]);
  }
  return m;
}

/** Groups ordered by count descending, then by group value ascending (null first). */
function refGroups(rs: Rec[], field: string, fn: string, by: string, currency = false, key?: (r: Rec) => unknown): RefGroup[] {
  const groups = [...groupBy(rs, key ?? ((r) => r[by])).entries()].map(([group, members]) => ({ group, value: agg(fn, members, field, currency), count: members.length }));
  return groups.sort((x, y) => y.count - x.count || cmpValue(x.group, y.group));
}

function monthOf(d: unknown): string | null {
  return typeof d === 'string' ? `${d.slice(0, 7)}-01` : null;
}

// ---------------------------------------------------------------------------------------------

describe('Kasar aggregate (GET /api/v1/aggregate/{object})', () => {
  let t: TestApp;
  let contacts: Rec[];
  let companies: Rec[];
  let opps: Rec[];
  const get = (url: string) => call(t.app, t.a.adminToken, 'GET', `/api/v1/aggregate/${url}`);

  beforeAll(async () => {
    t = await testApp();
    const r = prng(20260401);
    const names = ['Acme', 'Globex', 'Initech', 'Umbrella', 'Hooli', 'Stark'];
    const countries = ['France', 'Germany', 'Japan', null];
    const co = await createRecords(
      t.a.ctx,
      'companies',
      Array.from({ length: 40 }, () => ({ name: r.pick(names), country: r.pick(countries), employees: r.next() < 0.2 ? null : r.int(1, 5000) })),
    );
    await createRecords(
      t.a.ctx,
      'contacts',
      Array.from({ length: 37 }, (_, i) => ({ first_name: `P${i}`, company: r.next() < 0.7 ? r.pick(co).id : null })),
    );
    for (let batch = 0; batch < 2; batch++)
      await createRecords(
        t.a.ctx,
        'opportunities',
        Array.from({ length: 70 }, (_, i) => ({
          name: `Deal ${batch}-${i}`,
          // Cents that drift in floating point (0.1 + 0.2 ...), and some empty amounts.
          amount: r.next() < 0.12 ? null : r.int(1, 2_000_000) / 100,
          // Skewed, so that groups have different sizes; some statuses share a count.
          status: r.pick([...OPPORTUNITY_STATUSES, 'open', 'open', 'proposal', 'closed_won']),
          close_date: r.next() < 0.15 ? null : `2026-0${r.int(1, 6)}-${String(r.int(1, 28)).padStart(2, '0')}`,
          company: r.next() < 0.8 ? r.pick(co).id : null,
        })),
      );
    // Workspace B's records must never show up in A's answers.
    await createRecords(t.b.ctx, 'opportunities', [{ name: 'B deal', amount: 999_999, status: 'closed_won' }]);
    await createRecords(t.b.ctx, 'contacts', [{ first_name: 'B person' }]);
    contacts = await listAll(t.a.ctx, 'contacts');
    companies = await listAll(t.a.ctx, 'companies');
    opps = await listAll(t.a.ctx, 'opportunities');
    expect(contacts).toHaveLength(37);
    expect(opps).toHaveLength(140);
  });
  afterAll(() => t?.close());

  describe('the examples of kasar-aggregate.txt', () => {
    it('counts all contacts (field=id&function=COUNT): the scalar shape', async () => {
      const r = await get('contacts?field=id&function=COUNT');
      expect(r.status).toBe(200);
      expect(r.body).toEqual({ object_name: 'contacts', field: 'id', function: 'COUNT', value: contacts.length, count: contacts.length });
    });

    it('sums opportunity amounts exactly', async () => {
      const r = await get('opportunities?field=amount&function=SUM');
      expect(r.status).toBe(200);
      const expected = agg('SUM', opps, 'amount', true);
      expect(r.body).toEqual({ object_name: 'opportunities', field: 'amount', function: 'SUM', value: expected, count: opps.length });
      // The reference is exact; a float running sum of the same amounts is not always.
      expect(typeof expected).toBe('number');
    });

    it('averages deal size grouped by status: the grouped shape', async () => {
      const r = await get('opportunities?field=amount&function=AVG&group_by=status');
      expect(r.status).toBe(200);
      const results = refGroups(opps, 'amount', 'AVG', 'status');
      expect(results.length).toBeGreaterThan(3);
      expectNear(r.body, {
        object_name: 'opportunities',
        field: 'amount',
        function: 'AVG',
        group_by: 'status',
        results,
        value: agg('AVG', opps, 'amount'),
        count: opps.length,
        meta: { totalRecords: opps.length, recordsProcessed: opps.length, truncated: false, groupTotal: results.length, groupsTruncated: false, otherCount: 0 },
      });
    });

    it('counts distinct company names per country, the null country included', async () => {
      const r = await get('companies?field=name&function=COUNT_DISTINCT&group_by=country');
      expect(r.status).toBe(200);
      const results = refGroups(companies, 'name', 'COUNT_DISTINCT', 'country');
      expect(results.some((g) => g.group === null)).toBe(true);
      expect(r.body.results).toEqual(results);
      expect(r.body.value).toBe(agg('COUNT_DISTINCT', companies, 'name'));
      expect(r.body.meta.groupTotal).toBe(new Set(companies.map((c) => c.country ?? null)).size);
    });

    it('sums revenue with a filter (status equals closed_won)', async () => {
      const r = await get('opportunities?field=amount&function=SUM&filter_field=status&filter_operator=equals&filter_value=closed_won');
      expect(r.status).toBe(200);
      const won = opps.filter((o) => o.status === 'closed_won');
      expect(won.length).toBeGreaterThan(0);
      expect(r.body).toEqual({ object_name: 'opportunities', field: 'amount', function: 'SUM', value: agg('SUM', won, 'amount', true), count: won.length });
    });

    it('finds the max deal value', async () => {
      const r = await get('opportunities?field=amount&function=MAX');
      expect(r.status).toBe(200);
      expect(r.body).toEqual({ object_name: 'opportunities', field: 'amount', function: 'MAX', value: Math.max(...(present(opps, 'amount') as number[])), count: opps.length });
    });
  });

  describe('functions on any field type', () => {
    it('COUNT of a field counts the records where it has a value; COUNT of id counts records', async () => {
      const r = await get('opportunities?field=amount&function=COUNT');
      expect(r.body.value).toBe(present(opps, 'amount').length);
      expect(r.body.value).toBeLessThan(opps.length);
    });

    it.each([
      ['opportunities', 'close_date', 'MIN'],
      ['opportunities', 'close_date', 'MAX'],
      ['opportunities', 'name', 'MIN'],
      ['companies', 'name', 'MAX'],
      ['opportunities', 'status', 'MIN'],
      ['opportunities', 'company', 'COUNT_DISTINCT'],
      ['companies', 'employees', 'SUM'],
      ['companies', 'employees', 'AVG'],
      ['opportunities', 'probability', 'MAX'],
      ['opportunities', 'probability', 'SUM'],
    ])('%s %s %s', async (object, field, fn) => {
      const r = await get(`${object}?field=${field}&function=${fn}`);
      expect(r.status).toBe(200);
      const rs = object === 'companies' ? companies : opps;
      expectNear(r.body.value, agg(fn, rs, field));
    });

    it('accepts the function name in any case', async () => {
      const r = await get('opportunities?field=amount&function=sum');
      expect(r.body.function).toBe('SUM');
      expect(r.body.value).toBe(agg('SUM', opps, 'amount', true));
    });
  });

  describe('errors', () => {
    it('answers INVALID_OBJECT (400) for an object that does not exist', async () => {
      const r = await get('invoices?field=id&function=COUNT');
      expect(r.status).toBe(400);
      expect(r.body.code).toBe('INVALID_OBJECT');
      expect(r.body.message).toContain('opportunities');
    });

    it('answers VALIDATION_ERROR for an unknown field, listing the valid ones', async () => {
      const r = await get('opportunities?field=revenue&function=SUM');
      expect(r.status).toBe(400);
      expect(r.body.code).toBe('VALIDATION_ERROR');
      expect(r.body.message).toContain("'revenue'");
      expect(r.body.details.validFields).toEqual(expect.arrayContaining(['amount', 'status', 'close_date']));
      const g = await get('opportunities?field=amount&function=SUM&group_by=stage');
      expect(g.status).toBe(400);
      expect(g.body.code).toBe('VALIDATION_ERROR');
      expect(g.body.message).toContain("'stage'");
    });

    it.each([
      ['opportunities', 'name', 'SUM', 'TEXT'],
      ['opportunities', 'status', 'AVG', 'SELECT'],
      ['opportunities', 'close_date', 'SUM', 'DATE'],
      ['opportunities', 'company', 'AVG', 'RELATION'],
      ['contacts', 'do_not_contact', 'SUM', 'BOOLEAN'],
      ['contacts', 'last_contacted_at', 'AVG', 'DATETIME'],
    ])('rejects %s.%s with %s (a %s field)', async (object, field, fn, type) => {
      const r = await get(`${object}?field=${field}&function=${fn}`);
      expect(r.status).toBe(400);
      expect(r.body.code).toBe('VALIDATION_ERROR');
      expect(r.body.message).toContain(type);
      expect(r.body.message).toContain('NUMBER, CURRENCY, PERCENTAGE, FLOAT or INTEGER');
    });

    it('accepts SUM and AVG on NUMBER, CURRENCY, PERCENTAGE, FLOAT and INTEGER fields', async () => {
      const s = await call(t.app, t.a.adminToken, 'POST', '/api/v1/schema', {
        name: 'measures',
        fields: [
          { name: 'label', type: 'TEXT' },
          { name: 'n', type: 'NUMBER' },
          { name: 'c', type: 'CURRENCY' },
          { name: 'p', type: 'PERCENTAGE' },
          { name: 'f', type: 'FLOAT' },
          { name: 'i', type: 'INTEGER' },
        ],
      });
      expect(s.status).toBe(201);
      const rows = [{ label: 'x', n: 1.5, c: 0.1, p: 12.5, f: 0.25, i: 1 }, { label: 'y', n: 2, c: 0.2, p: 50, f: 0.5, i: 2 }, { label: 'z' }];
      await createRecords(t.a.ctx, 'measures', rows);
      for (const field of ['n', 'c', 'p', 'f', 'i'])
        for (const fn of ['SUM', 'AVG']) {
          const r = await get(`measures?field=${field}&function=${fn}`);
          expect(r.status, `${field} ${fn}`).toBe(200);
          expectNear(r.body.value, agg(fn, rows, field, field === 'c'));
        }
      // 0.1 + 0.2 is 0.3 here, not 0.30000000000000004.
      expect((await get('measures?field=c&function=SUM')).body.value).toBe(0.3);
      expect((await get('measures?field=i&function=AVG')).body.value).toBe(1.5);
    });

    it.each([
      ['filter_field=status', 'filter_field and filter_operator'],
      ['filter_field=status&filter_value=open', 'filter_field and filter_operator'],
      ['filter_field=status&filter_operator=equals', 'filter_value is required'],
      ['filter_operator=equals&filter_value=open', 'filter_field and filter_operator'],
      ['filter_value=open', 'filter_field and filter_operator'],
      ['filter_field=status&filter_operator=resembles&filter_value=open', 'Valid operators for status (SELECT)'],
    ])('rejects an incomplete filter: %s', async (q, msg) => {
      const r = await get(`opportunities?field=amount&function=SUM&${q}`);
      expect(r.status).toBe(400);
      expect(r.body.code).toBe('VALIDATION_ERROR');
      expect(r.body.message).toContain(msg);
    });

    it('rejects a missing field or function, an unknown function and unknown parameters', async () => {
      for (const q of ['function=SUM', 'field=amount', 'field=amount&function=MEDIAN', 'field=amount&function=SUM&having=1']) {
        const r = await get(`opportunities?${q}`);
        expect(r.status, q).toBe(400);
        expect(r.body.code, q).toBe('VALIDATION_ERROR');
      }
      const r = await get('opportunities?field=amount&function=MEDIAN');
      expect(r.body.message).toContain('COUNT, SUM, AVG, MIN, MAX, COUNT_DISTINCT');
    });

    it('rejects a filter on an unknown field, and a value that is not an option', async () => {
      const a = await get('opportunities?field=amount&function=SUM&filter_field=stage&filter_operator=equals&filter_value=open');
      expect(a.status).toBe(400);
      expect(a.body.code).toBe('VALIDATION_ERROR');
      const b = await get('opportunities?field=amount&function=SUM&filter_field=status&filter_operator=equals&filter_value=won');
      expect(b.status).toBe(400);
      expect(b.body.message).toContain('closed_won');
    });
  });

  describe('filters', () => {
    it('is_null needs no filter_value', async () => {
      const r = await get('opportunities?field=id&function=COUNT&filter_field=amount&filter_operator=is_null');
      expect(r.status).toBe(200);
      expect(r.body.value).toBe(opps.filter((o) => o.amount === null).length);
    });

    it('gt on a currency compares amounts, not text', async () => {
      const r = await get('opportunities?field=amount&function=SUM&filter_field=amount&filter_operator=gt&filter_value=10000');
      const big = opps.filter((o) => o.amount !== null && (o.amount as number) > 10000);
      expect(r.body.value).toBe(agg('SUM', big, 'amount', true));
      expect(r.body.count).toBe(big.length);
    });

    it('accepts `filters` (a JSON FilterGroup), alone and together with filter_field', async () => {
      const group = {
        operator: 'or',
        conditions: [
          { field: 'status', operator: 'in', value: ['negotiation', 'proposal'] },
          {
            operator: 'and',
            conditions: [
              { field: 'amount', operator: 'gte', value: 15000 },
              { field: 'close_date', operator: 'lt', value: '2026-04-01' },
            ],
          },
        ],
      };
      const match = (o: Rec) =>
        ['negotiation', 'proposal'].includes(o.status as string) || (o.amount !== null && (o.amount as number) >= 15000 && o.close_date !== null && (o.close_date as string) < '2026-04-01');
      const q = `filters=${encodeURIComponent(JSON.stringify(group))}`;
      const r = await get(`opportunities?field=amount&function=SUM&group_by=status&${q}`);
      expect(r.status).toBe(200);
      const hits = opps.filter(match);
      expect(r.body.results).toEqual(refGroups(hits, 'amount', 'SUM', 'status', true));
      expect(r.body.count).toBe(hits.length);
      expect(r.body.meta.totalRecords).toBe(opps.length);
      expect(r.body.meta.recordsProcessed).toBe(hits.length);

      const both = await get(`opportunities?field=id&function=COUNT&filter_field=company&filter_operator=is_not_null&${q}`);
      expect(both.body.value).toBe(hits.filter((o) => o.company !== null).length);

      const bad = await get('opportunities?field=id&function=COUNT&filters=%7Bnot-json');
      expect(bad.status).toBe(400);
      expect(bad.body.code).toBe('VALIDATION_ERROR');
    });

    it('filters on a related record (company.country) by EXISTS', async () => {
      const r = await get('opportunities?field=amount&function=SUM&filter_field=company.country&filter_operator=equals&filter_value=France');
      expect(r.status).toBe(200);
      const french = new Set(companies.filter((c) => c.country === 'France').map((c) => c.id));
      const hits = opps.filter((o) => french.has(o.company));
      expect(r.body.count).toBe(hits.length);
      expect(r.body.value).toBe(agg('SUM', hits, 'amount', true));
    });
  });

  describe('interval, order and limit', () => {
    it('groups a date by month (interval=month), empty dates in the null group', async () => {
      const r = await get('opportunities?field=amount&function=SUM&group_by=close_date&interval=month');
      expect(r.status).toBe(200);
      const expected = refGroups(opps, 'amount', 'SUM', 'close_date', true, (o) => monthOf(o.close_date)).sort((x, y) => cmpValue(x.group, y.group));
      // Time buckets come in time order, the null bucket first.
      expect(r.body.interval).toBe('month');
      expect(r.body.results).toEqual(expected);
      expect(r.body.results[0].group).toBeNull();
    });

    it('groups a date by quarter and year', async () => {
      const q = await get('opportunities?field=id&function=COUNT&group_by=close_date&interval=quarter');
      const quarter = (d: unknown) => (typeof d === 'string' ? `${d.slice(0, 5)}${String(Math.floor((Number(d.slice(5, 7)) - 1) / 3) * 3 + 1).padStart(2, '0')}-01` : null);
      expect(q.body.results).toEqual(refGroups(opps, 'id', 'COUNT', '', false, (o) => quarter(o.close_date)).sort((x, y) => cmpValue(x.group, y.group)));
      const y = await get('opportunities?field=id&function=COUNT&group_by=close_date&interval=year');
      expect(y.body.results.map((g: RefGroup) => g.group)).toEqual([null, '2026-01-01']);
    });

    it('buckets a DATETIME in the time zone given by tz', async () => {
      await createRecords(t.a.ctx, 'contacts', [
        { first_name: 'Late', last_contacted_at: '2026-03-31T22:30:00Z' }, // April 1st in Paris
        { first_name: 'Early', last_contacted_at: '2026-03-31T21:30:00Z' }, // still March 31st in Paris
      ]);
      const utc = await get('contacts?field=id&function=COUNT&group_by=last_contacted_at&interval=month&filter_field=last_contacted_at&filter_operator=is_not_null');
      expect(utc.body.results).toEqual([{ group: '2026-03-01', value: 2, count: 2 }]);
      const paris = await get('contacts?field=id&function=COUNT&group_by=last_contacted_at&interval=month&tz=Europe/Paris&filter_field=last_contacted_at&filter_operator=is_not_null');
      expect(paris.body.results).toEqual([
        { group: '2026-03-01', value: 1, count: 1 },
        { group: '2026-04-01', value: 1, count: 1 },
      ]);
      const bad = await get('contacts?field=id&function=COUNT&group_by=last_contacted_at&interval=month&tz=Mars/Olympus');
      expect(bad.status).toBe(400);
      const notDate = await get('contacts?field=id&function=COUNT&group_by=status&interval=month');
      expect(notDate.status).toBe(400);
      expect(notDate.body.code).toBe('VALIDATION_ERROR');
    });

    it.each([
      ['count_desc', (x: RefGroup, y: RefGroup) => y.count - x.count || cmpValue(x.group, y.group)],
      ['count_asc', (x: RefGroup, y: RefGroup) => x.count - y.count || cmpValue(x.group, y.group)],
      ['value_desc', (x: RefGroup, y: RefGroup) => cmpValue(y.value, x.value) || y.count - x.count || cmpValue(x.group, y.group)],
      ['value_asc', (x: RefGroup, y: RefGroup) => cmpValue(x.value, y.value) || y.count - x.count || cmpValue(x.group, y.group)],
      ['group_asc', (x: RefGroup, y: RefGroup) => cmpValue(x.group, y.group)],
      ['group_desc', (x: RefGroup, y: RefGroup) => cmpValue(y.group, x.group)],
    ])('order=%s', async (order, cmp) => {
      const r = await get(`opportunities?field=amount&function=SUM&group_by=status&order=${order}`);
      expect(r.status).toBe(200);
      expect(r.body.results).toEqual(refGroups(opps, 'amount', 'SUM', 'status', true).sort(cmp));
    });

    it('the default order is count descending, then group value: ties broken the same way every time', async () => {
      const expected = refGroups(opps, 'id', 'COUNT', 'company');
      // Many companies share a count: the tie-break decides most of this order.
      expect(new Set(expected.map((g) => g.count)).size).toBeLessThan(expected.length);
      for (let i = 0; i < 2; i++) {
        const r = await get('opportunities?field=id&function=COUNT&group_by=company&limit=1000');
        expect(r.body.results.map(({ group, value, count }: RefGroup) => ({ group, value, count }))).toEqual(expected);
      }
    });

    it.each([1, 2, 3, 5, 100])('limit=%i keeps the top groups and counts the rest exactly', async (limit) => {
      const all = refGroups(opps, 'amount', 'SUM', 'status', true);
      const r = await get(`opportunities?field=amount&function=SUM&group_by=status&limit=${limit}`);
      expect(r.status).toBe(200);
      const shown = all.slice(0, limit);
      expect(r.body.results).toEqual(shown);
      expect(r.body.meta).toEqual({
        totalRecords: opps.length,
        recordsProcessed: opps.length,
        truncated: false,
        groupTotal: all.length,
        groupsTruncated: all.length > limit,
        otherCount: all.slice(limit).reduce((s, g) => s + g.count, 0),
      });
      // The overall value covers every record, not only the groups shown.
      expect(r.body.value).toBe(agg('SUM', opps, 'amount', true));
    });

    it('limit with order and a filter', async () => {
      const r = await get('opportunities?field=amount&function=MAX&group_by=company&order=value_desc&limit=3&filter_field=amount&filter_operator=is_not_null');
      const hits = opps.filter((o) => o.amount !== null);
      const all = refGroups(hits, 'amount', 'MAX', 'company').sort((x, y) => cmpValue(y.value, x.value) || y.count - x.count || cmpValue(x.group, y.group));
      expect(r.body.results.map(({ group, value, count }: RefGroup) => ({ group, value, count }))).toEqual(all.slice(0, 3));
      expect(r.body.meta.groupTotal).toBe(all.length);
      expect(r.body.meta.otherCount).toBe(all.slice(3).reduce((s, g) => s + g.count, 0));
      // Relation groups carry the related record's name.
      const names = new Map(companies.map((c) => [c.id, c.name]));
      for (const g of r.body.results) expect(g.label).toBe(g.group === null ? null : names.get(g.group));
    });

    it.each(['0', '-1', '10001', '1.5', 'x'])('rejects limit=%s', async (limit) => {
      const r = await get(`opportunities?field=amount&function=SUM&group_by=status&limit=${limit}`);
      expect(r.status).toBe(400);
      expect(r.body.code).toBe('VALIDATION_ERROR');
    });

    it('rejects an unknown order or interval', async () => {
      expect((await get('opportunities?field=amount&function=SUM&group_by=status&order=random')).status).toBe(400);
      expect((await get('opportunities?field=amount&function=SUM&group_by=close_date&interval=fortnight')).status).toBe(400);
    });
  });

  it("never counts another workspace's records", async () => {
    const r = await call(t.app, t.b.adminToken, 'GET', '/api/v1/aggregate/opportunities?field=amount&function=SUM');
    expect(r.body).toMatchObject({ value: 999_999, count: 1 });
    const c = await call(t.app, t.b.adminToken, 'GET', '/api/v1/aggregate/contacts?field=id&function=COUNT');
    expect(c.body.value).toBe(1);
    const m = await call(t.app, t.b.adminToken, 'GET', '/api/v1/aggregate/measures?field=id&function=COUNT');
    expect(m.body.code).toBe('INVALID_OBJECT');
  });
});
