import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { aggregateGroups } from '../src/services/aggregate.js';
import { createRecords } from '../src/services/records.js';
import { createUser } from '../src/services/users.js';
import { expectNear, localDate, prng, type Rec, refTree, type Types, timeBucket } from './aggregate-reference.js';
import { call, listAll, type TestApp, testApp } from './helpers.js';

/**
 * Nested aggregate trees (POST /api/v1/aggregate/{object}/tree), after
 * cognite-records-aggregate.txt: named metrics, uniqueValues / numberHistogram / timeHistogram
 * buckets with sub-aggregates, limits, and Cognite filters. Answers are compared with the plain
 * JavaScript reference in aggregate-reference.ts over the records read back.
 */

const DEVICE_TYPES: Types = {
  id: 'TEXT',
  created_at: 'DATETIME',
  updated_at: 'DATETIME',
  manufacturer: 'TEXT',
  price: 'CURRENCY',
  region: 'SELECT',
  my_weight: 'NUMBER',
  my_property: 'MULTI_SELECT',
  qty: 'INTEGER',
  seen_at: 'DATETIME',
  owner: 'RELATION',
};
const CONTACT_TYPES: Types = {
  id: 'TEXT',
  first_name: 'TEXT',
  status: 'SELECT',
  tags: 'MULTI_SELECT',
  country: 'TEXT',
  last_contacted_at: 'DATETIME',
  do_not_contact: 'BOOLEAN',
};
const EVENT_TYPES: Types = { id: 'TEXT', at: 'DATETIME', day: 'DATE', n: 'INTEGER' };

const P = (name: string) => ['mySpace', 'myContainer', name];

describe('aggregate trees (POST /api/v1/aggregate/{object}/tree)', () => {
  let t: TestApp;
  let devices: Rec[];
  let contacts: Rec[];
  let events: Rec[];
  let names: Map<unknown, string>;
  const tree = (object: string, body: unknown, token?: string) => call(t.app, token ?? t.a.adminToken, 'POST', `/api/v1/aggregate/${object}/tree`, body);

  beforeAll(async () => {
    t = await testApp();
    const r = prng(4242);
    const u1 = await createUser(t.db, t.a.workspace.id, { email: 'ada@alpha.test', name: 'Ada Lovelace', role: 'member' });
    const u2 = await createUser(t.db, t.a.workspace.id, { email: 'alan@alpha.test', name: 'Alan Turing', role: 'member' });
    names = new Map([t.a.admin, t.a.member, u1, u2].map((u) => [u.id, u.name]));
    const s = await call(t.app, t.a.adminToken, 'POST', '/api/v1/schema', {
      name: 'devices',
      fields: [
        { name: 'manufacturer', type: 'TEXT' },
        { name: 'price', type: 'CURRENCY' },
        { name: 'region', type: 'SELECT', options: ['us1', 'ie1', 'eu2'] },
        { name: 'my_weight', type: 'NUMBER' },
        { name: 'my_property', type: 'MULTI_SELECT', options: ['10011', '10012', '10013'] },
        { name: 'qty', type: 'INTEGER' },
        { name: 'seen_at', type: 'DATETIME' },
        { name: 'owner', type: 'RELATION', target: 'users' },
      ],
    });
    expect(s.status).toBe(201);
    const e = await call(t.app, t.a.adminToken, 'POST', '/api/v1/schema', {
      name: 'events',
      fields: [
        { name: 'title', type: 'TEXT' },
        { name: 'at', type: 'DATETIME' },
        { name: 'day', type: 'DATE' },
        { name: 'n', type: 'INTEGER' },
      ],
    });
    expect(e.status).toBe(201);

    const codes = ['10011', '10012', '10013'];
    await createRecords(
      t.a.ctx,
      'devices',
      Array.from({ length: 90 }, () => ({
        manufacturer: r.chance(0.1) ? null : r.pick(['Cognite', 'Cognite', 'AkerBP', 'Equinor', 'Aibel', 'cognite']),
        price: r.chance(0.1) ? null : r.int(-5000, 200_000) / 100,
        region: r.chance(0.1) ? null : r.pick(['us1', 'us1', 'ie1', 'eu2']),
        my_weight: r.chance(0.1) ? null : r.int(-12, 60) / 4,
        my_property: r.chance(0.15) ? null : codes.filter(() => r.chance(0.6)),
        qty: r.chance(0.1) ? null : r.int(-35, 35),
        seen_at: r.chance(0.1) ? null : new Date(Date.UTC(2025, 0, 1) + Math.floor(r.next() * 3 * 365 * 86_400_000)).toISOString(),
        owner: r.chance(0.1) ? null : r.pick([...names.keys()]),
      })),
    );
    await createRecords(
      t.a.ctx,
      'contacts',
      Array.from({ length: 70 }, (_, i) => ({
        first_name: r.pick(['Ann', 'anna', 'Andrea', 'Bob', 'Bea', 'Carl', 'an_na']),
        last_name: `L${i}`,
        status: r.chance(0.1) ? null : r.pick(['lead', 'qualified', 'customer', 'churned']),
        tags: r.chance(0.2) ? null : ['vip', 'newsletter', 'partner', 'investor', 'event'].filter(() => r.chance(0.35)),
        country: r.chance(0.3) ? null : r.pick(['France', 'Chile', 'Norway']),
        last_contacted_at: r.chance(0.25) ? null : new Date(Date.UTC(2025, 6, 1) + Math.floor(r.next() * 365 * 86_400_000)).toISOString(),
        do_not_contact: r.chance(0.2),
      })),
    );
    // Instants around the daylight-saving changes of 2026 (Paris: 03-29 and 10-25; Santiago: 04-05 at
    // local midnight), and random instants over three years, so the zone's offsets matter.
    const santiagoEnd = Date.parse('2026-04-05T03:00:00Z');
    const fixed = [
      '2026-03-31T21:30:00Z', // 23:30 on March 31st in Paris
      '2026-03-31T22:30:00Z', // 00:30 on April 1st in Paris (CEST): April
      '2026-02-28T23:30:00Z', // 00:30 on March 1st in Paris (CET): March
      '2026-03-29T00:59:59Z', // the last second of CET
      '2026-03-29T01:00:00Z', // the first second of CEST
      '2026-10-24T22:30:00Z', // 00:30 on October 25th, CEST
      '2026-10-25T22:30:00Z', // 23:30 on October 25th, CET
      '2026-10-25T23:30:00Z', // 00:30 on October 26th, CET
      '2026-10-31T22:30:00Z', // 23:30 on October 31st, CET: October
      '2026-10-31T23:30:00Z', // 00:30 on November 1st, CET: November
      '2026-12-31T23:30:00Z', // 00:30 on January 1st 2027 in Paris: another year
      ...[0, 1_000, 10_000, 30_000, 59_000, -1_000].map((d) => new Date(santiagoEnd + d).toISOString()), // Santiago: 23:00 on April 4th, not 00:00 on the 5th
    ];
    const eventRows = [
      ...fixed.map((at, i) => ({ title: `fixed ${i}`, at, day: at.slice(0, 10), n: i })),
      ...Array.from({ length: 180 }, (_, i) => {
        const at = new Date(Date.UTC(2025, 0, 1) + Math.floor(r.next() * 3 * 365 * 86_400_000)).toISOString();
        return { title: `random ${i}`, at: r.chance(0.05) ? null : at, day: r.chance(0.05) ? null : at.slice(0, 10), n: r.int(-100, 100) };
      }),
    ];
    for (let i = 0; i < eventRows.length; i += 100) await createRecords(t.a.ctx, 'events', eventRows.slice(i, i + 100));
    devices = await listAll(t.a.ctx, 'devices');
    contacts = await listAll(t.a.ctx, 'contacts');
    events = await listAll(t.a.ctx, 'events');
    // Another workspace's contacts never count.
    await createRecords(t.b.ctx, 'contacts', [{ first_name: 'Ann', status: 'customer', tags: ['vip'] }]);
  });
  afterAll(() => t?.close());

  describe('the example of cognite-records-aggregate.txt', () => {
    const body = {
      aggregates: {
        my_avg_aggregate1: { avg: { property: P('price') } },
        my_terms_aggregate2: {
          uniqueValues: {
            property: P('manufacturer'),
            aggregates: {
              my_sub_aggregate1: { min: { property: P('price') } },
              my_sub_aggregate2: { max: { property: P('price') } },
              my_sub_aggregate3: { uniqueValues: { property: P('region') } },
            },
          },
        },
      },
      filter: {
        and: [
          { containsAll: { property: P('my_property'), values: ['10011', '10012'] } },
          { range: { property: ['my_space', 'my_container', 'my_weight'], gte: 0 } },
          // The document's lastUpdatedTime range, as a filter on updated_at (milliseconds or ISO text).
          { range: { property: 'updated_at', gt: 1705341600000, lt: '2030-05-15T18:00:00.00Z' } },
        ],
      },
    };
    const match = (d: Rec) =>
      Array.isArray(d.my_property) &&
      d.my_property.includes('10011') &&
      d.my_property.includes('10012') &&
      d.my_weight !== null &&
      (d.my_weight as number) >= 0 &&
      Date.parse(d.updated_at as string) > 1705341600000 &&
      Date.parse(d.updated_at as string) < Date.parse('2030-05-15T18:00:00Z');

    it('answers avg and uniqueValues with min, max and uniqueValues sub-aggregates', async () => {
      const r = await tree('devices', body);
      expect(r.status).toBe(200);
      const hits = devices.filter(match);
      expect(hits.length).toBeGreaterThan(5);
      expectNear(r.body, { object: 'devices', count: hits.length, aggregates: refTree(hits, body.aggregates, DEVICE_TYPES) });
      // The shape of the document's answer.
      const terms = r.body.aggregates.my_terms_aggregate2;
      expect(Object.keys(r.body.aggregates.my_avg_aggregate1)).toEqual(['avg']);
      expect(terms.uniqueValueBuckets[0]).toMatchObject({ value: expect.anything(), count: expect.any(Number) });
      expect(Object.keys(terms.uniqueValueBuckets[0].aggregates).sort()).toEqual(['my_sub_aggregate1', 'my_sub_aggregate2', 'my_sub_aggregate3']);
      expect(terms.uniqueValueBuckets[0].aggregates.my_sub_aggregate3.uniqueValueBuckets[0]).toEqual({ value: expect.anything(), count: expect.any(Number), aggregates: {} });
      // Text values are case-sensitive buckets ('Cognite' and 'cognite').
      const values = terms.uniqueValueBuckets.map((b: Rec) => b.value);
      expect(new Set(values).size).toBe(values.length);
    });

    it('without a filter covers every record, the null bucket included', async () => {
      const r = await tree('devices', { aggregates: body.aggregates });
      expectNear(r.body, { object: 'devices', count: devices.length, aggregates: refTree(devices, body.aggregates, DEVICE_TYPES) });
      expect(r.body.aggregates.my_terms_aggregate2.uniqueValueBuckets.some((b: Rec) => b.value === null)).toBe(true);
    });

    it('rejects avg of a text property (the document averages "manufacturer")', async () => {
      const r = await tree('devices', { aggregates: { a: { avg: { property: P('manufacturer') } } } });
      expect(r.status).toBe(400);
      expect(r.body.code).toBe('VALIDATION_ERROR');
      expect(r.body.message).toContain('TEXT');
    });
  });

  describe('metrics and buckets', () => {
    it('every metric at the root', async () => {
      const aggregates = {
        n: { count: {} },
        priced: { count: { property: 'price' } },
        total: { sum: { property: 'price' } },
        qty_sum: { sum: { property: 'qty' } },
        w_sum: { sum: { property: 'my_weight' } },
      };
      const r = await tree('devices', { aggregates });
      expectNear(r.body.aggregates, refTree(devices, aggregates, DEVICE_TYPES));
      const more = {
        lo: { min: { property: 'seen_at' } },
        hi: { max: { property: 'manufacturer' } },
        makers: { countDistinct: { property: 'manufacturer' } },
        regions: { countDistinct: { property: 'region' } },
        w: { min: { property: 'my_weight' } },
      };
      const m = await tree('devices', { aggregates: more });
      expectNear(m.body.aggregates, refTree(devices, more, DEVICE_TYPES));
      const avgs = { qty: { avg: { property: 'qty' } }, price: { avg: { property: 'price' } }, w: { avg: { property: 'my_weight' } }, when: { max: { property: 'seen_at' } } };
      const a = await tree('devices', { aggregates: avgs });
      expectNear(a.body.aggregates, refTree(devices, avgs, DEVICE_TYPES));
    });

    it('uniqueValues on a relation carries the names; size, total and otherCount are exact', async () => {
      const aggregates = {
        by_owner: { uniqueValues: { property: 'owner', size: 2, aggregates: { spend: { sum: { property: 'price' } }, by_region: { uniqueValues: { property: 'region', size: 1 } } } } },
      };
      const r = await tree('devices', { aggregates });
      expect(r.status).toBe(200);
      expectNear(r.body.aggregates, refTree(devices, aggregates, DEVICE_TYPES, names));
      const b = r.body.aggregates.by_owner;
      expect(b.total).toBe(new Set(devices.map((d) => d.owner)).size);
      expect(b.otherCount).toBeGreaterThan(0);
      expect(b.otherCount + b.uniqueValueBuckets.reduce((s: number, x: Rec) => s + (x.count as number), 0)).toBe(devices.length);
      for (const x of b.uniqueValueBuckets) {
        const sub = x.aggregates.by_region;
        expect(sub.otherCount + sub.uniqueValueBuckets[0].count).toBe(x.count);
      }
    });

    it.each([
      ['price', 250],
      ['price', 0.5],
      ['my_weight', 2.5],
      ['my_weight', 1],
      ['qty', 10],
      ['qty', 7],
    ])('numberHistogram on %s with interval %d, negative values included', async (property, interval) => {
      const aggregates = { h: { numberHistogram: { property, interval, aggregates: { n: { count: {} }, spend: { sum: { property: 'price' } }, heavy: { max: { property: 'my_weight' } } } } } };
      const r = await tree('devices', { aggregates });
      expect(r.status).toBe(200);
      expectNear(r.body.aggregates, refTree(devices, aggregates, DEVICE_TYPES));
      const starts = r.body.aggregates.h.numberHistogramBuckets.map((b: Rec) => b.start);
      expect(starts[0]).toBeNull();
      expect(starts.some((s: number | null) => s !== null && s < 0)).toBe(true);
    });

    it('a record with -5 falls in the bucket [-10, 0) of a histogram of width 10', async () => {
      const r = await tree('events', { aggregates: { h: { numberHistogram: { property: 'n', interval: 10 } } }, filter: { in: { property: 'n', values: [-5, -10, 0, 5] } } });
      const expected = new Map<number, number>();
      for (const e of events) if ([-5, -10, 0, 5].includes(e.n as number)) expected.set(Math.floor((e.n as number) / 10) * 10, (expected.get(Math.floor((e.n as number) / 10) * 10) ?? 0) + 1);
      expect(r.body.aggregates.h.numberHistogramBuckets).toEqual([...expected.entries()].sort((a, b) => a[0] - b[0]).map(([start, count]) => ({ start, count, aggregates: {} })));
      expect(expected.size).toBeGreaterThan(0);
    });

    it('nests three levels: uniqueValues > timeHistogram > numberHistogram > avg', async () => {
      const aggregates = {
        regions: {
          uniqueValues: {
            property: 'region',
            aggregates: {
              quarters: {
                timeHistogram: {
                  property: 'seen_at',
                  calendarInterval: '1q',
                  timeZone: 'Europe/Paris',
                  aggregates: { qty: { numberHistogram: { property: 'qty', interval: 20, aggregates: { w: { avg: { property: 'my_weight' } } } } } },
                },
              },
              total: { sum: { property: 'price' } },
            },
          },
        },
      };
      const r = await tree('devices', { aggregates });
      expect(r.status).toBe(200);
      expectNear(r.body.aggregates, refTree(devices, aggregates, DEVICE_TYPES));
    });
  });

  describe('timeHistogram with a time zone', () => {
    const count = (buckets: Rec[], start: string) => (buckets.find((b) => b.start === start)?.count as number | undefined) ?? 0;
    const expectedCount = (tz: string, start: string, bucket: (local: string) => string) => events.filter((e) => e.at !== null && bucket(localDate(e.at as string, tz)) === start).length;

    it('1M in Europe/Paris: 2026-03-31T22:30:00Z is April, 2026-10-31T23:30:00Z is November', async () => {
      const r = await tree('events', { aggregates: { m: { timeHistogram: { property: 'at', calendarInterval: '1M', timeZone: 'Europe/Paris' } } } });
      expect(r.status).toBe(200);
      const buckets = r.body.aggregates.m.timeHistogramBuckets as Rec[];
      const month = (d: string) => `${d.slice(0, 7)}-01`;
      for (const m of ['2026-02-01', '2026-03-01', '2026-04-01', '2026-10-01', '2026-11-01', '2027-01-01']) expect(count(buckets, m), m).toBe(expectedCount('Europe/Paris', m, month));
      // One record, two zones: 2026-03-31T22:30:00Z is March in UTC, April in Paris.
      const one = { equals: { property: 'at', value: '2026-03-31T22:30:00Z' } };
      const paris = await tree('events', { aggregates: { m: { timeHistogram: { property: 'at', calendarInterval: '1M', timeZone: 'Europe/Paris' } } }, filter: one });
      expect(paris.body.aggregates.m.timeHistogramBuckets).toEqual([{ start: '2026-04-01', count: 1, aggregates: {} }]);
      const utc = await tree('events', { aggregates: { m: { timeHistogram: { property: 'at', calendarInterval: '1M' } } }, filter: one });
      expect(utc.body.aggregates.m.timeHistogramBuckets).toEqual([{ start: '2026-03-01', count: 1, aggregates: {} }]);
      const nov = await tree('events', {
        aggregates: { m: { timeHistogram: { property: 'at', calendarInterval: '1M', timeZone: 'Europe/Paris' } } },
        filter: { in: { property: 'at', values: ['2026-10-31T22:30:00Z', '2026-10-31T23:30:00Z'] } },
      });
      expect(nov.body.aggregates.m.timeHistogramBuckets).toEqual([
        { start: '2026-10-01', count: 1, aggregates: {} },
        { start: '2026-11-01', count: 1, aggregates: {} },
      ]);
    });

    it('1d in Europe/Paris on either side of both changes', async () => {
      const r = await tree('events', {
        aggregates: { d: { timeHistogram: { property: 'at', calendarInterval: '1d', timeZone: 'Europe/Paris' } } },
        filter: { range: { property: 'at', gte: '2026-10-24T00:00:00Z', lt: '2026-10-27T00:00:00Z' } },
      });
      const hits = events.filter((e) => e.at !== null && (e.at as string) >= '2026-10-24T00:00:00.000Z' && (e.at as string) < '2026-10-27T00:00:00.000Z');
      expect(r.body.aggregates.d).toEqual(refTree(hits, { d: { timeHistogram: { property: 'at', calendarInterval: '1d', timeZone: 'Europe/Paris' } } }, EVENT_TYPES).d);
      const buckets = r.body.aggregates.d.timeHistogramBuckets as Rec[];
      expect(count(buckets, '2026-10-25')).toBeGreaterThanOrEqual(2); // 10-24T22:30Z and 10-25T22:30Z
      expect(count(buckets, '2026-10-26')).toBeGreaterThanOrEqual(1); // 10-25T23:30Z
    });

    it('1d in America/Santiago, whose clocks go back at local midnight', async () => {
      const r = await tree('events', {
        aggregates: { d: { timeHistogram: { property: 'at', calendarInterval: '1d', timeZone: 'America/Santiago' } } },
        filter: { range: { property: 'at', gte: '2026-04-04T00:00:00Z', lt: '2026-04-06T12:00:00Z' } },
      });
      const buckets = r.body.aggregates.d.timeHistogramBuckets as Rec[];
      // 03:00:00Z to 03:00:59Z on April 5th is 23:00 on April 4th (UTC-4), the minute right after the change.
      const hits = events.filter((e) => e.at !== null && (e.at as string) >= '2026-04-04T00:00:00.000Z' && (e.at as string) < '2026-04-06T12:00:00.000Z');
      expect(count(buckets, '2026-04-04')).toBe(hits.filter((e) => localDate(e.at as string, 'America/Santiago') === '2026-04-04').length);
      expect(count(buckets, '2026-04-05')).toBe(hits.filter((e) => localDate(e.at as string, 'America/Santiago') === '2026-04-05').length);
      expect(hits.filter((e) => localDate(e.at as string, 'America/Santiago') === '2026-04-04').length).toBeGreaterThanOrEqual(5);
    });

    it.each(['UTC', 'Europe/Paris', 'America/Santiago', 'America/New_York', 'Asia/Kathmandu', 'Australia/Lord_Howe'])(
      'every calendar interval in %s equals the JavaScript bucketing',
      async (timeZone) => {
        const aggregates = Object.fromEntries(
          ['1d', '1w', '1M', '1q', '1y'].map((ci) => [`h${ci}`, { timeHistogram: { property: 'at', calendarInterval: ci, timeZone, aggregates: { n: { sum: { property: 'n' } } } } }]),
        );
        const r = await tree('events', { aggregates });
        expect(r.status).toBe(200);
        expect(r.body.aggregates).toEqual(refTree(events, aggregates, EVENT_TYPES));
      },
    );

    it('a DATE field ignores the time zone; interval names day..year are accepted too', async () => {
      const aggregates = { a: { timeHistogram: { property: 'day', calendarInterval: '1w', timeZone: 'Pacific/Kiritimati' } }, b: { timeHistogram: { property: 'day', calendarInterval: 'quarter' } } };
      const r = await tree('events', { aggregates });
      expect(r.body.aggregates).toEqual(
        refTree(events, { a: { timeHistogram: { property: 'day', calendarInterval: '1w' } }, b: { timeHistogram: { property: 'day', calendarInterval: '1q' } } }, EVENT_TYPES),
      );
      // Weeks start on Monday.
      for (const b of r.body.aggregates.a.timeHistogramBuckets) if (b.start) expect(new Date(`${b.start}T00:00:00Z`).getUTCDay()).toBe(1);
    });
  });

  describe('calendar buckets of aggregateGroups (day groups rolled up for a DATE) equal a plain JavaScript bucketing', () => {
    const INTERVALS = ['day', 'week', 'month', 'quarter', 'year'] as const;
    /** Count, sum, min, max and average of n per bucket, by hand. */
    function byHand(field: 'at' | 'day', interval: (typeof INTERVALS)[number], tz: string) {
      const out = new Map<string | null, { count: number; ns: number[] }>();
      for (const e of events) {
        const b = timeBucket(e[field], EVENT_TYPES[field]!, interval, tz);
        const g = out.get(b) ?? { count: 0, ns: [] };
        g.count++;
        if (typeof e.n === 'number') g.ns.push(e.n);
        out.set(b, g);
      }
      return out;
    }
    const metrics = ['count', 'sum', 'min', 'max', 'avg'].map((f) => ({ field: 'n', function: f }));
    for (const field of ['day', 'at'] as const)
      it.each(['UTC', 'Europe/Paris', 'America/Santiago', 'America/New_York', 'Asia/Kathmandu', 'Australia/Lord_Howe'])(`${field}: every interval in %s`, async (timeZone) => {
        for (const interval of INTERVALS) {
          const r = await aggregateGroups(t.a.ctx, 'events', { groupBy: [{ field, interval, timeZone }], metrics });
          const want = byHand(field, interval, timeZone);
          const got = new Map(r.groups!.map((g) => [g.values[field] as string | null, g]));
          expect([...got.keys()].sort(), `${field} ${interval} ${timeZone}`).toEqual([...want.keys()].sort());
          for (const [b, w] of want) {
            const g = got.get(b)!;
            const ctxt = `${field} ${interval} ${timeZone} ${b}`;
            expect(g.count, ctxt).toBe(w.count);
            const a = g.aggregates.n!;
            expect(a.count, ctxt).toBe(w.ns.length);
            expect(a.sum, ctxt).toBe(w.ns.reduce((x, y) => x + y, 0));
            expect(a.min, ctxt).toBe(w.ns.length ? Math.min(...w.ns) : null);
            expect(a.max, ctxt).toBe(w.ns.length ? Math.max(...w.ns) : null);
            if (w.ns.length) expect(a.avg as number, ctxt).toBeCloseTo(w.ns.reduce((x, y) => x + y, 0) / w.ns.length, 9);
            else expect(a.avg, ctxt).toBeNull();
          }
          // Buckets in order, the records without a value first; the totals over every record.
          expect(r.groups!.map((g) => g.values[field])).toEqual([...want.keys()].sort((x, y) => (x === null ? -1 : y === null ? 1 : x < y ? -1 : x > y ? 1 : 0)));
          expect(r.count).toBe(events.length);
          expect(r.aggregates.n!.sum).toBe(events.reduce((x, e) => x + (typeof e.n === 'number' ? e.n : 0), 0));
          expect(r.meta.groupTotal).toBe(want.size);
        }
      });

    it('the same buckets with a filter, a limit, and ordered by count', async () => {
      const filter = { operator: 'and', conditions: [{ field: 'n', operator: 'gte', value: 0 }] };
      const r = await aggregateGroups(t.a.ctx, 'events', { groupBy: [{ field: 'day', interval: 'month' }], metrics, filter, order: { by: 'count', dir: 'desc' }, limit: 5 });
      const want = new Map<string | null, number>();
      for (const e of events) if (typeof e.n === 'number' && e.n >= 0) want.set(timeBucket(e.day, 'DATE', 'month'), (want.get(timeBucket(e.day, 'DATE', 'month')) ?? 0) + 1);
      const top = [...want].sort((a, b) => b[1] - a[1] || (a[0] === null ? -1 : b[0] === null ? 1 : a[0] < b[0] ? -1 : 1)).slice(0, 5);
      expect(r.groups!.map((g) => [g.values.day, g.count])).toEqual(top);
      expect(r.meta.groupTotal).toBe(want.size);
      expect(r.meta.otherCount).toBe([...want.values()].reduce((a, b) => a + b, 0) - top.reduce((a, b) => a + b[1], 0));
    });
  });

  describe('filters', () => {
    const byStatus = { n: { count: {} }, by_status: { uniqueValues: { property: 'status', aggregates: { tagged: { count: { property: 'tags' } } } } } };
    const has = (c: Rec, tag: string) => Array.isArray(c.tags) && c.tags.includes(tag);
    const at = (c: Rec) => (c.last_contacted_at as string | null) ?? null;
    const cases: [string, unknown, (c: Rec) => boolean][] = [
      ['equals', { equals: { property: 'status', value: 'customer' } }, (c) => c.status === 'customer'],
      ['in', { in: { property: 'status', values: ['lead', 'qualified'] } }, (c) => c.status === 'lead' || c.status === 'qualified'],
      [
        'range on a date-time',
        { range: { property: 'last_contacted_at', gte: '2026-01-01T00:00:00Z', lt: '2026-04-01' } },
        (c) => at(c) !== null && at(c)! >= '2026-01-01T00:00:00.000Z' && at(c)! < '2026-04-01T00:00:00.000Z',
      ],
      ['range in milliseconds', { range: { property: ['s', 'c', 'last_contacted_at'], gt: Date.UTC(2026, 0, 1) } }, (c) => at(c) !== null && Date.parse(at(c)!) > Date.UTC(2026, 0, 1)],
      ['prefix (case-insensitive, _ literal)', { prefix: { property: 'first_name', value: 'an_' } }, (c) => (c.first_name as string).toLowerCase().startsWith('an_')],
      ['prefix', { prefix: { property: 'first_name', value: 'An' } }, (c) => (c.first_name as string).toLowerCase().startsWith('an')],
      ['exists', { exists: { property: 'country' } }, (c) => c.country !== null],
      ['containsAny', { containsAny: { property: 'tags', values: ['vip', 'partner'] } }, (c) => has(c, 'vip') || has(c, 'partner')],
      ['containsAll', { containsAll: { property: 'tags', values: ['vip', 'newsletter'] } }, (c) => has(c, 'vip') && has(c, 'newsletter')],
      ['containsAll of one', { containsAll: { property: 'tags', values: ['event'] } }, (c) => has(c, 'event')],
      ['not', { not: { equals: { property: 'status', value: 'lead' } } }, (c) => c.status !== 'lead'],
      ['not exists', { not: { exists: { property: 'tags' } } }, (c) => c.tags === null],
      ['and', { and: [{ exists: { property: 'country' } }, { containsAny: { property: 'tags', values: ['investor'] } }] }, (c) => c.country !== null && has(c, 'investor')],
      [
        'or',
        { or: [{ equals: { property: 'country', value: 'Chile' } }, { prefix: { property: 'first_name', value: 'b' } }] },
        (c) => c.country === 'Chile' || (c.first_name as string).toLowerCase().startsWith('b'),
      ],
      [
        'not(or(...)) and equals on a boolean',
        {
          and: [
            { not: { or: [{ in: { property: 'status', values: ['churned'] } }, { containsAll: { property: 'tags', values: ['vip', 'event'] } }] } },
            { equals: { property: 'do_not_contact', value: false } },
          ],
        },
        (c) => !(c.status === 'churned' || (has(c, 'vip') && has(c, 'event'))) && c.do_not_contact === false,
      ],
      [
        'a FilterGroup works too',
        {
          operator: 'or',
          conditions: [
            { field: 'tags', operator: 'contains', value: 'vip' },
            { field: 'status', operator: 'is_null' },
          ],
        },
        (c) => has(c, 'vip') || c.status === null,
      ],
      ['a Bitrix map works too', { country: 'Norway', status: ['lead', 'customer'] }, (c) => c.country === 'Norway' && ['lead', 'customer'].includes(c.status as string)],
    ];

    it.each(cases)('%s', async (_name, filter, match) => {
      const r = await tree('contacts', { aggregates: byStatus, filter });
      expect(r.status).toBe(200);
      const hits = contacts.filter(match);
      expect(r.body).toEqual({ object: 'contacts', count: hits.length, aggregates: refTree(hits, byStatus, CONTACT_TYPES) });
    });

    it('the filters pick non-trivial subsets of the data', () => {
      for (const [name, , match] of cases) {
        const n = contacts.filter(match).length;
        expect(n, name).toBeGreaterThan(0);
        expect(n, name).toBeLessThan(contacts.length);
      }
    });

    it.each([
      [{ equals: { property: 'nope', value: 1 } }, 'nope'],
      // A single unknown key reads as a {field: value} map: the field is unknown.
      [{ near: { property: 'status', value: 'x' } }, "Unknown field 'near'"],
      [{ range: { property: 'status' } }, 'range'],
      [{ containsAll: { property: 'tags', values: 'vip' } }, 'containsAll'],
      [{ and: { equals: { property: 'status', value: 'lead' } } }, 'array'],
      [{ equals: { property: 'status', value: 'prospect' } }, 'lead'],
      [{ containsAny: { property: 'tags', values: ['gold'] } }, 'vip'],
      [{ equals: { value: 'lead' } }, 'property'],
    ])('rejects the filter %j', async (filter, msg) => {
      const r = await tree('contacts', { aggregates: byStatus, filter });
      expect(r.status).toBe(400);
      expect(r.body.code).toBe('VALIDATION_ERROR');
      expect(r.body.message).toContain(msg);
    });
  });

  describe('limits: 5 per level, 5 deep, 16 in all', () => {
    const metric = { count: {} };
    /** A chain of uniqueValues buckets `depth` levels deep, a count at the bottom. */
    const chain = (depth: number): Record<string, unknown> => {
      const props = ['region', 'manufacturer', 'owner', 'qty', 'price', 'seen_at'];
      let node: Record<string, unknown> = { leaf: metric };
      for (let d = depth - 1; d >= 1; d--) node = { [`l${d}`]: { uniqueValues: { property: props[d - 1], size: 2, aggregates: node } } };
      return node;
    };
    const wide = (n: number) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`m${i}`, metric]));

    it('5 aggregates on a level are accepted, 6 are not', async () => {
      expect((await tree('devices', { aggregates: wide(5) })).status).toBe(200);
      const r = await tree('devices', { aggregates: wide(6) });
      expect(r.status).toBe(400);
      expect(r.body.message).toContain('At most 5 aggregates per level');
      const sub = await tree('devices', { aggregates: { u: { uniqueValues: { property: 'region', aggregates: wide(6) } } } });
      expect(sub.status).toBe(400);
    });

    it('5 levels are accepted and answered correctly, 6 are not', async () => {
      const ok = await tree('devices', { aggregates: chain(5) });
      expect(ok.status).toBe(200);
      expectNear(ok.body.aggregates, refTree(devices, chain(5), DEVICE_TYPES, names));
      const r = await tree('devices', { aggregates: chain(6) });
      expect(r.status).toBe(400);
      expect(r.body.message).toContain('at most 5 deep');
    });

    it('16 aggregates in a tree are accepted, 17 are not', async () => {
      const forest = (extra: number) => ({
        ...Object.fromEntries(
          ['region', 'manufacturer', 'owner'].map((p) => [
            `by_${p}`,
            { uniqueValues: { property: p, size: 3, aggregates: { a: { sum: { property: 'price' } }, b: { max: { property: 'qty' } }, c: { avg: { property: 'my_weight' } }, d: { count: {} } } } },
          ]),
        ),
        ...wide(1 + extra),
      });
      // 3 buckets + 12 metrics + 1 = 16
      const ok = await tree('devices', { aggregates: forest(0) });
      expect(ok.status).toBe(200);
      expectNear(ok.body.aggregates, refTree(devices, forest(0), DEVICE_TYPES, names));
      const r = await tree('devices', { aggregates: forest(1) });
      expect(r.status).toBe(400);
      expect(r.body.message).toContain('At most 16 aggregates');
    });

    it.each([
      [{}, 'at least one'],
      [{ a: { median: { property: 'price' } } }, 'Unknown aggregate'],
      [{ a: { sum: { property: 'price' }, max: { property: 'price' } } }, 'exactly one'],
      [{ 'bad name': metric }, 'letters'],
      [{ a: { uniqueValues: { property: 'region', size: 1001 } } }, 'size'],
      [{ a: { uniqueValues: { property: 'region', size: 0 } } }, 'size'],
      // uniqueValues on a MULTI_SELECT is answered (a bucket per value, issue 15); a histogram of one is not.
      [{ a: { numberHistogram: { property: 'my_property', interval: 1 } } }, 'MULTI_SELECT'],
      [{ a: { timeHistogram: { property: 'seen_at', calendarInterval: '1h' } } }, 'calendarInterval'],
      [{ a: { timeHistogram: { property: 'seen_at', calendarInterval: '1M', timeZone: 'Mars/Olympus' } } }, 'time zone'],
      [{ a: { timeHistogram: { property: 'qty', calendarInterval: '1M' } } }, 'DATE and DATETIME'],
      [{ a: { numberHistogram: { property: 'qty', interval: 0 } } }, 'positive'],
      [{ a: { numberHistogram: { property: 'manufacturer', interval: 5 } } }, 'numeric'],
      [{ a: { sum: { property: 'region' } } }, 'SELECT'],
      [{ a: { sum: {} } }, 'property'],
      [{ a: { min: { property: 'nope' } } }, "Unknown field 'nope'"],
    ])('rejects %j', async (aggregates, msg) => {
      const r = await tree('devices', { aggregates });
      expect(r.status).toBe(400);
      expect(r.body.code).toBe('VALIDATION_ERROR');
      expect(r.body.message).toContain(msg);
    });

    it('rejects a body without aggregates or with unknown keys, and an unknown object', async () => {
      for (const body of [{}, { aggregates: [] }, { aggregates: { n: metric }, lastUpdatedTime: {} }, 'x']) {
        const r = await tree('devices', body);
        expect(r.status, JSON.stringify(body)).toBe(400);
        expect(r.body.code).toBe('VALIDATION_ERROR');
      }
      const o = await tree('nope', { aggregates: { n: metric } });
      expect(o.body.code).toBe('INVALID_OBJECT');
    });
  });

  it("answers only for the caller's workspace", async () => {
    const r = await tree('contacts', { aggregates: { n: { count: {} } } }, t.b.adminToken);
    expect(r.body.count).toBe(1);
    const d = await tree('devices', { aggregates: { n: { count: {} } } }, t.b.adminToken);
    expect(d.body.code).toBe('INVALID_OBJECT');
  });
});
