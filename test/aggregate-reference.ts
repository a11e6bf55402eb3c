import { expect } from 'vitest';

/**
 * A plain JavaScript reading of the aggregation semantics documented in README "Aggregations" and
 * in src/services/aggregate.ts, written independently of the engine (no SQL), for the aggregate
 * tests to compare against:
 *  - COUNT(id) counts records, COUNT(field) the records where it has a value;
 *  - COUNT_DISTINCT ignores empty values;
 *  - SUM of nothing is 0; AVG, MIN, MAX of nothing are null; AVG of integers is not truncated;
 *  - CURRENCY sums are exact: a number while the total in minor units is a safe integer, beyond that
 *    a decimal string;
 *  - records without a value form the null group, which is returned and counted;
 *  - groups come by count descending, then group value ascending in SQLite's order (NULL first,
 *    then numbers, then text by code point); histograms by bucket ascending;
 *  - time buckets are named by their local start date; weeks start on Monday.
 */

export type Rec = Record<string, unknown>;
export type FType = 'TEXT' | 'EMAIL' | 'INTEGER' | 'CURRENCY' | 'NUMBER' | 'FLOAT' | 'PERCENTAGE' | 'DATE' | 'DATETIME' | 'SELECT' | 'MULTI_SELECT' | 'RELATION' | 'BOOLEAN';
/** Field types by name; 'id' is TEXT. */
export type Types = Record<string, FType>;

/** mulberry32 (the seed's own PRNG): deterministic data, so a failure can be replayed. */
export { prng } from '../src/services/seed.js';

export const isNull = (v: unknown) => v === null || v === undefined;
export const present = (rs: Rec[], f: string) => rs.map((r) => r[f]).filter((v) => !isNull(v));

/** SQLite's ascending order of stored values: NULL, then numbers (false/true are 0/1), then text by code point. */
export function cmpValue(a: unknown, b: unknown): number {
  if (isNull(a)) return isNull(b) ? 0 : -1;
  if (isNull(b)) return 1;
  const num = (x: unknown) => typeof x === 'number' || typeof x === 'boolean';
  if (num(a) && num(b)) return Number(a) - Number(b);
  if (num(a)) return -1;
  if (num(b)) return 1;
  const x = String(a);
  const y = String(b);
  return x < y ? -1 : x > y ? 1 : 0;
}

/** Exact decimal from minor units: a number while safe, else a decimal string. */
export function decimal(units: bigint, scale = 2): number | string {
  const neg = units < 0n;
  const abs = neg ? -units : units;
  const p = 10n ** BigInt(scale);
  const s = scale === 0 ? `${neg ? '-' : ''}${abs}` : `${neg ? '-' : ''}${abs / p}.${(abs % p).toString().padStart(scale, '0')}`;
  return abs <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(s) : s;
}

/** Minor units of a decimal amount, exactly (from its shortest decimal text). */
export function toCents(v: unknown, scale = 2): bigint {
  const s = typeof v === 'string' ? v : String(v);
  const m = /^(-)?(\d+)(?:\.(\d+))?$/.exec(s);
  if (!m) throw new Error(`not a decimal: ${s}`);
  return BigInt(m[2]! + (m[3] ?? '').padEnd(scale, '0')) * (m[1] ? -1n : 1n);
}

export type Fn = 'count' | 'count_distinct' | 'sum' | 'avg' | 'min' | 'max';

/** One aggregate function over the records' values of a field (values in their API form). */
export function metricRef(fn: Fn, rs: Rec[], field: string, type: FType): unknown {
  const vs = field === 'id' ? rs.map((r) => r.id) : present(rs, field);
  switch (fn) {
    case 'count':
      return field === 'id' ? rs.length : vs.length;
    case 'count_distinct':
      return new Set(vs.map((v) => JSON.stringify(v))).size;
    case 'sum':
      if (type === 'CURRENCY') return decimal(vs.reduce((s: bigint, v) => s + toCents(v), 0n));
      if (type === 'INTEGER')
        return decimal(
          vs.reduce((s: bigint, v) => s + BigInt(v as number), 0n),
          0,
        );
      return (vs as number[]).reduce((s, v) => s + v, 0);
    case 'avg':
      return vs.length ? (vs as number[]).reduce((s, v) => s + v, 0) / vs.length : null;
    case 'min':
    case 'max': {
      if (!vs.length) return null;
      const sorted = [...vs].sort(cmpValue);
      return fn === 'min' ? sorted[0] : sorted[sorted.length - 1];
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Buckets

const localFormat = new Map<string, Intl.DateTimeFormat>();

/** The local calendar date (YYYY-MM-DD) of an instant in an IANA zone, by the platform's tz database. */
export function localDate(iso: string, tz: string): string {
  let f = localFormat.get(tz);
  if (!f) localFormat.set(tz, (f = new Intl.DateTimeFormat('en-CA', { timeZone: tz, year: 'numeric', month: '2-digit', day: '2-digit' })));
  const parts = Object.fromEntries(f.formatToParts(new Date(iso)).map((p) => [p.type, p.value]));
  return `${parts.year}-${parts.month}-${parts.day}`;
}

export type Interval = 'day' | 'week' | 'month' | 'quarter' | 'year';

/** Start of the calendar bucket holding a date; weeks start on Monday. */
export function calendarBucket(date: string, interval: Interval): string {
  const [y, m, d] = date.split('-').map(Number) as [number, number, number];
  const pad = (n: number) => String(n).padStart(2, '0');
  switch (interval) {
    case 'day':
      return date;
    case 'week': {
      const t = Date.UTC(y, m - 1, d);
      const back = (new Date(t).getUTCDay() + 6) % 7; // days since Monday
      return new Date(t - back * 86_400_000).toISOString().slice(0, 10);
    }
    case 'month':
      return `${y}-${pad(m)}-01`;
    case 'quarter':
      return `${y}-${pad(Math.floor((m - 1) / 3) * 3 + 1)}-01`;
    case 'year':
      return `${y}-01-01`;
  }
}

export function timeBucket(v: unknown, type: FType, interval: Interval, tz = 'UTC'): string | null {
  if (isNull(v)) return null;
  const date = type === 'DATETIME' ? localDate(v as string, tz) : (v as string);
  return calendarBucket(date, interval);
}

/**
 * Number histogram bucket start: floor(v / width) * width; currencies computed in minor units. A
 * start of -0 (a tiny negative v whose v / width underflows) is the 0 bucket: +0.
 */
export function numberBucket(v: unknown, type: FType, width: number): number | null {
  if (isNull(v)) return null;
  let start: number;
  if (type === 'CURRENCY') {
    const c = Number(toCents(v));
    const w = width * 100;
    start = (Math.floor(c / w) * w) / 100;
  } else start = Math.floor((v as number) / width) * width;
  return start === 0 ? 0 : start;
}

// ---------------------------------------------------------------------------------------------
// Grouping

export interface RefGroup {
  key: unknown[];
  members: Rec[];
}

/** Records grouped by keys, ordered by count descending then keys ascending (or by keys, for histograms). */
export function groupRecords(rs: Rec[], keyOf: (r: Rec) => unknown[], order: 'count' | 'key' = 'count'): RefGroup[] {
  const m = new Map<string, RefGroup>();
  for (const r of rs) {
    const key = keyOf(r).map((k) => (k === undefined ? null : k));
    const id = JSON.stringify(key);
    let g = m.get(id);
    if (!g) m.set(id, (g = { key, members: [] }));
    g.members.push(r);
  }
  const byKey = (x: RefGroup, y: RefGroup) => x.key.reduce((c: number, k, i) => c || cmpValue(k, y.key[i]), 0);
  return [...m.values()].sort(order === 'count' ? (x, y) => y.members.length - x.members.length || byKey(x, y) : byKey);
}

// ---------------------------------------------------------------------------------------------
// Nested trees (Cognite style), as answered by POST /aggregate/{object}/tree

const METRICS: Record<string, Fn> = { avg: 'avg', min: 'min', max: 'max', sum: 'sum', count: 'count', countDistinct: 'count_distinct' };
const CALENDAR: Record<string, Interval> = { '1d': 'day', '1w': 'week', '1M': 'month', '1q': 'quarter', '1y': 'year' };

const propName = (p: unknown) => (Array.isArray(p) ? (p[p.length - 1] as string) : (p as string));

export function refTree(rs: Rec[], aggregates: Record<string, any>, types: Types, labels?: Map<unknown, string>): Rec {
  const out: Rec = {};
  for (const [name, node] of Object.entries(aggregates)) {
    const [kind, spec] = Object.entries(node as Rec)[0]! as [string, any];
    if (METRICS[kind]) {
      const field = kind === 'count' && spec?.property === undefined ? 'id' : propName(spec.property);
      out[name] = { [kind]: metricRef(METRICS[kind], rs, field, types[field] ?? 'TEXT') };
      continue;
    }
    const field = propName(spec.property);
    const type = types[field]!;
    const sub = (members: Rec[]) => (spec.aggregates ? refTree(members, spec.aggregates, types, labels) : {});
    if (kind === 'uniqueValues') {
      const groups = groupRecords(rs, (r) => [r[field]]);
      const size = spec.size ?? 10;
      const shown = groups.slice(0, size);
      out[name] = {
        uniqueValueBuckets: shown.map((g) => ({
          value: g.key[0],
          count: g.members.length,
          aggregates: sub(g.members),
          ...(type === 'RELATION' ? { label: g.key[0] === null ? null : (labels?.get(g.key[0]) ?? null) } : {}),
        })),
        total: groups.length,
        otherCount: rs.length - shown.reduce((s, g) => s + g.members.length, 0),
      };
    } else if (kind === 'numberHistogram') {
      const groups = groupRecords(rs, (r) => [numberBucket(r[field], type, spec.interval)], 'key');
      out[name] = { numberHistogramBuckets: groups.map((g) => ({ start: g.key[0], count: g.members.length, aggregates: sub(g.members) })) };
    } else if (kind === 'timeHistogram') {
      const interval = CALENDAR[spec.calendarInterval] ?? spec.calendarInterval;
      const groups = groupRecords(rs, (r) => [timeBucket(r[field], type, interval, spec.timeZone ?? 'UTC')], 'key');
      out[name] = { timeHistogramBuckets: groups.map((g) => ({ start: g.key[0], count: g.members.length, aggregates: sub(g.members) })) };
    } else throw new Error(`reference: unknown aggregate ${kind}`);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Filters (FilterGroup), two-valued: a comparison on an empty value is false; neq / not_in include
// empty values; 'not' is NOT(AND of its conditions).

export interface Cond {
  field: string;
  operator: string;
  value?: unknown;
}
export interface Group {
  operator: 'and' | 'or' | 'not';
  conditions: (Cond | Group)[];
}

const asciiLower = (s: string) => s.replace(/[A-Z]/g, (c) => c.toLowerCase());

export function matches(r: Rec, g: Group | Cond, types: Types): boolean {
  if ('conditions' in g) {
    const parts = g.conditions.map((c) => matches(r, c, types));
    if (g.operator === 'or') return parts.some(Boolean);
    const all = parts.every(Boolean);
    return g.operator === 'not' ? !all : all;
  }
  const v = r[g.field];
  const type = types[g.field] ?? 'TEXT';
  const norm = (x: unknown) => (type === 'DATETIME' && typeof x === 'string' ? new Date(x).toISOString() : x);
  const operand = norm(g.value);
  switch (g.operator) {
    case 'is_null':
      return isNull(v);
    case 'is_not_null':
      return !isNull(v);
    case 'eq':
    case 'equals':
      return !isNull(v) && cmpValue(v, operand) === 0;
    case 'neq':
    case 'not_equals':
      return isNull(v) || cmpValue(v, operand) !== 0;
    case 'gt':
      return !isNull(v) && cmpValue(v, operand) > 0;
    case 'gte':
      return !isNull(v) && cmpValue(v, operand) >= 0;
    case 'lt':
      return !isNull(v) && cmpValue(v, operand) < 0;
    case 'lte':
      return !isNull(v) && cmpValue(v, operand) <= 0;
    case 'in':
      if (type === 'MULTI_SELECT') return !isNull(v) && (g.value as unknown[]).some((x) => (v as unknown[]).includes(x));
      return !isNull(v) && (g.value as unknown[]).some((x) => cmpValue(v, norm(x)) === 0);
    case 'not_in':
      return isNull(v) || !(g.value as unknown[]).some((x) => cmpValue(v, norm(x)) === 0);
    case 'contains':
      if (type === 'MULTI_SELECT') return !isNull(v) && (v as unknown[]).includes(g.value);
      return !isNull(v) && asciiLower(String(v)).includes(asciiLower(String(g.value)));
    case 'starts_with':
      return !isNull(v) && asciiLower(String(v)).startsWith(asciiLower(String(g.value)));
  }
  throw new Error(`reference: operator ${g.operator}`);
}

// ---------------------------------------------------------------------------------------------

/** Deep equality, with a relative tolerance for non-integral numbers (averages, float sums). */
export function expectNear(actual: unknown, expected: unknown, path = '$', tol = 1e-9): void {
  if (typeof expected === 'number' && typeof actual === 'number' && (!Number.isInteger(expected) || !Number.isInteger(actual))) {
    expect(Math.abs((actual as number) - expected), `${path}: ${String(actual)} vs ${expected}`).toBeLessThanOrEqual(tol * Math.max(1, Math.abs(expected)));
    return;
  }
  if (Array.isArray(expected)) {
    expect(Array.isArray(actual), `${path} is an array`).toBe(true);
    expect((actual as unknown[]).length, `${path}.length`).toBe(expected.length);
    expected.forEach((e, i) => expectNear((actual as unknown[])[i], e, `${path}[${i}]`, tol));
    return;
  }
  if (expected && typeof expected === 'object') {
    expect(actual && typeof actual === 'object', `${path} is an object`).toBeTruthy();
    expect(Object.keys(actual as object).sort(), `${path} keys`).toEqual(Object.keys(expected).sort());
    for (const k of Object.keys(expected)) expectNear((actual as Rec)[k], (expected as Rec)[k], `${path}.${k}`, tol);
    return;
  }
  expect(actual, path).toEqual(expected);
}
