import { z } from 'zod';
import { type FilterGroup, OPERATORS } from '../services/filters.js';
import { MAX_BATCH, MAX_LIMIT, type RecordData } from '../services/records.js';

/**
 * Argument and result schemas shared by several tools. The `object` argument's description is
 * replaced per session by the list of this workspace's objects (see server.ts).
 */
export const objectArg = z.string().min(1).describe('Object');
export const idArg = z.string().min(1).describe('Record id');
export const fieldsArg = z.array(z.string()).max(200).optional().describe('Fields to return (id always); omit for all');
/**
 * What a field can hold, spelled out instead of "anything": schemas that constrain nothing are the
 * least portable kind (clients mapping tool schemas onto narrower dialects drop or reject them).
 */
// Members described one by one: zod would otherwise fold them into `type: [...]`, which narrower schema dialects reject.
const scalar = z.union([z.string().describe('Text, an option, a date (YYYY-MM-DD), a date-time (ISO 8601) or a record id'), z.number().describe('A number'), z.boolean().describe('true or false')]);
/**
 * A zod schema that validates (and applies defaults) as `schema` does, but is listed to clients as
 * `json`: a shorter JSON Schema where the full one would cost the model's context more than it
 * tells it. Issues keep their paths and messages (the service's messages name the fix).
 */
export function listedAs<T extends z.ZodType>(schema: T, json: Record<string, unknown>) {
  return z
    .any()
    .transform((v, ctx) => {
      const r = schema.safeParse(v);
      if (r.success) return r.data as z.output<T>;
      for (const i of r.error.issues) ctx.addIssue({ code: 'custom', message: i.message, path: i.path });
      return z.NEVER;
    })
    .meta(json);
}

/** A stored field value, for output schemas (arguments take fieldValue, listed shorter). */
export const fieldValueOut = z.union([scalar, z.array(z.string()), z.null()]);

export const fieldValue = listedAs(fieldValueOut, {
  anyOf: [{ type: 'string' }, { type: 'number' }, { type: 'boolean' }, { type: 'array', items: { type: 'string' } }, { type: 'null' }],
});

/** Field name -> value, listed as a plain object: the description says what values fields take. */
export const fieldMap = listedAs(z.record(z.string(), fieldValue), { type: 'object' });

export const valuesArg = fieldMap.describe('Field -> value, e.g. {"first_name":"Ada","company":"<company id>"}: SELECT an option, MULTI_SELECT a list, DATE YYYY-MM-DD, null empties');
export const dryRunArg = z.boolean().default(false).describe('true: write nothing, answer what would change');

const isGroup = (v: unknown) => typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * The filter, as the model sees it: one compact JSON Schema (a group of conditions, and groups
 * nested in the same shape) instead of three written-out levels (4 KB in each of four tools). The
 * service checks it in depth and answers with the fix: valid fields, the operators of the field's
 * type, the allowed values.
 */
export const filterArg = z
  .any()
  .refine(isGroup, 'filter is a group: {"operator": "and", "conditions": [{"field": ..., "operator": ..., "value": ...}]}')
  .optional()
  .meta({
    type: 'object',
    properties: {
      operator: { enum: ['and', 'or', 'not'] },
      conditions: {
        type: 'array',
        items: { type: 'object' },
        description:
          `Each {field, operator, value} or a nested {operator, conditions}. Operators: ${OPERATORS.filter((o) => o !== 'equals' && o !== 'not_equals').join(', ')}. ` +
          'in/not_in take an array, between [low, high], is_null/is_not_null no value',
      },
    },
    required: ['operator', 'conditions'],
  })
  .describe('Which records, e.g. {"operator":"and","conditions":[{"field":"status","operator":"eq","value":"customer"}]}; text matching ignores case') as unknown as z.ZodOptional<
  z.ZodType<FilterGroup>
>;

/**
 * The same filter for the tools after crm_search (aggregate, export, bulk): listed by reference to
 * crm_search's, which a model reads first, instead of the same schema four times.
 */
export const filterRefArg = z
  .any()
  .refine(isGroup, 'filter is a group: {"operator": "and", "conditions": [{"field": ..., "operator": ..., "value": ...}]}')
  .optional()
  .meta({ type: 'object' })
  .describe("Which records: a filter as crm_search's (operators, 'me', relative dates, company.industry)") as unknown as z.ZodOptional<z.ZodType<FilterGroup>>;
export const limitArg = z.number().int().min(1).max(MAX_LIMIT).default(20).describe('Per page');
export const batchArg = z.array(fieldMap).min(1).max(MAX_BATCH).describe(`1 to ${MAX_BATCH} records, each field name -> value`);

const isRecord = (v: unknown) => typeof v === 'object' && v !== null && typeof (v as { id?: unknown }).id === 'string';

/**
 * A record as the services return it: id plus the object's fields (empty fields included).
 * Clients check results against the JSON Schema given here. On the server, the SDK checks every
 * result with the zod schema too: a zod object that lets unknown keys through is checked key by key,
 * which on a page of records costs as much as the query, so zod only checks "an object with an id".
 */
export function recordOut(description = "A record: id plus its object's fields") {
  return z
    .any()
    .refine(isRecord, 'a record is an object with a string id')
    .meta({ type: 'object', properties: { id: { type: 'string' } }, required: ['id'], additionalProperties: true, description }) as unknown as z.ZodType<RecordData>;
}

export const relatedOut = z.object({ id: z.string(), name: z.string(), via: z.string() });
export const associationsOut = z.record(z.string(), z.object({ total: z.number(), records: z.array(relatedOut) }));
