import type { GroupRequest, GroupResult } from '../../services/aggregate.js';
import { validationError } from '../../services/errors.js';
import { type FieldDef, type FieldType, NUMERIC_TYPES } from '../../services/field-types.js';
import type { Condition, FilterGroup } from '../../services/filters.js';
import type { ObjectDef } from '../../services/schema.js';

/**
 * Bitrix24's task aggregate (bitrix24-tasks-aggregate.txt) in our terms, and our answer back in its
 * terms. Everything Bitrix-specific lives here (and in the route beside it): the shared aggregate
 * service only ever sees our object ('tasks'), our field names and a Kasar filter group.
 *
 * Field mapping (Bitrix24 name -> field of our 'tasks' object):
 *   status -> status, priority -> priority, responsibleId -> assignee, timeEstimate -> time_estimate,
 *   and, for filters only, id, title, description, deadline -> due_at, closedDate -> completed_at,
 *   createdDate -> created_at, changedDate -> updated_at, createdBy -> created_by.
 *   UF_<NAME> -> the custom (non-system) tasks field named <name> in lower case
 *   (UF_CRM_TASK_BUDGET -> crm_task_budget); every custom field is offered under its UF_ name.
 *   groupId (workgroup): this CRM has no workgroups, so every task is outside one: groupId is null
 *   for every task (Bitrix24's "no group"), in groups, filters and counts alike.
 * Status values are Bitrix24's codes (its REST API's task states), in answers and in filters:
 *   open -> "2" (pending), in_progress -> "3", waiting -> "6" (deferred), completed -> "5",
 *   cancelled -> "7" (declined); a filter may also name our own values. Other values are ours
 *   (priority 'low'...'urgent': four levels where Bitrix24 has three; responsibleId a user id).
 */

export const TASKS_OBJECT = 'tasks';

/** Our task status -> Bitrix24's state code, and back. */
const STATUS_CODE: Record<string, string> = { open: '2', in_progress: '3', completed: '5', waiting: '6', cancelled: '7' };
const STATUS_OF_CODE = Object.fromEntries(Object.entries(STATUS_CODE).map(([ours, code]) => [code, ours]));
/** A status value as the document has it (a code), for answers. */
const statusCode = (v: unknown) => (typeof v === 'string' ? (STATUS_CODE[v] ?? v) : v);
/** A status value from a request: a code (as a string or a number) or our own value. */
const statusOf = (v: unknown) => (typeof v === 'string' || typeof v === 'number' ? (STATUS_OF_CODE[String(v)] ?? v) : v);
export const FUNCTIONS = ['count', 'sum', 'avg', 'min', 'max'] as const;
const NUMERIC_FUNCTIONS = new Set(['sum', 'avg', 'min', 'max']);
export const MAX_GROUP_FIELDS = 5;
const RESERVED = new Set(['count', 'aggregates', 'meta', 'groups']);
const _WORKGROUP = 'groupId';

/** Standard fields that count and groupBy work on (the document's aggregatable list). */
const AGGREGATABLE: Record<string, string | null> = { status: 'status', priority: 'priority', responsibleId: 'assignee', groupId: null };
/** The built-in numeric field for sum/avg/min/max. */
const NUMERIC_STANDARD: Record<string, string> = { timeEstimate: 'time_estimate' };
/** Further standard fields a filter may name. */
const FILTER_ONLY: Record<string, string> = {
  id: 'id',
  title: 'title',
  description: 'description',
  deadline: 'due_at',
  closedDate: 'completed_at',
  createdDate: 'created_at',
  changedDate: 'updated_at',
  createdBy: 'created_by',
};

/** Bitrix24's type names for ours, for the messages (the document names "string, enumeration, date"). */
const BITRIX_TYPE: Partial<Record<FieldType, string>> = {
  TEXT: 'string',
  EMAIL: 'string',
  PHONE: 'string',
  URL: 'string',
  SELECT: 'enumeration',
  MULTI_SELECT: 'enumeration',
  DATE: 'date',
  DATETIME: 'datetime',
  BOOLEAN: 'boolean',
  RELATION: 'link',
};

export interface BitrixRequest {
  aggregate?: { field: string; function: string }[] | undefined;
  filter?: Record<string, unknown> | undefined;
  groupBy?: string | string[] | undefined;
  groupLimit?: number | undefined;
}

const ufName = (f: FieldDef) => `UF_${f.name.toUpperCase()}`;
const customFields = (obj: ObjectDef) => obj.fields.filter((f) => !f.system);

function ufField(obj: ObjectDef, name: string): FieldDef | undefined {
  if (!name.startsWith('UF_')) return undefined;
  return customFields(obj).find((f) => ufName(f) === name);
}

function available(obj: ObjectDef): string {
  return [...Object.keys(AGGREGATABLE), ...Object.keys(NUMERIC_STANDARD), ...customFields(obj).map(ufName)].join(', ');
}

function unknownField(obj: ObjectDef, name: string) {
  return validationError(`Unknown field '${name}'. Available: ${available(obj)}`);
}

/** A field named in "aggregate": our field name, or null for groupId (no task has a workgroup). */
function metricField(obj: ObjectDef, field: string, fn: string): string | null {
  const uf = ufField(obj, field);
  if (uf) {
    if (NUMERIC_FUNCTIONS.has(fn) && !NUMERIC_TYPES.has(uf.type))
      throw validationError(`${fn} needs a numeric field (integer, double or money); '${field}' is a ${BITRIX_TYPE[uf.type] ?? uf.type.toLowerCase()} field (${uf.type})`);
    return uf.name;
  }
  if (field in NUMERIC_STANDARD) return NUMERIC_STANDARD[field]!;
  if (field in AGGREGATABLE) {
    if (NUMERIC_FUNCTIONS.has(fn))
      throw validationError(
        `${fn} is meaningless on '${field}' (an identifier or categorical code; count and groupBy only). Numeric fields: ${[
          ...Object.keys(NUMERIC_STANDARD),
          ...customFields(obj)
            .filter((f) => NUMERIC_TYPES.has(f.type))
            .map(ufName),
        ].join(', ')}`,
      );
    return AGGREGATABLE[field]!;
  }
  throw unknownField(obj, field);
}

/** A field named in groupBy: our field name, or null for groupId. */
function groupField(obj: ObjectDef, field: string): string | null {
  if (RESERVED.has(field)) throw validationError(`'${field}' is a reserved keyword in groupBy (count, aggregates, meta, groups)`);
  const uf = ufField(obj, field);
  if (uf) return uf.name;
  if (field in AGGREGATABLE) return AGGREGATABLE[field]!;
  if (field in NUMERIC_STANDARD || field in FILTER_ONLY)
    throw validationError(`groupBy on '${field}' is not supported: it is outside the aggregatable list (${Object.keys(AGGREGATABLE).join(', ')}, or UF fields)`);
  throw unknownField(obj, field);
}

function filterField(obj: ObjectDef, field: string): string | null {
  const uf = ufField(obj, field);
  if (uf) return uf.name;
  if (field in AGGREGATABLE) return AGGREGATABLE[field]!;
  if (field in NUMERIC_STANDARD) return NUMERIC_STANDARD[field]!;
  if (field in FILTER_ONLY) return FILTER_ONLY[field]!;
  throw validationError(
    `Unknown filter field '${field}'. Available: ${[...Object.keys(FILTER_ONLY), ...Object.keys(AGGREGATABLE), ...Object.keys(NUMERIC_STANDARD), ...customFields(obj).map(ufName)].join(', ')}`,
  );
}

/** Bitrix24's filter key prefixes (">=timeEstimate", "!status", "%title") and our operator for each. */
const PREFIXES: [string, 'eq' | 'neq' | 'gt' | 'gte' | 'lt' | 'lte' | 'contains'][] = [
  ['>=', 'gte'],
  ['<=', 'lte'],
  ['!=', 'neq'],
  ['>', 'gt'],
  ['<', 'lt'],
  ['!', 'neq'],
  ['=', 'eq'],
  ['%', 'contains'],
];

/** A task outside any workgroup: Bitrix24 writes it as 0 or null. */
const noGroup = (v: unknown) => v === null || v === 0 || v === '0';
/** A condition no record meets (every record has an id). */
const NOTHING: Condition = { field: 'id', operator: 'is_null' };

/** {"responsibleId": "u1", "!status": ["completed"], ">=timeEstimate": 3600} -> a Kasar filter group. */
export function translateFilter(obj: ObjectDef, filter: Record<string, unknown> | undefined): FilterGroup | undefined {
  if (!filter) return undefined;
  const conditions: Condition[] = [];
  for (const [key, value] of Object.entries(filter)) {
    const [prefix, op] = PREFIXES.find(([p]) => key.startsWith(p)) ?? ['', 'eq' as const];
    const name = key.slice(prefix.length);
    const field = filterField(obj, name);
    const list = Array.isArray(value);
    if (list && op !== 'eq' && op !== 'neq') throw validationError(`Filter '${key}' takes a single value, not an array`);
    if (field === null) {
      // groupId: null for every task, so each condition holds for all tasks or for none.
      let holds: boolean;
      if (op === 'eq') holds = list ? value.some(noGroup) : noGroup(value);
      else if (op === 'neq') holds = list ? !value.some(noGroup) : !noGroup(value);
      else holds = false;
      if (!holds) conditions.push(NOTHING);
      continue;
    }
    const ours = field === 'status' ? (list ? value.map(statusOf) : statusOf(value)) : value;
    if (value === null) {
      if (op !== 'eq' && op !== 'neq') throw validationError(`Filter '${key}' needs a value`);
      conditions.push({ field, operator: op === 'eq' ? 'is_null' : 'is_not_null' });
    } else if (list) conditions.push({ field, operator: op === 'eq' ? 'in' : 'not_in', value: ours });
    else conditions.push({ field, operator: op, value: ours });
  }
  return conditions.length ? { operator: 'and', conditions } : undefined;
}

export interface Plan {
  request: GroupRequest;
  /** Per requested metric: its Bitrix name, function, and our field (null: groupId). */
  metrics: { name: string; fn: string; field: string | null }[];
  /** Per groupBy entry: its Bitrix name and our field (null: groupId). */
  dims: { name: string; field: string | null }[];
  grouped: boolean;
}

/** The document's validation rules, then the request for the shared aggregate service. */
export function translateRequest(obj: ObjectDef, b: BitrixRequest): Plan {
  const metrics = (b.aggregate ?? []).map((m) => {
    const fn = m.function.toLowerCase();
    if (!(FUNCTIONS as readonly string[]).includes(fn)) throw validationError(`Unknown function '${m.function}'. Allowed: ${FUNCTIONS.join(', ')}`);
    return { name: m.field, fn, field: metricField(obj, m.field, fn) };
  });
  const by = b.groupBy === undefined ? [] : Array.isArray(b.groupBy) ? b.groupBy : [b.groupBy];
  if (by.length > MAX_GROUP_FIELDS) throw validationError(`groupBy takes at most ${MAX_GROUP_FIELDS} fields, got ${by.length}`);
  if (new Set(by).size !== by.length) throw validationError('groupBy lists a field twice');
  const dims = by.map((name) => ({ name, field: groupField(obj, name) }));
  const groupBy = dims.flatMap((d) => (d.field === null ? [] : [d.field]));
  return {
    request: {
      filter: translateFilter(obj, b.filter),
      metrics: metrics.flatMap((m) => (m.field === null ? [] : [{ field: m.field, function: m.fn }])),
      ...(groupBy.length ? { groupBy } : {}),
      ...(b.groupLimit !== undefined ? { limit: b.groupLimit } : {}),
    },
    metrics,
    dims,
    grouped: dims.length > 0,
  };
}

function bitrixAggregates(plan: Plan, ours: Record<string, Record<string, unknown>>) {
  const out: Record<string, Record<string, unknown>> = {};
  // groupId has no values: its only metric (count) is 0.
  for (const m of plan.metrics) (out[m.name] ??= {})[m.fn] = m.field === null ? 0 : (ours[m.field]?.[m.fn] ?? null);
  return out;
}

/** The service's answer in the document's response shape (data.*). */
export function translateResult(plan: Plan, r: GroupResult) {
  const meta: Record<string, unknown> = { totalRecords: r.meta.totalRecords, recordsProcessed: r.meta.recordsProcessed, truncated: r.meta.truncated };
  const data: Record<string, unknown> = { count: r.count, aggregates: bitrixAggregates(plan, r.aggregates) };
  if (plan.grouped) {
    // Grouped by groupId alone: the service did not group; every matching task is in the one null group.
    const groups = r.groups ?? (r.count > 0 ? [{ values: {}, count: r.count, aggregates: r.aggregates }] : []);
    data.groups = groups.map((g) => ({
      ...Object.fromEntries(plan.dims.map((d) => [d.name, d.field === null ? null : d.field === 'status' ? statusCode(g.values[d.field] ?? null) : (g.values[d.field] ?? null)])),
      count: g.count,
      aggregates: bitrixAggregates(plan, g.aggregates),
    }));
    meta.groupTotal = r.groups ? r.meta.groupTotal : groups.length;
    meta.groupsTruncated = r.groups ? r.meta.groupsTruncated : false;
  }
  return { ...data, meta };
}
