import type { CompiledQuery } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { overriding } from '../src/db/overriding.js';
import { aggregateGroups } from '../src/services/aggregate.js';
import { aggregateTree } from '../src/services/aggregate-tree.js';
import { createRecords } from '../src/services/records.js';
import { bucketRanges } from '../src/services/time-buckets.js';
import { calendarBucket, type Interval, localDate, prng } from './aggregate-reference.js';
import { call, type TestApp, testApp } from './helpers.js';

/**
 * Calendar buckets of a DATETIME field in a time zone (issue 16): an indexed field's histogram is
 * counted over index ranges cut at the zone's bucket starts and offset changes (bucketRanges), an
 * unindexed one's row by row. Both answers, through POST /api/v1/aggregate/{object}, must equal a
 * plain JavaScript bucketing by Intl, in zones with daylight-saving changes, half-hour and 45-minute
 * offsets, a 30-minute summer time and +14, for every interval, with and without a filter.
 */

const ZONES = ['America/New_York', 'Asia/Kolkata', 'Asia/Kathmandu', 'Australia/Lord_Howe', 'Pacific/Kiritimati', 'UTC', 'America/Santiago'];
const INTERVALS: Interval[] = ['day', 'week', 'month', 'quarter', 'year'];
const HOUR = 3_600_000;

/** Instants where a zone's offset changes in [from, to), found hour by hour and bisected to the ms. */
function changes(tz: string, from: number, to: number): number[] {
  const f = new Intl.DateTimeFormat('en-US', { timeZone: tz, timeZoneName: 'longOffset' });
  const off = (t: number) => f.format(t).split(' ').pop();
  const out: number[] = [];
  for (let t = from; t < to; t += HOUR) {
    if (off(t) === off(t + HOUR)) continue;
    let a = t;
    let b = t + HOUR;
    while (b - a > 1) {
      const m = Math.floor((a + b) / 2);
      if (off(m) === off(a)) a = m;
      else b = m;
    }
    out.push(b);
  }
  return out;
}

/** Local midnights of a zone (as instants) near `t`: the instants where its day changes. */
function midnights(tz: string, t: number): number[] {
  const out: number[] = [];
  let prev = localDate(new Date(t).toISOString(), tz);
  for (let s = t; s < t + 3 * 24 * HOUR; s += 15 * 60_000) {
    const d = localDate(new Date(s).toISOString(), tz);
    if (d !== prev) out.push(s);
    prev = d;
  }
  return out;
}

let t: TestApp;
const rows: { at: string | null; at_plain: string | null; n: number | null; kind: string }[] = [];
const api = (body: unknown) => call(t.app, t.a.adminToken, 'POST', '/api/v1/aggregate/visits', body);

beforeAll(async () => {
  t = await testApp();
  const s = await call(t.app, t.a.adminToken, 'POST', '/api/v1/schema', {
    name: 'visits',
    fields: [
      { name: 'at', type: 'DATETIME', indexed: true },
      { name: 'at_plain', type: 'DATETIME' },
      { name: 'n', type: 'INTEGER' },
      { name: 'kind', type: 'SELECT', options: ['a', 'b'] },
    ],
  });
  expect(s.status, JSON.stringify(s.body)).toBe(201);
  const rnd = prng(16);
  const from = Date.parse('2026-01-01T00:00:00Z');
  // Under 400 days: day buckets by index ranges too (see MAX_BUCKET_RANGES).
  const to = Date.parse('2027-01-15T00:00:00Z');
  const instants: number[] = [];
  // Each zone's changes and the local midnights around them, a millisecond either side.
  for (const tz of ZONES) for (const c of changes(tz, from, to)) for (const x of [c, ...midnights(tz, c - 36 * HOUR)]) instants.push(x - 1, x, x + 1);
  // Quarter hours at random (every zone's midnight is one), a millisecond either side, and any instant.
  for (let i = 0; i < 300; i++) {
    const q = from + Math.floor(rnd.next() * ((to - from) / 900_000)) * 900_000;
    instants.push(q - 1, q, from + Math.floor(rnd.next() * (to - from)));
  }
  // Each instant 12 times over (about 11,000 records): a histogram reads index ranges only over
  // enough records (ROWS_PER_RUN a run), which every interval but the day has here.
  instants.push(...instants.flatMap((x) => Array.from({ length: 11 }, () => x)));
  instants.forEach((x, i) => {
    const at = new Date(x).toISOString();
    rows.push({ at: i % 97 === 5 ? null : at, at_plain: i % 97 === 5 ? null : at, n: i % 13 === 0 ? null : Math.floor(rnd.next() * 2001) - 1000, kind: i % 3 ? 'a' : 'b' });
  });
  for (let i = 0; i < rows.length; i += 100) await createRecords(t.a.ctx, 'visits', rows.slice(i, i + 100));
}, 120_000);
afterAll(() => t?.close());

/**
 * The local date of an instant in a zone, by Intl, remembered: every instant is stored 12 times and
 * bucketed for two fields, five intervals and three filters (Intl's formatting was most of the file's time).
 */
const localDates = new Map<string, string>();
function localDateOf(iso: string, tz: string): string {
  const key = `${tz} ${iso}`;
  let d = localDates.get(key);
  if (d === undefined) localDates.set(key, (d = localDate(iso, tz)));
  return d;
}

/** Count, and count/sum/min/max of n, per local bucket (null: no value), by hand. */
function byHand(field: 'at' | 'at_plain', interval: Interval, tz: string, keep: (r: (typeof rows)[number]) => boolean) {
  const out = new Map<string | null, { count: number; ns: number[] }>();
  for (const r of rows.filter(keep)) {
    const v = r[field];
    const b = v === null ? null : calendarBucket(localDateOf(v, tz), interval);
    const g = out.get(b) ?? { count: 0, ns: [] };
    g.count++;
    if (r.n !== null) g.ns.push(r.n);
    out.set(b, g);
  }
  return out;
}

const sorted = (xs: (string | null)[]) => [...xs].sort((x, y) => (x === null ? -1 : y === null ? 1 : x < y ? -1 : x > y ? 1 : 0));

describe('DATETIME calendar buckets in a zone equal a JavaScript bucketing by Intl (index ranges for an indexed field)', () => {
  const metrics = ['count', 'sum', 'min', 'max', 'avg'].map((f) => ({ field: 'n', function: f }));
  const filters = {
    none: { filter: undefined, keep: () => true },
    // On the field itself: still read by index ranges.
    'a span of at': {
      filter: { operator: 'and', conditions: [{ field: 'at', operator: 'between', value: ['2026-03-01T05:00:00Z', '2026-11-02T07:30:00.001Z'] }] },
      keep: (r: (typeof rows)[number]) => r.at !== null && r.at >= '2026-03-01T05:00:00.000Z' && r.at <= '2026-11-02T07:30:00.001Z',
    },
    // On another field: row by row.
    'kind = b': { filter: { operator: 'and', conditions: [{ field: 'kind', operator: 'eq', value: 'b' }] }, keep: (r: (typeof rows)[number]) => r.kind === 'b' },
  } as const;
  for (const [name, { filter, keep }] of Object.entries(filters))
    it.each(ZONES)(`every interval in %s, filter: ${name}`, async (timeZone) => {
      for (const field of ['at', 'at_plain'] as const)
        for (const interval of INTERVALS) {
          const ctxt = `${field} ${interval} ${timeZone} ${name}`;
          const r = await api({ aggregate: metrics, groupBy: [{ field, interval, timeZone }], ...(filter ? { filter } : {}) });
          expect(r.status, `${ctxt}: ${JSON.stringify(r.body).slice(0, 300)}`).toBe(200);
          const want = byHand(field, interval, timeZone, keep);
          const keys = sorted([...want.keys()]);
          const groups = r.body.data.groups as { [k: string]: unknown; count: number; aggregates: { n: Record<string, number | null> } }[];
          expect(
            groups.map((g) => (g as any)[field] ?? (g as any).values?.[field] ?? null),
            ctxt,
          ).toEqual(keys);
          groups.forEach((g, i) => {
            const w = want.get(keys[i]!)!;
            const a = g.aggregates.n;
            expect([g.count, a.count, a.sum, a.min, a.max], `${ctxt} #${i}`).toEqual([
              w.count,
              w.ns.length,
              w.ns.reduce((x, y) => x + y, 0),
              w.ns.length ? Math.min(...w.ns) : null,
              w.ns.length ? Math.max(...w.ns) : null,
            ]);
            if (w.ns.length) expect(a.avg as number, ctxt).toBeCloseTo(w.ns.reduce((x, y) => x + y, 0) / w.ns.length, 9);
            else expect(a.avg, ctxt).toBeNull();
          });
          const all = rows.filter(keep);
          expect(r.body.data.count, ctxt).toBe(all.length);
          expect(r.body.data.aggregates.n.sum, ctxt).toBe(all.reduce((x, e) => x + (e.n ?? 0), 0));
        }
    });

  // The tree's timeHistogram (Cognite's records aggregate too): a top-level one without children is
  // read the same way, from index ranges (or day groups) where that is exact and faster.
  const CALENDAR: Record<Interval, string> = { day: '1d', week: '1w', month: '1M', quarter: '1q', year: '1y' };
  for (const name of ['none', 'a span of at', 'kind = b'] as const)
    it.each(['America/New_York', 'Asia/Kathmandu', 'Australia/Lord_Howe', 'UTC'])(`the tree's timeHistogram, every interval in %s, filter: ${name}`, async (timeZone) => {
      const { filter, keep } = filters[name];
      for (const field of ['at', 'at_plain'] as const)
        for (const interval of INTERVALS) {
          const ctxt = `tree ${field} ${interval} ${timeZone} ${name}`;
          const aggregates = { c: { count: { property: 'n' } }, s: { sum: { property: 'n' } }, lo: { min: { property: 'n' } }, hi: { max: { property: 'n' } }, av: { avg: { property: 'n' } } };
          const r = await call(t.app, t.a.adminToken, 'POST', '/api/v1/aggregate/visits/tree', {
            aggregates: { h: { timeHistogram: { property: field, calendarInterval: CALENDAR[interval], timeZone, aggregates } } },
            ...(filter ? { filter } : {}),
          });
          expect(r.status, `${ctxt}: ${JSON.stringify(r.body).slice(0, 300)}`).toBe(200);
          const want = byHand(field, interval, timeZone, keep);
          const keys = sorted([...want.keys()]);
          const buckets = r.body.aggregates.h.timeHistogramBuckets as { start: string | null; count: number; aggregates: Record<string, Record<string, number | null>> }[];
          expect(
            buckets.map((b) => b.start),
            ctxt,
          ).toEqual(keys);
          buckets.forEach((b, i) => {
            const w = want.get(keys[i]!)!;
            const a = b.aggregates;
            expect([b.count, a.c!.count, a.s!.sum, a.lo!.min, a.hi!.max], `${ctxt} #${i}`).toEqual([
              w.count,
              w.ns.length,
              w.ns.reduce((x, y) => x + y, 0),
              w.ns.length ? Math.min(...w.ns) : null,
              w.ns.length ? Math.max(...w.ns) : null,
            ]);
            if (w.ns.length) expect(a.av!.avg as number, ctxt).toBeCloseTo(w.ns.reduce((x, y) => x + y, 0) / w.ns.length, 9);
            else expect(a.av!.avg, ctxt).toBeNull();
          });
          expect(r.body.count, ctxt).toBe(rows.filter(keep).length);
        }
    });

  it("the tree's timeHistogram of the indexed field is read by index ranges, the unindexed one's row by row", async () => {
    const sent: string[] = [];
    const db = t.a.ctx.db;
    const watched = {
      ...db,
      kysely: overriding(db.kysely, {
        executeQuery: (q: CompiledQuery) => {
          sent.push(q.sql);
          return db.kysely.executeQuery(q);
        },
      }),
      ...(db.boundedRead ? { boundedRead: ((q, ms, signal) => (sent.push(q.sql), db.boundedRead!(q, ms, signal))) as typeof db.boundedRead } : {}),
      readPool: undefined,
    };
    const histogram = (field: string) =>
      aggregateTree({ ...t.a.ctx, db: watched }, 'visits', { aggregates: { h: { timeHistogram: { property: field, calendarInterval: '1M', timeZone: 'America/New_York' } } } });
    const ranged = (await histogram('at')) as any;
    expect(sent.some((q) => /union all/i.test(q))).toBe(true);
    sent.length = 0;
    const perRow = (await histogram('at_plain')) as any;
    expect(sent.some((q) => /union all/i.test(q))).toBe(false);
    // The same buckets either way (the two fields hold the same values).
    expect(ranged.aggregates.h.timeHistogramBuckets).toEqual(perRow.aggregates.h.timeHistogramBuckets);
  });

  it('a value written far past the span between its read and the count is counted in its own bucket', async () => {
    // Another request's write lands right after this histogram read its span (wrapped around the
    // statements the histogram sends: its Kysely on SQLite, its bounded reads on PostgreSQL).
    let armed = true;
    let written: string | undefined;
    const interject = async (rows: unknown[]) => {
      const r = rows[0] as Record<string, unknown> | undefined;
      if (armed && r && 'lo' in r && 'hi' in r) {
        armed = false;
        written = (await createRecords(t.a.ctx, 'visits', [{ at: '2031-06-15T12:00:00.000Z', n: 5, kind: 'a' }]))[0]!.id;
      }
    };
    const db = t.a.ctx.db;
    const wrapped = {
      ...db,
      kysely: overriding(db.kysely, {
        executeQuery: async (q: CompiledQuery) => {
          const r = await db.kysely.executeQuery(q);
          await interject(r.rows);
          return r;
        },
      }),
      ...(db.boundedRead
        ? {
            boundedRead: (async (q, ms, signal) => {
              const r = await db.boundedRead!(q, ms, signal);
              await interject(r);
              return r;
            }) as typeof db.boundedRead,
          }
        : {}),
    };
    try {
      const r = await aggregateGroups({ ...t.a.ctx, db: wrapped }, 'visits', { groupBy: [{ field: 'at', interval: 'year', timeZone: 'UTC' }], order: { by: 'group', dir: 'asc' } });
      expect(written).toBeDefined();
      const years = Object.fromEntries(r.groups!.map((g) => [String(g.values.at), g.count]));
      expect(years['2031-01-01'] ?? years['2031']).toBe(1);
      expect(r.groups!.reduce((x, g) => x + g.count, 0)).toBe(rows.length + 1);
    } finally {
      if (written) await call(t.app, t.a.adminToken, 'DELETE', `/api/v1/records/visits/${written}`);
    }
  });

  it('bucketRanges: every instant falls in exactly one run, named by its local bucket (fall-back across midnight in Asia/Beirut included)', () => {
    const rnd = prng(7);
    for (const tz of [...ZONES, 'Asia/Beirut', 'Europe/Paris', 'America/St_Johns', 'Pacific/Chatham'])
      for (const interval of INTERVALS) {
        const [lo, hi] = interval === 'day' ? ['2026-02-20T00:00:00.000Z', '2026-11-10T00:00:00.000Z'] : ['2021-01-01T00:00:00.000Z', '2027-01-01T00:00:00.000Z'];
        const runs = bucketRanges(tz, interval, lo, hi);
        expect(runs, `${tz} ${interval}`).not.toBeNull();
        const a = Date.parse(lo);
        const span = Date.parse(hi) - a;
        for (let k = 0; k < 1000; k++) {
          const iso = new Date(k % 2 ? a + Math.floor(rnd.next() * span) : a + Math.floor((rnd.next() * span) / 900_000) * 900_000 + (k % 3) - 1).toISOString();
          const hit = runs!.filter((r) => iso >= r.from && iso < r.to);
          expect(hit.length, `${tz} ${interval} ${iso}`).toBe(1);
          expect(hit[0]!.bucket, `${tz} ${interval} ${iso}`).toBe(calendarBucket(localDate(iso, tz), interval));
        }
      }
    // Too many runs (days over decades): none, the histogram buckets row by row.
    expect(bucketRanges('UTC', 'day', '2000-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z')).toBeNull();
  });
});
