import { type Expression, type ExpressionBuilder, type SqlBool } from 'kysely';
import { z } from 'zod';
import type { DialectAdapter } from '../db/dialect.js';
import { escapeLike } from '../db/dialect.js';
import { validationError } from './errors.js';
import { encodeValue, parseDate, parseDateTime, toMinorUnits, parseBoolean, type FieldDef } from './field-types.js';
import { resolveField, type ObjectDef, type WorkspaceSchema } from './schema.js';

export const OPERATORS = [
  'eq', 'equals', 'neq', 'not_equals', 'gt', 'gte', 'lt', 'lte', 'between', 'in', 'not_in',
  'contains', 'not_contains', 'starts_with', 'is_null', 'is_not_null',
] as const;
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

export const MAX_FILTER_DEPTH = 6;
export const MAX_FILTER_CONDITIONS = 200;
export const MAX_IN_VALUES = 1000;

export const conditionSchema = z
  .object({
    field: z.string().describe('Field name, as listed by the schema'),
    operator: z.enum(OPERATORS).describe('Comparison operator'),
    value: z.unknown().optional().describe('Value; an array for in/not_in/between; omitted for is_null/is_not_null'),
  })
  .strict();

export const filterGroupSchema: z.ZodType<FilterGroup> = z.lazy(() =>
  z
    .object({
      operator: z.enum(['and', 'or', 'not']).describe("How the conditions combine: 'and', 'or', or 'not' (none of them all true)"),
      conditions: z.array(z.union([conditionSchema, filterGroupSchema])).describe('Conditions or nested groups'),
    })
    .strict(),
) as z.ZodType<FilterGroup>;

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
      const n = typeof v === 'number' ? v : typeof v === 'string' && v.trim() !== '' ? Number(v) : NaN;
      if (!Number.isFinite(n)) throw validationError(`Filter on '${f.name}' needs a number, got ${JSON.stringify(v)}`);
      return n;
    }
    case 'DATE':
      // A date-time operand on a DATE field compares by its date part.
      return parseDate(f.name, typeof v === 'string' && v.length > 10 ? v.slice(0, 10) : v);
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
      return v;
  }
}

function listOperand(f: FieldDef, op: string, v: unknown): unknown[] {
  const list = Array.isArray(v) ? v : typeof v === 'string' ? v.split(',').map((s) => s.trim()).filter((s) => s !== '') : null;
  if (!list) throw validationError(`Operator '${op}' on '${f.name}' needs a list of values (a JSON array or comma-separated text)`);
  if (list.length > MAX_IN_VALUES) throw validationError(`Operator '${op}' accepts at most ${MAX_IN_VALUES} values`);
  return list;
}

function textOperand(f: FieldDef, op: string, v: unknown): string {
  if (typeof v === 'number') return String(v);
  if (typeof v !== 'string' || v === '') throw validationError(`Operator '${op}' on '${f.name}' needs a non-empty string`);
  return v;
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
}

/**
 * 'company.industry' = the related company's industry: EXISTS over the related table, so a
 * condition on related records never multiplies rows the way a join would.
 */
function compileRelated(obj: ObjectDef, scope: Scope, c: Condition, alias: string | undefined): Compiled {
  const dot = c.field.indexOf('.');
  const rel = resolveField(obj, c.field.slice(0, dot));
  const target = rel.type === 'RELATION' && rel.target !== 'users' ? scope.schema?.objects.get(rel.target!) : undefined;
  if (!target) {
    const rels = obj.fields.filter((f) => f.type === 'RELATION' && f.target !== 'users' && !f.readOnly).map((f) => `${f.name}.<field of ${f.target}>`);
    throw validationError(
      `'${c.field}': a dotted field must start with a relation to another object. On ${obj.name}: ${rels.length ? rels.join(', ') : 'none'}`,
      { field: c.field },
    );
  }
  const a = `r${++scope.aliases}`;
  const inner = compileCondition(target, scope, { ...c, field: c.field.slice(dot + 1) }, a);
  const outer = `${alias ?? obj.table}.${rel.column}`;
  return (eb) =>
    eb.exists(
      eb
        .selectFrom(`${target.table} as ${a}` as any)
        .select(eb.lit(1).as('one'))
        .whereRef(`${a}.id` as any, '=', outer as any)
        .where((inn: EB) => inner(inn)),
    );
}

function compileCondition(obj: ObjectDef, scope: Scope, c: Condition, alias?: string): Compiled {
  if (c.field.includes('.')) return compileRelated(obj, scope, c, alias);
  const adapter = scope.adapter;
  const f = resolveField(obj, c.field);
  const op = canonical(c.operator);
  const allowed = allowedOps(f);
  if (!allowed.includes(op))
    throw validationError(`Operator '${c.operator}' does not apply to ${f.type} field '${f.name}'. Allowed operators: ${allowed.join(', ')}`, {
      field: f.name,
      allowedOperators: allowed,
    });
  const col = alias ? `${alias}.${f.column}` : f.column;
  const ref = (eb: EB) => eb.ref(col);
  const orNull = (eb: EB, e: Expression<SqlBool>) => eb.or([e, eb(ref(eb), 'is', null)]);

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
      const v = filterOperand(f, c.value);
      return (eb) => eb(ref(eb), '=', v);
    }
    case 'neq': {
      const v = filterOperand(f, c.value);
      // "not equal to x" includes records with no value: what a CRM user means.
      return (eb) => orNull(eb, eb(ref(eb), '!=', v));
    }
    case 'gt':
    case 'gte':
    case 'lt':
    case 'lte': {
      const v = filterOperand(f, c.value);
      const sqlOp = { gt: '>', gte: '>=', lt: '<', lte: '<=' }[op] as '>' | '>=' | '<' | '<=';
      return (eb) => eb(ref(eb), sqlOp, v);
    }
    case 'between': {
      // A query string can only carry text: "low,high" there, like the comma list of 'in'.
      const list = Array.isArray(c.value) ? c.value : typeof c.value === 'string' ? c.value.split(',').map((s) => s.trim()) : null;
      if (!list || list.length !== 2) throw validationError(`Operator 'between' on '${f.name}' needs [low, high] (or "low,high" in a query string)`);
      const lo = filterOperand(f, list[0]);
      const hi = filterOperand(f, list[1]);
      return (eb) => eb.and([eb(ref(eb), '>=', lo), eb(ref(eb), '<=', hi)]);
    }
    case 'in': {
      const vs = listOperand(f, op, c.value).map((x) => filterOperand(f, x));
      return vs.length ? (eb) => eb(ref(eb), 'in', vs) : (eb) => eb.lit(false);
    }
    case 'not_in': {
      const vs = listOperand(f, op, c.value).map((x) => filterOperand(f, x));
      return vs.length ? (eb) => orNull(eb, eb(ref(eb), 'not in', vs)) : (eb) => eb.lit(true);
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

function isGroup(x: Condition | FilterGroup): x is FilterGroup {
  return Array.isArray((x as FilterGroup).conditions);
}

/**
 * Compile a FilterGroup against an object's schema. Every field name is resolved through the
 * schema; every value travels as a parameter. Throws VALIDATION_ERROR with the valid choices.
 */
export function compileFilter(obj: ObjectDef, adapter: DialectAdapter, input: unknown, alias?: string, schema?: WorkspaceSchema): Compiled {
  const parsed = filterGroupSchema.safeParse(input);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const at = issue.path.length ? ` at '${issue.path.join('.')}'` : '';
    throw validationError(
      `Invalid filter${at}: ${issue.message}. A filter is {"operator":"and"|"or"|"not","conditions":[{"field","operator","value"} | nested group]}; operators: ${OPERATORS.join(', ')}`,
    );
  }
  const stats: FilterStats = { conditions: 0 };
  const scope: Scope = { adapter, schema, aliases: 0 };
  const walk = (g: FilterGroup, depth: number): Compiled => {
    if (depth > MAX_FILTER_DEPTH) throw validationError(`Filter groups nest at most ${MAX_FILTER_DEPTH} deep`);
    const parts = g.conditions.map((c) => {
      if (isGroup(c)) return walk(c, depth + 1);
      if (++stats.conditions > MAX_FILTER_CONDITIONS) throw validationError(`A filter has at most ${MAX_FILTER_CONDITIONS} conditions`);
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

/** The query-string forms shared by list, aggregate and export: filter_field/operator/value and filters (JSON). */
export function filterFromQuery(q: Record<string, unknown>): FilterGroup | undefined {
  const parts: (Condition | FilterGroup)[] = [];
  const ff = q.filter_field, fo = q.filter_operator, fv = q.filter_value;
  if (ff !== undefined || fo !== undefined || fv !== undefined) {
    if (typeof ff !== 'string' || typeof fo !== 'string')
      throw validationError('filter_field and filter_operator must be given together (and filter_value unless the operator is is_null or is_not_null)');
    if (fv === undefined && fo !== 'is_null' && fo !== 'is_not_null')
      throw validationError(`filter_value is required with filter_operator '${fo}'`);
    if (!(OPERATORS as readonly string[]).includes(fo)) throw validationError(`Unknown filter_operator '${fo}'. Operators: ${OPERATORS.join(', ')}`);
    parts.push({ field: ff, operator: fo as Operator, value: fv });
  }
  if (q.filters !== undefined) {
    let parsed: unknown;
    try {
      parsed = typeof q.filters === 'string' ? JSON.parse(q.filters) : q.filters;
    } catch {
      throw validationError("'filters' must be a JSON-encoded FilterGroup");
    }
    parts.push(parsed as FilterGroup);
  }
  if (parts.length === 0) return undefined;
  if (parts.length === 1 && isGroup(parts[0]!)) return parts[0] as FilterGroup;
  return { operator: 'and', conditions: parts };
}

