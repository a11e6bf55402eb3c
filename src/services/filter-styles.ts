import { validationError } from './errors.js';
import { type Condition, checkFilterSize, type FilterGroup } from './filters.js';

/**
 * One filter language inside (the Kasar FilterGroup); three spellings accepted at the edges:
 *  - Kasar:   {"operator": "and", "conditions": [{"field", "operator", "value"}, ...]}
 *  - Cognite: {"and": [{"equals": {"property": "status", "value": "open"}}, {"range": {...}}]}
 *  - Bitrix:  {"owner": "u1", "status": ["open", "won"]}   (equality / one-of per field)
 */
export function normalizeFilter(input: unknown): FilterGroup | undefined {
  if (input === undefined || input === null) return undefined;
  if (typeof input !== 'object' || Array.isArray(input)) throw validationError('A filter must be a JSON object');
  // Before the translation below, which recurses once per level.
  checkFilterSize(input);
  const o = input as Record<string, unknown>;
  if ('conditions' in o || 'operator' in o) return o as unknown as FilterGroup;
  const keys = Object.keys(o);
  if (keys.length === 0) return undefined;
  if (keys.length === 1 && COGNITE_KEYS.has(keys[0]!)) return asGroup(fromCognite(o));
  return {
    operator: 'and',
    conditions: keys.map((field): Condition => {
      const v = o[field];
      if (v === null) return { field, operator: 'is_null' };
      return Array.isArray(v) ? { field, operator: 'in', value: v } : { field, operator: 'eq', value: v };
    }),
  };
}

const COGNITE_KEYS = new Set(['and', 'or', 'not', 'equals', 'in', 'range', 'prefix', 'exists', 'containsAny', 'containsAll']);

function asGroup(x: Condition | FilterGroup): FilterGroup {
  return 'conditions' in x ? x : { operator: 'and', conditions: [x] };
}

/** Cognite names a property as [space, container, property]; ours is the last part. */
function property(spec: unknown, where: string): string {
  const p = (spec as { property?: unknown } | null)?.property;
  const name = Array.isArray(p) ? p[p.length - 1] : p;
  if (typeof name !== 'string' || !name) throw validationError(`'${where}' needs "property": a field name (or [space, container, field])`);
  return name;
}

function fromCognite(node: unknown): Condition | FilterGroup {
  if (typeof node !== 'object' || node === null || Array.isArray(node)) throw validationError('Each filter must be an object such as {"equals": {...}}');
  const entries = Object.entries(node as Record<string, unknown>);
  if (entries.length !== 1) throw validationError(`Each filter node has exactly one key (one of ${[...COGNITE_KEYS].join(', ')})`);
  const [kind, spec] = entries[0]!;
  const s = spec as Record<string, unknown>;
  switch (kind) {
    case 'and':
    case 'or':
      if (!Array.isArray(spec)) throw validationError(`'${kind}' takes an array of filters`);
      return { operator: kind, conditions: spec.map(fromCognite) };
    case 'not':
      return { operator: 'not', conditions: [fromCognite(spec)] };
    case 'equals':
      return { field: property(s, kind), operator: 'eq', value: s.value };
    case 'in':
      return { field: property(s, kind), operator: 'in', value: s.values };
    case 'prefix':
      return { field: property(s, kind), operator: 'starts_with', value: s.value };
    case 'exists':
      return { field: property(s, kind), operator: 'is_not_null' };
    case 'containsAny':
      // On a MULTI_SELECT 'in' means "has any of"; on a single value it is plain membership.
      return { field: property(s, kind), operator: 'in', value: s.values };
    case 'containsAll': {
      const field = property(s, kind);
      if (!Array.isArray(s.values)) throw validationError('\'containsAll\' takes "values": [...]');
      return { operator: 'and', conditions: s.values.map((v) => ({ field, operator: 'contains' as const, value: v })) };
    }
    case 'range': {
      const field = property(s, kind);
      const conds: Condition[] = [];
      for (const op of ['gt', 'gte', 'lt', 'lte'] as const) if (s[op] !== undefined) conds.push({ field, operator: op, value: s[op] });
      if (conds.length === 0) throw validationError("'range' needs at least one of gt, gte, lt, lte");
      return { operator: 'and', conditions: conds };
    }
    default:
      throw validationError(`Unknown filter '${kind}'. Filters: ${[...COGNITE_KEYS].join(', ')}`);
  }
}
