import { type Expression, type ExpressionBuilder, type RawBuilder, type SqlBool, sql } from 'kysely';
import { z } from 'zod';
import type { DialectAdapter } from '../db/dialect.js';
import { escapeLike } from '../db/dialect.js';
import { now } from './clock.js';
import { CrmError, validationError } from './errors.js';
import { encodeValue, type FieldDef, parseBoolean, parseDate, parseDateTime, parseNumberValue, toMinorUnits } from './field-types.js';
import { checkText } from './input-limits.js';
import { type LocalRange, localMidnight, looksRelative, relativeRange } from './relative-dates.js';
import { type ObjectDef, resolveField, type WorkspaceSchema } from './schema.js';

export const OPERATORS = ['eq', 'equals', 'neq', 'not_equals', 'gt', 'gte', 'lt', 'lte', 'between', 'in', 'not_in', 'contains', 'not_contains', 'starts_with', 'is_null', 'is_not_null'] as const;
export type Operator = (typeof OPERATORS)[number];
type CanonicalOp = Exclude<Operator, 'equals' | 'not_equals'>;

export interface Condition {
  field: string;
  operator: Operator;
  value?: unknown;
}
export interface FilterGroup {
  /** 'not' matches records for which the AND of its conditions is false. */
  operator: 'and' | 'or' | 'not';
  conditions: (Condition | FilterGroup)[];
}

/**
 * Filter groups nested inside each other. Filter builders and agents write two or three levels (an
 * 'or' of 'and's, a 'not' inside); 16 leaves room for machine-made filters while the whole filter,
 * two JSON levels per group, stays well inside the body's depth limit (INPUT_LIMITS.jsonDepth).
 */
export const MAX_FILTER_DEPTH = 16;
export const MAX_FILTER_CONDITIONS = 200;
export const MAX_IN_VALUES = 1000;
/**
 * Values in all of a filter's lists together. Each becomes one SQL parameter, and SQLite takes at
 * most 32,766 in one statement: 200 conditions of 1,000 values each answered 500 "too many SQL
 * variables". A third of SQLite's limit leaves room for the rest of the statement.
 */
export const MAX_FILTER_VALUES = 10_000;

/** Values a leaf condition carries in lists: Kasar's `value`, Cognite's `{in: {values}}` and the like. */
function listValues(leaf: unknown): number {
  if (typeof leaf !== 'object' || leaf === null || Array.isArray(leaf)) return 0;
  let n = 0;
  for (const v of Object.values(leaf as Record<string, unknown>)) {
    if (Array.isArray(v)) n += v.length;
    else if (typeof v === 'object' && v !== null) for (const w of Object.values(v as Record<string, unknown>)) if (Array.isArray(w)) n += w.length;
  }
  return n;
}

const COGNITE_GROUPS = new Set(['and', 'or', 'not']);

/**
 * Measures a filter as sent, in either spelling (Kasar groups or Cognite and/or/not), with an
 * explicit stack, and refuses it when it nests deeper or holds more conditions than the limits.
 * Runs before anything that recurses over the filter (zod, the Cognite translation, the compiler),
 * which would otherwise overflow the stack on a filter nested thousands deep.
 */
export function checkFilterSize(input: unknown): void {
  if (typeof input !== 'object' || input === null) return;
  let depth = 0;
  let conditions = 0;
  let values = 0;
  const stack: [unknown, number][] = [[input, 0]];
  while (stack.length) {
    const [node, d] = stack.pop()!;
    const o = node as Record<string, unknown>;
    const keys = typeof node === 'object' && node !== null && !Array.isArray(node) ? Object.keys(o) : [];
    let children: unknown[] | undefined;
    if (Array.isArray(o?.conditions)) children = o.conditions;
    else if (keys.length === 1 && COGNITE_GROUPS.has(keys[0]!)) {
      const inner = o[keys[0]!];
      children = Array.isArray(inner) ? inner : [inner];
    }
    if (!children) {
      conditions++;
      values += listValues(node);
      continue;
    }
    depth = Math.max(depth, d + 1);
    for (const c of children) stack.push([c, d + 1]);
  }
  if (depth > MAX_FILTER_DEPTH) throw validationError(`Filter nesting is ${depth} levels deep; the limit is ${MAX_FILTER_DEPTH}`, { limit: MAX_FILTER_DEPTH, depth });
  if (conditions > MAX_FILTER_CONDITIONS) throw validationError(`A filter has ${conditions} conditions; the limit is ${MAX_FILTER_CONDITIONS}`, { limit: MAX_FILTER_CONDITIONS, conditions });
  if (values > MAX_FILTER_VALUES)
    throw validationError(
      `A filter's lists hold ${values} values in all; the limit is ${MAX_FILTER_VALUES} (at most ${MAX_IN_VALUES} in one list): split the request, or filter on something the values share`,
      { limit: MAX_FILTER_VALUES, values },
    );
}

export const conditionSchema = z
  .object({
    field: z.string().describe('Field name, as listed by the schema'),
    operator: z.enum(OPERATORS).describe('Comparison operator'),
    value: z.unknown().optional().describe('Value; an array for in/not_in/between; omitted for is_null/is_not_null'),
  })
  .strict();

const groupShape: z.ZodType<FilterGroup> = z.lazy(() =>
  z
    .object({
      operator: z.enum(['and', 'or', 'not']).describe("How the conditions combine: 'and', 'or', or 'not' (none of them all true)"),
      conditions: z.array(z.union([conditionSchema, groupShape])).describe('Conditions or nested groups'),
    })
    .strict(),
) as z.ZodType<FilterGroup>;

/** The FilterGroup schema, measured first (checkFilterSize): zod recurses once per level of the lazy shape. */
export const filterGroupSchema: z.ZodType<FilterGroup> = z
  .unknown()
  .superRefine((v, ctx) => {
    try {
      checkFilterSize(v);
    } catch (e) {
      ctx.addIssue({ code: 'custom', message: e instanceof Error ? e.message : String(e) });
    }
  })
  .pipe(groupShape) as unknown as z.ZodType<FilterGroup>;

/** For a model reading a tool description: the values a filter understands beyond plain literals. */
export const FILTER_VALUE_HELP =
  "'me' is you on user fields (owner, assignee). Dates take today, yesterday, tomorrow, this_, last_ or next_ + " +
  'week (from Monday), month, quarter, year, and last_N_days, next_N_days (with today, e.g. last_7_days), in the ' +
  'workspace time zone; eq: within, gt: after, lt: before. company.industry, owner.name: filter, sort, group by the related record.';

const TEXTLIKE = new Set(['TEXT', 'EMAIL', 'PHONE', 'URL']);
const ORDERED = new Set(['NUMBER', 'INTEGER', 'FLOAT', 'CURRENCY', 'PERCENTAGE', 'DATE', 'DATETIME']);

function allowedOps(f: FieldDef): CanonicalOp[] {
  const base: CanonicalOp[] = ['eq', 'neq', 'in', 'not_in', 'is_null', 'is_not_null'];
  if (TEXTLIKE.has(f.type)) return [...base, 'gt', 'gte', 'lt', 'lte', 'between', 'contains', 'not_contains', 'starts_with'];
  if (ORDERED.has(f.type)) return [...base, 'gt', 'gte', 'lt', 'lte', 'between'];
  if (f.type === 'SELECT') return [...base, 'contains', 'not_contains', 'starts_with'];
  if (f.type === 'MULTI_SELECT') return [...base, 'contains', 'not_contains'];
  if (f.type === 'BOOLEAN') return ['eq', 'neq', 'is_null', 'is_not_null'];
  return base; // RELATION
}

/** The message an agent needs after picking an operator the field does not take. */
export function operatorHelp(f: FieldDef, shown = f.name): string {
  return `Valid operators for ${shown} (${f.type}): ${allowedOps(f).join(', ')}`;
}

/**
 * 'me' -> the acting user's id on a field relating to users. On a field where 'me' or a relative date
 * cannot be a literal value either, say which fields take it instead of failing on the literal.
 */
function specialValue(obj: ObjectDef, f: FieldDef, shown: string, scope: Scope, x: unknown): unknown {
  if (typeof x !== 'string') return x;
  if (x.trim().toLowerCase() === 'me') {
    if (isUserRelation(f)) {
      if (!scope.userId) throw validationError(`'me' in a filter on '${shown}' needs a signed-in user; pass a user id instead`);
      return scope.userId;
    }
    if (!TEXTLIKE.has(f.type)) {
      const takers = obj.fields.filter(isUserRelation).map((g) => g.name);
      throw validationError(
        `'me' (the current user) applies to RELATION fields that point to users; '${shown}' is ${f.type}${f.target ? ` pointing to ${f.target}` : ''}. ` +
          `Fields of ${obj.name} that take 'me': ${takers.join(', ') || 'none'}`,
        { field: shown },
      );
    }
  }
  if (looksRelative(x) && !TEXTLIKE.has(f.type) && !isDateType(f) && !(f.options ?? []).some((o) => o.value === x)) {
    const takers = obj.fields.filter(isDateType).map((g) => g.name);
    throw validationError(`'${x}' is a relative date; it applies to DATE and DATETIME fields, and '${shown}' is ${f.type}. Date fields of ${obj.name}: ${takers.join(', ') || 'none'}`, {
      field: shown,
    });
  }
  return x;
}

function canonical(op: Operator): CanonicalOp {
  return op === 'equals' ? 'eq' : op === 'not_equals' ? 'neq' : op;
}

/** Coerce one filter operand to the stored form of the field, so comparisons run on columns as stored. */
export function filterOperand(f: FieldDef, v: unknown): string | number {
  if (v === null || v === undefined) throw validationError(`Filter on '${f.name}' needs a value (use is_null to match empty values)`);
  switch (f.type) {
    case 'CURRENCY':
      return toMinorUnits(f.name, v, f.scale ?? 2);
    case 'NUMBER':
    case 'FLOAT':
    case 'PERCENTAGE':
    case 'INTEGER': {
      const n = parseNumberValue(v);
      if (n === undefined) throw validationError(`Filter on '${f.name}' needs a number in decimal notation (e.g. -12.5 or 1.2e3), got ${JSON.stringify(v)}`, { field: f.name });
      return n;
    }
    case 'DATE':
      // A date-time operand on a DATE field compares by its date part, once the whole of it is a valid date-time.
      if (typeof v === 'string' && v.trim().length > 10) {
        parseDateTime(f.name, v);
        return parseDate(f.name, v.trim().slice(0, 10));
      }
      return parseDate(f.name, v);
    case 'DATETIME':
      return parseDateTime(f.name, v);
    case 'BOOLEAN':
      return parseBoolean(f.name, v) ? 1 : 0;
    case 'SELECT':
    case 'MULTI_SELECT': {
      const allowed = (f.options ?? []).map((o) => o.value);
      if (typeof v !== 'string' || !allowed.includes(v))
        throw validationError(`Filter on '${f.name}': ${JSON.stringify(v)} is not an option. Allowed values: ${allowed.join(', ')}`, { field: f.name, allowed });
      return v;
    }
    case 'EMAIL':
      if (typeof v !== 'string') throw validationError(`Filter on '${f.name}' needs a string`);
      return v.trim().toLowerCase();
    default:
      if (typeof v === 'number' || typeof v === 'boolean') return String(v);
      if (typeof v !== 'string') throw validationError(`Filter on '${f.name}' needs a string, got ${JSON.stringify(v)}`);
      return checkText(`Filter on '${f.name}'`, v);
  }
}

function listOperand(f: FieldDef, op: string, v: unknown): unknown[] {
  const list = Array.isArray(v)
    ? v
    : typeof v === 'string'
      ? v
          .split(',')
          .map((s) => s.trim())
          .filter((s) => s !== '')
      : null;
  if (!list) throw validationError(`Operator '${op}' on '${f.name}' needs a list of values (a JSON array or comma-separated text)`);
  if (list.length > MAX_IN_VALUES) throw validationError(`Operator '${op}' accepts at most ${MAX_IN_VALUES} values`);
  return list;
}

function textOperand(f: FieldDef, op: string, v: unknown): string {
  if (typeof v === 'number') return String(v);
  if (typeof v !== 'string' || v === '') throw validationError(`Operator '${op}' on '${f.name}' needs a non-empty string`);
  return checkText(`Filter on '${f.name}'`, v);
}

type EB = ExpressionBuilder<any, any>;
type Compiled = (eb: EB) => Expression<SqlBool>;

export interface FilterStats {
  conditions: number;
}

interface Scope {
  adapter: DialectAdapter;
  /** Needed for conditions on related records ('company.industry'). */
  schema: WorkspaceSchema | undefined;
  /** Counter for subquery aliases. */
  aliases: number;
  /** What 'me' means; absent when the caller has no user (then 'me' is an error). */
  userId: string | undefined;
  /** Relative dates ('today') are local days in this zone. */
  timeZone: string;
  /** One instant for the whole filter, so 'today' cannot change between two conditions. */
  now: number;
}

export interface FilterEnv {
  /** The acting user: the value 'me' on a field relating to users. */
  userId?: string | undefined;
  /** Overrides the workspace's zone for relative dates (a task list asked in its own zone). */
  timeZone?: string | undefined;
  /** Set to true when the filter read the clock (a relative date): what it matches changes with time. */
  clock?: { read: boolean } | undefined;
}

/** The users table seen as an object, so 'owner.name' filters, sorts and groups like 'company.name'. */
const USERS_OBJECT: ObjectDef = (() => {
  const base = { required: false, unique: false, system: true, readOnly: true, indexed: false, position: 0, id: 0 };
  const fields: FieldDef[] = [
    { ...base, name: 'id', label: 'ID', type: 'TEXT', column: 'id', unique: true },
    { ...base, name: 'name', label: 'Name', type: 'TEXT', column: 'name' },
    { ...base, name: 'email', label: 'Email', type: 'EMAIL', column: 'email' },
    {
      ...base,
      name: 'role',
      label: 'Role',
      type: 'SELECT',
      column: 'role',
      options: [
        { value: 'admin', label: 'Admin' },
        { value: 'member', label: 'Member' },
      ],
    },
    { ...base, name: 'created_at', label: 'Created at', type: 'DATETIME', column: 'created_at' },
  ];
  return {
    id: 0,
    name: 'users',
    label: 'User',
    labelPlural: 'Users',
    description: null,
    table: 'users',
    system: true,
    displayFields: ['name'],
    fields,
    byName: new Map(fields.map((f) => [f.name, f])),
  };
})();

export interface RelatedPath {
  /** The relation field of the object ('company'). */
  rel: FieldDef;
  /** The related object ('companies', or the users table). */
  target: ObjectDef;
  /** The field of the related object ('industry'). */
  field: FieldDef;
  /** Set when the target is the users table: it holds every workspace's users. */
  workspaceId?: number;
}

/**
 * 'company.industry' -> the relation field and the related object's field, both resolved against the
 * schema (one level). The error lists the relations that can start a dotted name.
 */
export function resolveRelated(obj: ObjectDef, schema: WorkspaceSchema | undefined, name: string): RelatedPath {
  const hop = resolveHop(obj, schema, name);
  if (hop.rest.includes('.')) throw validationError(`'${name}': sorting and grouping follow one relation (relation.field, e.g. company.industry)`, { field: name });
  const field = hop.target.byName.get(hop.rest);
  if (!field) {
    const valid = hop.target.fields.map((f) => `${hop.rel.name}.${f.name}`);
    throw validationError(`Unknown field '${hop.rest}' on ${hop.target.name} (via '${hop.rel.name}'). Valid fields: ${valid.join(', ')}`, { field: name, validFields: valid });
  }
  return { rel: hop.rel, target: hop.target, field, ...(hop.workspaceId !== undefined ? { workspaceId: hop.workspaceId } : {}) };
}

/** The first hop of a dotted name: the relation field, its target, and the rest of the name. */
function resolveHop(obj: ObjectDef, schema: WorkspaceSchema | undefined, name: string) {
  const dot = name.indexOf('.');
  const rel = resolveField(obj, name.slice(0, dot));
  const target = rel.type !== 'RELATION' ? undefined : rel.target === 'users' ? USERS_OBJECT : schema?.objects.get(rel.target!);
  if (!target) {
    const rels = obj.fields.filter((f) => f.type === 'RELATION').map((f) => `${f.name}.<field of ${f.target}>`);
    throw validationError(`'${name}': a dotted field must start with a relation field. On ${obj.name}: ${rels.length ? rels.join(', ') : 'none'}`, { field: name });
  }
  return { rel, target, rest: name.slice(dot + 1), ...(target === USERS_OBJECT ? { workspaceId: schema?.workspaceId ?? -1 } : {}) };
}

/**
 * The related record's value as a scalar subquery, for sorting and grouping: a relation points at
 * one record, so this is one value (or NULL) per row, with no join to multiply rows.
 */
export function relatedValueSql(p: RelatedPath, outerTable: string, alias: string): RawBuilder<unknown> {
  const scope = p.workspaceId !== undefined ? sql` AND ${sql.ref(`${alias}.workspace_id`)} = ${p.workspaceId}` : sql``;
  return sql`(SELECT ${sql.ref(`${alias}.${p.field.column}`)} FROM ${sql.table(p.target.table)} AS ${sql.id(alias)} WHERE ${sql.ref(`${alias}.id`)} = ${sql.ref(`${outerTable}.${p.rel.column}`)}${scope})`;
}

/**
 * Related-field conditions (company.name ...) one filter may hold: each is a subquery run for every
 * row the statement visits, so a few dozen of them in an `or` made one search scan for minutes.
 */
export const MAX_RELATED_CONDITIONS = 20;

/**
 * 'company.industry' = the related company's industry: EXISTS over the related table, so a
 * condition on related records never multiplies rows the way a join would.
 */
function compileRelated(obj: ObjectDef, scope: Scope, c: Condition, alias: string | undefined, prefix: string): Compiled {
  const p = resolveHop(obj, scope.schema, c.field);
  // The last hop's unknown field is listed as the agent would spell it: company.industry.
  if (!p.rest.includes('.') && !p.target.byName.has(p.rest)) resolveRelated(obj, scope.schema, c.field);
  const a = `r${++scope.aliases}`;
  // One alias per related hop: the count of related conditions (a two-hop one counts twice).
  if (scope.aliases > MAX_RELATED_CONDITIONS)
    throw validationError(
      `A filter has more than ${MAX_RELATED_CONDITIONS} related-field conditions (such as company.name); the limit is ${MAX_RELATED_CONDITIONS}: combine them, or filter on the related object first`,
      { limit: MAX_RELATED_CONDITIONS },
    );
  const inner = compileCondition(p.target, scope, { ...c, field: p.rest }, a, `${prefix}${p.rel.name}.`);
  const outer = `${alias ?? obj.table}.${p.rel.column}`;
  const ws = p.workspaceId;
  const exists = (eb: EB) => {
    let q = eb
      .selectFrom(`${p.target.table} as ${a}` as any)
      .select(eb.lit(1).as('one'))
      .whereRef(`${a}.id` as any, '=', outer as any);
    if (ws !== undefined) q = q.where(`${a}.workspace_id` as any, '=', ws);
    return eb.exists(q.where((inn: EB) => inner(inn)));
  };
  // With no related record the related value is empty: is_null and the negations (neq, not_in,
  // not_contains) match it, as they match an empty value of the record's own fields.
  const op = canonical(c.operator);
  if (op === 'is_null' || op === 'neq' || op === 'not_in' || op === 'not_contains') return (eb) => eb.or([exists(eb), eb(eb.ref(outer), 'is', null)]);
  return exists;
}

const isUserRelation = (f: FieldDef) => f.type === 'RELATION' && f.target === 'users';
const isDateType = (f: FieldDef) => f.type === 'DATE' || f.type === 'DATETIME';

function compileCondition(obj: ObjectDef, scope: Scope, c: Condition, alias?: string, prefix = ''): Compiled {
  if (c.field.includes('.')) return compileRelated(obj, scope, c, alias, prefix);
  const adapter = scope.adapter;
  const f = resolveField(obj, c.field);
  const op = canonical(c.operator);
  const allowed = allowedOps(f);
  const shown = `${prefix}${f.name}`;
  if (!allowed.includes(op))
    throw validationError(`Operator '${c.operator}' does not apply to ${f.type} field '${shown}'. ${operatorHelp(f, shown)}`, {
      field: shown,
      allowedOperators: allowed,
    });
  const col = alias ? `${alias}.${f.column}` : f.column;
  const ref = (eb: EB) => eb.ref(col);
  const orNull = (eb: EB, e: Expression<SqlBool>) => eb.or([e, eb(ref(eb), 'is', null)]);
  const special = (x: unknown): unknown => specialValue(obj, f, shown, scope, x);
  const operand = (x: unknown) => {
    try {
      return filterOperand(f, special(x));
    } catch (e) {
      if (isDateType(f) && e instanceof CrmError) throw new CrmError(e.code, `${e.message}, or a relative date: today, this_week, last_month, last_7_days, ...`, e.details);
      throw e;
    }
  };
  // A relative date ('this_week') is a range [start, end) of local days, as the column stores them.
  const period = (x: unknown): { start: string; end: string } | null => {
    if (!isDateType(f) || !looksRelative(x)) return null;
    const r = relativeRange(x, scope.now, scope.timeZone);
    if (typeof r === 'string') throw validationError(`Filter on '${shown}': ${r}`, { field: shown });
    return f.type === 'DATE' ? r : { start: localMidnight(scope.timeZone, r.start), end: localMidnight(scope.timeZone, r.end) };
  };
  const within = (eb: EB, p: LocalRange) => eb.and([eb(ref(eb), '>=', p.start), eb(ref(eb), '<', p.end)]);

  if (op === 'is_null') return (eb) => eb(ref(eb), 'is', null);
  if (op === 'is_not_null') return (eb) => eb(ref(eb), 'is not', null);

  if (f.type === 'MULTI_SELECT') {
    switch (op) {
      case 'contains': {
        const v = filterOperand(f, c.value) as string;
        return (eb) => adapter.jsonArrayHas(ref(eb), v);
      }
      case 'not_contains': {
        const v = filterOperand(f, c.value) as string;
        return (eb) => orNull(eb, eb.not(adapter.jsonArrayHas(ref(eb), v)));
      }
      case 'in': {
        const vs = listOperand(f, op, c.value).map((x) => filterOperand(f, x) as string);
        return vs.length ? (eb) => adapter.jsonArrayHasAny(ref(eb), vs) : (eb) => eb.lit(false);
      }
      case 'not_in': {
        const vs = listOperand(f, op, c.value).map((x) => filterOperand(f, x) as string);
        return vs.length ? (eb) => orNull(eb, eb.not(adapter.jsonArrayHasAny(ref(eb), vs))) : (eb) => eb.lit(true);
      }
      case 'eq': {
        const v = encodeValue(f, c.value);
        return v === null ? (eb) => eb(ref(eb), 'is', null) : (eb) => eb(ref(eb), '=', v);
      }
      case 'neq': {
        const v = encodeValue(f, c.value);
        return v === null ? (eb) => eb(ref(eb), 'is not', null) : (eb) => orNull(eb, eb(ref(eb), '!=', v));
      }
    }
  }

  switch (op) {
    case 'eq': {
      const p = period(c.value);
      if (p) return (eb) => within(eb, p);
      const v = operand(c.value);
      return (eb) => eb(ref(eb), '=', v);
    }
    case 'neq': {
      const p = period(c.value);
      if (p) return (eb) => orNull(eb, eb.or([eb(ref(eb), '<', p.start), eb(ref(eb), '>=', p.end)]));
      const v = operand(c.value);
      // "not equal to x" includes records with no value: what a CRM user means.
      return (eb) => orNull(eb, eb(ref(eb), '!=', v));
    }
    case 'gt':
    case 'gte':
    case 'lt':
    case 'lte': {
      const p = period(c.value);
      if (p) {
        // After the period, from its start, before it, up to its end.
        const [sqlOp, v] = ({ gt: ['>=', p.end], gte: ['>=', p.start], lt: ['<', p.start], lte: ['<', p.end] } as const)[op];
        return (eb) => eb(ref(eb), sqlOp, v);
      }
      const v = operand(c.value);
      const sqlOp = { gt: '>', gte: '>=', lt: '<', lte: '<=' }[op] as '>' | '>=' | '<' | '<=';
      return (eb) => eb(ref(eb), sqlOp, v);
    }
    case 'between': {
      // A query string can only carry text: "low,high" there, like the comma list of 'in'.
      const list = Array.isArray(c.value) ? c.value : typeof c.value === 'string' ? c.value.split(',').map((s) => s.trim()) : null;
      if (list?.length !== 2) {
        // One period alone ('this_month') is the period itself.
        const p = typeof c.value === 'string' ? period(c.value) : null;
        if (p) return (eb) => within(eb, p);
        throw validationError(`Operator 'between' on '${shown}' needs [low, high] (or "low,high" in a query string)`);
      }
      const pl = period(list[0]);
      const ph = period(list[1]);
      const lo = pl ? pl.start : operand(list[0]);
      const hi = ph ? ph.end : operand(list[1]);
      return (eb) => eb.and([eb(ref(eb), '>=', lo), eb(ref(eb), ph ? '<' : '<=', hi)]);
    }
    case 'in':
    case 'not_in': {
      const raw = listOperand(f, op, c.value);
      const asPeriod = raw.map(period);
      const periods = asPeriod.filter((p): p is { start: string; end: string } => p !== null);
      const vs = raw.filter((_, i) => !asPeriod[i]).map(operand);
      if (!periods.length && !vs.length) return op === 'in' ? (eb) => eb.lit(false) : (eb) => eb.lit(true);
      const any = (eb: EB) => eb.or([...periods.map((p) => within(eb, p)), ...(vs.length ? [eb(ref(eb), 'in', vs)] : [])]);
      return op === 'in' ? any : (eb) => orNull(eb, eb.not(any(eb)));
    }
    case 'contains': {
      const p = `%${escapeLike(textOperand(f, op, c.value))}%`;
      return (eb) => adapter.ilike(ref(eb), p);
    }
    case 'not_contains': {
      const p = `%${escapeLike(textOperand(f, op, c.value))}%`;
      return (eb) => orNull(eb, eb.not(adapter.ilike(ref(eb), p)));
    }
    case 'starts_with': {
      const p = `${escapeLike(textOperand(f, op, c.value))}%`;
      return (eb) => adapter.ilike(ref(eb), p);
    }
  }
  throw validationError(`Unsupported operator '${c.operator}'`);
}

/** For an unknown operator on a condition: the operators its field takes, when the field resolves. */
function operatorHelpAt(obj: ObjectDef, schema: WorkspaceSchema | undefined, input: unknown, path: PropertyKey[]): string | undefined {
  let node: unknown = input;
  for (const k of path[path.length - 1] === 'operator' ? path.slice(0, -1) : path) node = (node as Record<PropertyKey, unknown> | undefined)?.[k];
  const { field, operator } = (node ?? {}) as { field?: unknown; operator?: unknown };
  if (typeof field !== 'string' || (OPERATORS as readonly unknown[]).includes(operator)) return undefined;
  const unknown = typeof operator === 'string' ? `Unknown operator '${operator}' on '${field}'. ` : '';
  try {
    if (!field.includes('.')) return unknown + operatorHelp(resolveField(obj, field));
    return unknown + operatorHelp(resolveRelated(obj, schema, field).field, field);
  } catch {
    return undefined;
  }
}

function isGroup(x: Condition | FilterGroup): x is FilterGroup {
  return Array.isArray((x as FilterGroup).conditions);
}

/**
 * Compile a FilterGroup against an object's schema. Every field name is resolved through the
 * schema; every value travels as a parameter. Throws VALIDATION_ERROR with the valid choices.
 */
export function compileFilter(obj: ObjectDef, adapter: DialectAdapter, input: unknown, alias?: string, schema?: WorkspaceSchema, env: FilterEnv = {}): Compiled {
  checkFilterSize(input);
  const parsed = groupShape.safeParse(input);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const at = issue.path.length ? ` at '${issue.path.join('.')}'` : '';
    // A condition with an unknown operator fails the union of condition and group as a whole.
    const help = operatorHelpAt(obj, schema, input, issue.path);
    throw validationError(
      `Invalid filter${at}: ${issue.message}. ` + (help ?? `A filter is {"operator":"and"|"or"|"not","conditions":[{"field","operator","value"} | nested group]}; operators: ${OPERATORS.join(', ')}`),
    );
  }
  const stats: FilterStats = { conditions: 0 };
  const at = now();
  const clock = env.clock;
  const scope: Scope = {
    adapter,
    schema,
    aliases: 0,
    userId: env.userId,
    timeZone: env.timeZone ?? schema?.timeZone ?? 'UTC',
    get now() {
      if (clock) clock.read = true;
      return at;
    },
  };
  const walk = (g: FilterGroup, depth: number): Compiled => {
    // Measured before parsing; a Cognite filter adds a level on translation ('range' becomes a group), hence + 1.
    if (depth > MAX_FILTER_DEPTH + 1) throw validationError(`Filter nesting is ${depth} levels deep; the limit is ${MAX_FILTER_DEPTH}`, { limit: MAX_FILTER_DEPTH });
    const parts = g.conditions.map((c) => {
      if (isGroup(c)) return walk(c, depth + 1);
      if (++stats.conditions > MAX_FILTER_CONDITIONS)
        throw validationError(`A filter has more than ${MAX_FILTER_CONDITIONS} conditions; the limit is ${MAX_FILTER_CONDITIONS}`, { limit: MAX_FILTER_CONDITIONS });
      return compileCondition(obj, scope, c, alias);
    });
    if (g.operator === 'or') return (eb) => eb.or(parts.map((p) => p(eb)));
    const all = (eb: EB) => eb.and(parts.map((p) => p(eb)));
    if (g.operator === 'not') {
      // A comparison on an empty value is NULL in SQL, and NOT NULL is still NULL: coalesce first,
      // so 'not' matches the records for which the AND is false, empty values included.
      return (eb) => eb.not(eb.fn.coalesce(all(eb), eb.lit(false)) as Expression<SqlBool>);
    }
    return all;
  };
  return walk(parsed.data, 1);
}

/**
 * Filters compiled once per object (so once per schema: a change to the schema loads new objects)
 * and kept by their text, with the acting user and the zone: the same filter comes back on every
 * page of a listing and every poll of it. Not kept: a filter that read the clock (a relative date
 * means another range tomorrow), or one whose text would not tell it from another (a value JSON
 * cannot write as it is: undefined in a list, NaN, a Date, a bigint).
 */
const keptFilters = new WeakMap<ObjectDef, Map<string, Compiled>>();
const MAX_KEPT_FILTERS = 256;

/** The filter's text when JSON writes it as it is (plain objects, lists, strings, finite numbers, booleans, null), else undefined. */
function filterText(input: unknown): string | undefined {
  let plain = true;
  let text: string;
  try {
    text = JSON.stringify(input, function (this: unknown, k: string, v: unknown) {
      const raw = k === '' ? input : (this as Record<string, unknown>)[k];
      if (raw === null || typeof raw === 'string' || typeof raw === 'boolean') return v;
      if (typeof raw === 'number') {
        if (!Number.isFinite(raw)) plain = false;
        return v;
      }
      // An absent value and an undefined one are the same condition; in a list it would be written null.
      if (raw === undefined && !Array.isArray(this)) return v;
      if (typeof raw === 'object' && (Array.isArray(raw) || Object.getPrototypeOf(raw) === Object.prototype || Object.getPrototypeOf(raw) === null)) return v;
      plain = false;
      return v;
    });
  } catch {
    // Nested past the stack inside a value (the groups' depth was measured before): not kept, and compileFilter says why.
    return undefined;
  }
  return plain ? text : undefined;
}

/**
 * compileFilter for a listing's condition (no alias), kept while the object's schema stands (see
 * keptFilters); `key` names the filter with everything its SQL depends on, for callers that keep
 * statements built on it, or is undefined when the filter is not kept.
 */
export function compileFilterKept(obj: ObjectDef, adapter: DialectAdapter, input: unknown, schema: WorkspaceSchema, env: FilterEnv = {}): { where: Compiled; key: string | undefined } {
  // Its size first, as compileFilter does: a filter nested 10,000 deep is refused before anything recurses over it.
  checkFilterSize(input);
  const text = filterText(input);
  const key = text === undefined ? undefined : `${text}\u0000${env.userId ?? ''}\u0000${env.timeZone ?? schema.timeZone}`;
  let kept = keptFilters.get(obj);
  const known = key === undefined ? undefined : kept?.get(key);
  if (known) return { where: known, key };
  const clock = { read: false };
  const where = compileFilter(obj, adapter, input, undefined, schema, { ...env, clock });
  if (key === undefined || clock.read) return { where, key: undefined };
  if (!kept) keptFilters.set(obj, (kept = new Map()));
  if (kept.size >= MAX_KEPT_FILTERS) kept.clear();
  kept.set(key, where);
  return { where, key };
}

/** The query-string forms shared by list, aggregate and export: filter_field/operator/value and filters (JSON). */
export function filterFromQuery(q: Record<string, unknown>): FilterGroup | undefined {
  const parts: (Condition | FilterGroup)[] = [];
  const ff = q.filter_field,
    fo = q.filter_operator,
    fv = q.filter_value;
  if (ff !== undefined || fo !== undefined || fv !== undefined) {
    if (typeof ff !== 'string' || typeof fo !== 'string')
      throw validationError('filter_field and filter_operator must be given together (and filter_value unless the operator is is_null or is_not_null)');
    if (fv === undefined && fo !== 'is_null' && fo !== 'is_not_null') throw validationError(`filter_value is required with filter_operator '${fo}'`);
    // An unknown operator is left to compileFilter, which knows the field and lists the operators of its type.
    parts.push({ field: ff, operator: fo as Operator, value: fv });
  }
  if (q.filters !== undefined) {
    let parsed: unknown;
    try {
      parsed = typeof q.filters === 'string' ? JSON.parse(q.filters) : q.filters;
    } catch {
      throw validationError("'filters' must be a JSON-encoded FilterGroup");
    }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed))
      throw validationError(`'filters' must be a JSON-encoded FilterGroup (an object), got ${JSON.stringify(parsed)?.slice(0, 100)}`);
    parts.push(parsed as FilterGroup);
  }
  if (parts.length === 0) return undefined;
  if (parts.length === 1 && isGroup(parts[0]!)) return parts[0] as FilterGroup;
  return { operator: 'and', conditions: parts };
}
