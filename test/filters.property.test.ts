import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Db } from '../src/db/database.js';
import type { Condition, FilterGroup, Operator } from '../src/services/filters.js';
import { createRecords, deleteRecords, listRecords, type RecordData } from '../src/services/records.js';
import { createObject } from '../src/services/schema.js';
import { freshDb, makeWorkspace, type TestWorkspace } from './helpers.js';

/**
 * The filter compiler (SQL) must return exactly the records that a plain JavaScript reading of
 * the operators returns, on random data with nulls, for every operator and nested and/or/not groups.
 * The reference below is written from the documented semantics, not from the compiler:
 *  - comparisons (eq, gt, in, contains, ...) on an empty value are false;
 *  - neq / not_in / not_contains are their negation, so they include empty values;
 *  - contains / starts_with are ASCII case-insensitive substring / prefix tests, % and _ literal;
 *  - MULTI_SELECT: contains = has the value, in = has any, not_in = has none, eq = exactly the set;
 *  - an empty 'in' list matches nothing, an empty 'not_in' list everything;
 *  - a 'not' group is NOT(AND of its conditions).
 */

const OBJECT = 'prop_items';
const SELECT_OPTIONS = ['alpha', 'Beta', 'a_b', 'a%b', 'gamma'];
const MULTI_OPTIONS = ['red', 'green', 'blue', 'r_d'];
const TEXT_CHARS = ['a', 'A', 'b', 'B', 'x', '%', '_', '\\', ' ', '0'];
const DAY = 86_400_000;
const BASE_MS = Date.UTC(2024, 0, 30, 12, 0, 0);

type Kind = 'TEXT' | 'INTEGER' | 'CURRENCY' | 'DATE' | 'DATETIME' | 'SELECT' | 'MULTI_SELECT' | 'BOOLEAN';

const FIELDS: { name: string; type: Kind }[] = [
  { name: 'title', type: 'TEXT' },
  { name: 'qty', type: 'INTEGER' },
  { name: 'price', type: 'CURRENCY' },
  { name: 'day', type: 'DATE' },
  { name: 'at', type: 'DATETIME' },
  { name: 'kind', type: 'SELECT' },
  { name: 'tags', type: 'MULTI_SELECT' },
  { name: 'active', type: 'BOOLEAN' },
];

const COMMON: Operator[] = ['eq', 'equals', 'neq', 'not_equals', 'in', 'not_in', 'is_null', 'is_not_null'];
const ORDER: Operator[] = ['gt', 'gte', 'lt', 'lte', 'between'];
const TEXT_OPS: Operator[] = ['contains', 'not_contains', 'starts_with'];
const OPS: Record<Kind, Operator[]> = {
  TEXT: [...COMMON, ...ORDER, ...TEXT_OPS],
  INTEGER: [...COMMON, ...ORDER],
  CURRENCY: [...COMMON, ...ORDER],
  DATE: [...COMMON, ...ORDER],
  DATETIME: [...COMMON, ...ORDER],
  SELECT: [...COMMON, ...TEXT_OPS],
  MULTI_SELECT: [...COMMON, 'contains', 'not_contains'],
  BOOLEAN: ['eq', 'equals', 'neq', 'not_equals', 'is_null', 'is_not_null'],
};

// ---------------------------------------------------------------------------------------------
// Values: small pools, so that equal values, ties and prefix matches actually happen.

/** A few fixed words (so equal values occur) and random short strings over an alphabet with LIKE metacharacters. */
const textArb = fc.oneof(
  { weight: 2, arbitrary: fc.constantFrom('ab', 'AB', 'aB x', 'a%', 'a_b', 'axb', 'x\\y', ' ab', '0') },
  { weight: 1, arbitrary: fc.string({ unit: fc.constantFrom(...TEXT_CHARS), minLength: 1, maxLength: 4 }) },
);
const dateArb = fc.integer({ min: 0, max: 12 }).map((n) => new Date(BASE_MS + n * 3 * DAY).toISOString().slice(0, 10));
/** Instants on a 7-hour grid, written in either UTC or a +02:00 offset (the service stores UTC). */
const dateTimeArb = fc.tuple(fc.integer({ min: 0, max: 12 }), fc.boolean()).map(([n, offset]) => {
  const ms = BASE_MS + n * 7 * 3_600_000;
  if (!offset) return new Date(ms).toISOString();
  return `${new Date(ms + 2 * 3_600_000).toISOString().slice(0, 19)}+02:00`;
});
// Cents on a coarse grid (…, -0.37, 0, 0.37, 0.74, …): exact decimals that still collide.
const centsArb = fc.integer({ min: -6, max: 6 }).map((n) => n * 37);

function valueArb(type: Kind): fc.Arbitrary<unknown> {
  switch (type) {
    case 'TEXT':
      return textArb;
    case 'INTEGER':
      return fc.integer({ min: -5, max: 5 });
    case 'CURRENCY':
      return centsArb.map((c) => c / 100);
    case 'DATE':
      return dateArb;
    case 'DATETIME':
      return dateTimeArb;
    case 'SELECT':
      return fc.constantFrom(...SELECT_OPTIONS);
    case 'MULTI_SELECT':
      return fc.subarray(MULTI_OPTIONS);
    case 'BOOLEAN':
      return fc.boolean();
  }
}

/** An operand as a client might send it: numbers sometimes as strings, booleans sometimes as text. */
function operandArb(type: Kind): fc.Arbitrary<unknown> {
  switch (type) {
    case 'INTEGER':
    case 'CURRENCY':
      return fc.tuple(valueArb(type), fc.boolean()).map(([v, asText]) => (asText ? String(v) : v));
    case 'BOOLEAN':
      return fc.constantFrom(true, false, 'true', 'false');
    default:
      return valueArb(type);
  }
}

const recordArb = fc.record(Object.fromEntries(FIELDS.map((f) => [f.name, fc.option(valueArb(f.type), { nil: null, freq: 4 })])) as Record<string, fc.Arbitrary<unknown>>);

function conditionArbFor(f: { name: string; type: Kind }, op: Operator): fc.Arbitrary<Condition> {
  const c = (value?: unknown): Condition => (value === undefined ? { field: f.name, operator: op } : { field: f.name, operator: op, value });
  switch (op) {
    case 'is_null':
    case 'is_not_null':
      return fc.constant(c());
    case 'between':
      return fc.tuple(operandArb(f.type), operandArb(f.type)).map(([lo, hi]) => c([lo, hi]));
    case 'in':
    case 'not_in':
      if (f.type === 'MULTI_SELECT') return fc.subarray(MULTI_OPTIONS).map((vs) => c(vs));
      return fc.array(operandArb(f.type), { maxLength: 3 }).map((vs) => c(vs));
    case 'contains':
    case 'not_contains':
    case 'starts_with':
      if (f.type === 'MULTI_SELECT') return fc.constantFrom(...MULTI_OPTIONS).map((v) => c(v));
      if (f.type === 'SELECT') return fc.oneof(fc.constantFrom(...SELECT_OPTIONS, 'A', 'b', '_', '%', 'ALPHA', 'a_', 'amm'), textArb).map((v) => c(v));
      return textArb.map((v) => c(v));
    default:
      return operandArb(f.type).map((v) => c(v));
  }
}

const ALL_PAIRS = FIELDS.flatMap((f) => OPS[f.type].map((op) => ({ f, op })));

const conditionArb: fc.Arbitrary<Condition> = fc.oneof(...ALL_PAIRS.map(({ f, op }) => conditionArbFor(f, op)));

/** Groups nested up to `depth` levels (the service accepts 6), with 0 to 3 members each. */
function groupArbOf(depth: number): fc.Arbitrary<FilterGroup> {
  const member = depth > 1 ? fc.oneof({ weight: 3, arbitrary: conditionArb }, { weight: 1, arbitrary: groupArbOf(depth - 1) }) : conditionArb;
  return fc.record({
    operator: fc.constantFrom('and' as const, 'or' as const, 'not' as const),
    conditions: fc.array(member, { maxLength: 3 }),
  });
}
const groupArb = groupArbOf(4);

// ---------------------------------------------------------------------------------------------
// The reference: plain JavaScript over the records as the API returns them.

const lowerAscii = (s: string) => s.replace(/[A-Z]/g, (ch) => ch.toLowerCase());

function toBool(v: unknown): boolean {
  return v === true || v === 'true';
}

/** Comparable form of a value of the field's type (numbers, epoch ms, or text). */
function key(type: Kind, v: unknown): number | string {
  switch (type) {
    case 'INTEGER':
    case 'CURRENCY':
      return Number(v);
    case 'DATETIME':
      return Date.parse(v as string);
    case 'BOOLEAN':
      return toBool(v) ? 1 : 0;
    default:
      return v as string;
  }
}

function matchesCondition(rec: RecordData, c: Condition): boolean {
  const f = FIELDS.find((x) => x.name === c.field)!;
  const v = rec[c.field] as unknown;
  const op = c.operator === 'equals' ? 'eq' : c.operator === 'not_equals' ? 'neq' : c.operator;
  if (op === 'is_null') return v === null;
  if (op === 'is_not_null') return v !== null;

  if (f.type === 'MULTI_SELECT') {
    const have = v as string[] | null;
    switch (op) {
      case 'eq': {
        const want = c.value as string[];
        if (want.length === 0) return have === null;
        return have !== null && have.length === new Set(want).size && want.every((x) => have.includes(x));
      }
      case 'neq':
        return !matchesCondition(rec, { ...c, operator: 'eq' });
      case 'contains':
        return !!have?.includes(c.value as string);
      case 'not_contains':
        return have === null || !have.includes(c.value as string);
      case 'in':
        return !!have?.some((x) => (c.value as string[]).includes(x));
      case 'not_in':
        return have === null || !have.some((x) => (c.value as string[]).includes(x));
    }
    throw new Error(`reference: ${op} on MULTI_SELECT`);
  }

  const eq = (operand: unknown) => v !== null && key(f.type, v) === key(f.type, operand);
  const cmp = (operand: unknown) => {
    const a = key(f.type, v);
    const b = key(f.type, operand);
    return a < b ? -1 : a > b ? 1 : 0;
  };
  switch (op) {
    case 'eq':
      return eq(c.value);
    case 'neq':
      return !eq(c.value);
    case 'gt':
      return v !== null && cmp(c.value) > 0;
    case 'gte':
      return v !== null && cmp(c.value) >= 0;
    case 'lt':
      return v !== null && cmp(c.value) < 0;
    case 'lte':
      return v !== null && cmp(c.value) <= 0;
    case 'between': {
      const [lo, hi] = c.value as [unknown, unknown];
      return v !== null && cmp(lo) >= 0 && cmp(hi) <= 0;
    }
    case 'in':
      return (c.value as unknown[]).some((x) => eq(x));
    case 'not_in':
      return !(c.value as unknown[]).some((x) => eq(x));
    case 'contains':
      return v !== null && lowerAscii(v as string).includes(lowerAscii(c.value as string));
    case 'not_contains':
      return v === null || !lowerAscii(v as string).includes(lowerAscii(c.value as string));
    case 'starts_with':
      return v !== null && lowerAscii(v as string).startsWith(lowerAscii(c.value as string));
  }
  throw new Error(`reference: unknown operator ${op}`);
}

function matches(rec: RecordData, node: Condition | FilterGroup): boolean {
  if (!('conditions' in node)) return matchesCondition(rec, node);
  const results = node.conditions.map((c) => matches(rec, c));
  if (node.operator === 'and') return results.every(Boolean);
  if (node.operator === 'or') return results.some(Boolean);
  return !results.every(Boolean);
}

// ---------------------------------------------------------------------------------------------

describe('filter compiler = JavaScript reference (property)', () => {
  let db: Db;
  let w: TestWorkspace;

  beforeAll(async () => {
    db = await freshDb();
    w = await makeWorkspace(db, 'props');
    await createObject(w.ctx, {
      name: OBJECT,
      fields: FIELDS.map((f) => ({
        name: f.name,
        type: f.type,
        ...(f.type === 'SELECT' ? { options: SELECT_OPTIONS } : {}),
        ...(f.type === 'MULTI_SELECT' ? { options: MULTI_OPTIONS } : {}),
      })),
    });
  });
  afterAll(() => db.close());

  /** Insert the records, run fn on what the service stored, then remove them. */
  async function withRecords(inputs: Record<string, unknown>[], fn: (stored: RecordData[]) => Promise<void>) {
    const stored = inputs.length ? await createRecords(w.ctx, OBJECT, inputs) : [];
    try {
      await fn(stored);
    } finally {
      if (stored.length)
        await deleteRecords(
          w.ctx,
          OBJECT,
          stored.map((r) => r.id),
        );
    }
  }

  async function compilerIds(filter: FilterGroup): Promise<{ ids: string[]; total: number | null }> {
    const r = await listRecords(w.ctx, OBJECT, { filter, limit: 100, fields: ['id'] });
    expect(r.nextCursor).toBeNull();
    return { ids: r.data.map((x) => x.id).sort(), total: r.total };
  }

  function referenceIds(stored: RecordData[], filter: FilterGroup): string[] {
    return stored
      .filter((r) => matches(r, filter))
      .map((r) => r.id)
      .sort();
  }

  it('stores what it was given (the reference reads the stored records)', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(recordArb, { maxLength: 8 }), async (inputs) => {
        await withRecords(inputs, async (stored) => {
          stored.forEach((s, i) => {
            const input = inputs[i]!;
            expect(s.title).toBe(input.title === null || (input.title as string).trim() === '' ? null : input.title);
            expect(s.qty).toBe(input.qty);
            expect(s.price).toBe(input.price);
            expect(s.day).toBe(input.day);
            expect(s.at === null ? null : Date.parse(s.at as string)).toBe(input.at === null ? null : Date.parse(input.at as string));
            expect(s.kind).toBe(input.kind);
            const tags = input.tags as string[] | null;
            expect(s.tags === null ? null : [...(s.tags as string[])].sort()).toEqual(tags === null || tags.length === 0 ? null : [...tags].sort());
            expect(s.active).toBe(input.active);
          });
        });
      }),
      { numRuns: 30 },
    );
  });

  it(`every operator on every field type, one condition at a time (${ALL_PAIRS.length} field/operator pairs per run)`, async () => {
    const everyPair = fc.tuple(...ALL_PAIRS.map(({ f, op }) => conditionArbFor(f, op)));
    // Cases where a condition kept some records and dropped others, per field/operator pair:
    // proof that the runs compared something more telling than "all" or "none".
    const telling = new Map<string, number>();
    await fc.assert(
      fc.asyncProperty(fc.array(recordArb, { maxLength: 20 }), everyPair, async (inputs, conditions) => {
        await withRecords(inputs, async (stored) => {
          for (const c of conditions) {
            const filter: FilterGroup = { operator: 'and', conditions: [c] };
            const got = await compilerIds(filter);
            expect(got.ids, JSON.stringify(c)).toEqual(referenceIds(stored, filter));
            expect(got.total).toBe(got.ids.length);
            if (got.ids.length > 0 && got.ids.length < stored.length) {
              const k = `${c.field} ${c.operator}`;
              telling.set(k, (telling.get(k) ?? 0) + 1);
            }
          }
        });
      }),
      { numRuns: 100 },
    );
    const untold = ALL_PAIRS.map(({ f, op }) => `${f.name} ${op}`).filter((k) => !telling.get(k));
    expect(untold).toEqual([]);
    // 9,500 queries a run: about 10 s on SQLite, longer on PostgreSQL and on a loaded machine.
  }, 120_000);

  it('nested and / or / not groups', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(recordArb, { maxLength: 20 }), fc.array(groupArb, { minLength: 1, maxLength: 6 }), async (inputs, filters) => {
        await withRecords(inputs, async (stored) => {
          for (const filter of filters) {
            const got = await compilerIds(filter);
            expect(got.ids, JSON.stringify(filter)).toEqual(referenceIds(stored, filter));
            expect(got.total).toBe(got.ids.length);
          }
        });
      }),
      { numRuns: 200 },
    );
  }, 120_000);

  it('pages through a filtered listing without gaps or duplicates', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(recordArb, { minLength: 1, maxLength: 25 }),
        groupArb,
        fc.constantFrom(...FIELDS.filter((f) => f.type !== 'MULTI_SELECT').map((f) => f.name), 'created_at'),
        fc.constantFrom('asc' as const, 'desc' as const),
        fc.integer({ min: 1, max: 4 }),
        async (inputs, filter, sortBy, sortDir, limit) => {
          await withRecords(inputs, async (stored) => {
            const seen: string[] = [];
            let cursor: string | undefined;
            for (let page = 0; page < 100; page++) {
              const r = await listRecords(w.ctx, OBJECT, { filter, sortBy, sortDir, limit, cursor, fields: ['id'] });
              expect(r.data.length).toBeLessThanOrEqual(limit);
              seen.push(...r.data.map((x) => x.id));
              if (!r.nextCursor) break;
              cursor = r.nextCursor;
            }
            expect(new Set(seen).size).toBe(seen.length);
            // Expected order: by value with empty values lowest (first ascending, last descending),
            // ties in insertion order (reversed when descending).
            const type: Kind = FIELDS.find((f) => f.name === sortBy)?.type ?? 'TEXT';
            const sign = sortDir === 'asc' ? 1 : -1;
            const expected = stored
              .map((r, i) => ({ r, i }))
              .filter(({ r }) => matches(r, filter))
              .sort((x, y) => {
                const a = x.r[sortBy] as unknown;
                const b = y.r[sortBy] as unknown;
                if (a === null && b !== null) return -sign;
                if (a !== null && b === null) return sign;
                if (a !== null && b !== null) {
                  const ka = key(type, a);
                  const kb = key(type, b);
                  if (ka !== kb) return (ka < kb ? -1 : 1) * sign;
                }
                return (x.i - y.i) * sign;
              })
              .map(({ r }) => r.id);
            expect(seen).toEqual(expected);
          });
        },
      ),
      { numRuns: 60 },
    );
  }, 120_000);
});
