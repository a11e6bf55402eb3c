import { z } from 'zod';
import { filterRefArg, listedAs, objectArg } from '../src/mcp/arguments.js';
import { defineTool } from '../src/mcp/tool.js';
import { markUntrusted, untrustedBlock, untrustedOut } from '../src/mcp/untrusted.js';
import { AGG_FUNCTIONS, aggregateGroups, type GroupRequest, MAX_GROUP_BY, MAX_GROUP_LIMIT } from '../src/services/aggregate.js';
import { aggregateTree, TREE_LIMITS } from '../src/services/aggregate-tree.js';
import { validationError } from '../src/services/errors.js';
import { INTERVALS } from '../src/services/time-buckets.js';

/**
 * The aggregation engine for agents: the multi-metric form of POST /api/v1/aggregate/{object} and
 * the tree form of POST /api/v1/aggregate/{object}/tree, with the same argument names as those
 * bodies, so a question reads the same on both surfaces (and gets the same answer: a parity test).
 */

/**
 * Groups an agent gets when it names no limit: REST answers every group, but a model's context is
 * better spent on the top ones; meta and the text say how many were left out and how to get them.
 */
const AGENT_GROUP_LIMIT = 100;

const metricArg = z.object({ field: z.string(), function: z.enum(AGG_FUNCTIONS) }).strict();

const dimArg = listedAs(
  z.union([z.string(), z.object({ field: z.string(), interval: z.enum(INTERVALS).optional(), timeZone: z.string().optional(), histogram: z.number().positive().optional() }).strict()]),
  {
    anyOf: [
      { type: 'string' },
      { type: 'object', properties: { field: { type: 'string' }, interval: { enum: [...INTERVALS] }, timeZone: { type: 'string' }, histogram: { type: 'number' } }, required: ['field'] },
    ],
  },
);

const TREE_KINDS = ['count', 'sum', 'avg', 'min', 'max', 'countDistinct', 'uniqueValues', 'numberHistogram', 'timeHistogram'] as const;
const treeSpec = z
  .object({
    property: z.string().optional().describe('Field name (count without property counts records)'),
    size: z.number().int().optional().describe(`uniqueValues: how many buckets (default ${TREE_LIMITS.defaultSize}, at most ${TREE_LIMITS.maxSize}), by count descending`),
    interval: z.number().optional().describe('numberHistogram: bucket width'),
    calendarInterval: z
      .enum(['1d', '1w', '1M', '1q', '1y', ...INTERVALS])
      .optional()
      .describe('timeHistogram: 1d, 1w, 1M, 1q, 1y (or day, week, month, quarter, year)'),
    timeZone: z.string().optional().describe('timeHistogram: IANA time zone (default UTC)'),
    aggregates: z.record(z.string(), z.record(z.string(), z.unknown())).optional().describe('Bucket kinds only: named sub-aggregates computed per bucket, in the same shape'),
  })
  .strict();
const treeArg = listedAs(z.record(z.string(), z.partialRecord(z.enum(TREE_KINDS), treeSpec)), { type: 'object', additionalProperties: { type: 'object' } })
  .optional()
  .describe(
    'Form 2 (instead of form 1): named metrics and buckets, nested, e.g. {"by_stage": {"uniqueValues": {"property": "status", ' +
      '"aggregates": {"total": {"sum": {"property": "amount"}}}}}}. Metrics count, sum, avg, min, max, countDistinct; buckets ' +
      'uniqueValues (size), numberHistogram (interval), timeHistogram (calendarInterval 1d..1y, timeZone)',
  );

const scalar = z.union([z.number(), z.string(), z.boolean(), z.null()]);
const metricsOut = z.record(z.string(), z.record(z.string(), scalar)).describe('field -> function -> value');
const groupOut = z.object({
  values: z.record(z.string(), scalar).describe('Group value per groupBy field (bucket start for intervals and histograms)'),
  labels: z.record(z.string(), z.string().nullable()).optional().describe('Names for RELATION values (owner -> user name)'),
  count: z.number(),
  aggregates: metricsOut,
});

export default defineTool({
  name: 'crm_aggregate',
  title: 'Aggregate records',
  description:
    'Exact counts, sums, averages, min/max and distinct counts over every matching record of one object (nothing sampled), ' +
    `grouped by up to ${MAX_GROUP_BY} fields, dates by interval, numbers by histogram: for how many / how much / by what. ` +
    'Answers groups with their count and metrics, plus totals; empty values group as null; meta says what the limit left out.',
  kind: 'read',
  toolset: 'aggregate',
  inputSchema: z.object({
    object: objectArg,
    aggregate: z.array(metricArg).max(20).optional().describe('Form 1: metrics, e.g. [{"field":"amount","function":"sum"}]; groups carry their count anyway'),
    filter: filterRefArg,
    groupBy: z
      .array(dimArg)
      .max(MAX_GROUP_BY)
      .optional()
      .describe(
        'Form 1: fields or buckets (by a MULTI_SELECT field, a record is in the group of each of its values), e.g. ["status", "company.industry", {"field":"close_date","interval":"month","timeZone":"Europe/Paris"}, {"field":"amount","histogram":1000}]',
      ),
    order: listedAs(z.object({ by: z.union([z.enum(['count', 'group']), metricArg]), dir: z.enum(['asc', 'desc']).optional() }).strict(), { type: 'object' })
      .optional()
      .describe('Form 1: {"by": "count"|"group"|{field, function}, "dir": "asc"|"desc"}'),
    limit: z
      .number()
      .int()
      .min(1)
      .max(MAX_GROUP_LIMIT)
      .optional()
      .describe(`Form 1: groups to return (default ${AGENT_GROUP_LIMIT}, at most ${MAX_GROUP_LIMIT}); meta.groupsTruncated says when groups were left out`),
    aggregates: treeArg,
  }),
  outputSchema: z.object({
    object: z.string(),
    form: z.enum(['groups', 'tree']),
    count: z.number().describe('Records matching the filter'),
    aggregates: z.record(z.string(), z.unknown()).describe('groups form: totals over all matching records, field -> function -> value; tree form: the named results'),
    groups: z.array(groupOut).optional().describe('groups form with groupBy: one entry per group'),
    meta: z
      .object({
        totalRecords: z.number().describe('Records of the object, filter or not'),
        recordsProcessed: z.number(),
        truncated: z.literal(false).describe('Always false: every record is counted'),
        groupTotal: z.number().optional().describe('Number of groups in all'),
        groupsTruncated: z.boolean().optional().describe('true: the limit left groups out'),
        otherCount: z.number().optional().describe('Records in the groups left out by the limit'),
      })
      .optional(),
    untrusted: untrustedOut,
  }),
  handler: async (ctx, a) => {
    const flat = a.aggregate !== undefined || a.groupBy !== undefined || a.order !== undefined || a.limit !== undefined;
    if (a.aggregates !== undefined) {
      if (flat) throw validationError('Use either the tree form (aggregates) or the groups form (aggregate, groupBy, order, limit), not both');
      const r = await aggregateTree(ctx, a.object, { aggregates: a.aggregates, filter: a.filter });
      return markUntrusted({ object: r.object, form: 'tree' as const, count: r.count, aggregates: r.aggregates });
    }
    const req: GroupRequest = { filter: a.filter, metrics: a.aggregate ?? [] };
    if (a.groupBy) req.groupBy = a.groupBy;
    if (a.order) req.order = a.order;
    req.limit = a.limit ?? AGENT_GROUP_LIMIT;
    const r = await aggregateGroups(ctx, a.object, req);
    return markUntrusted({
      object: r.object,
      form: 'groups' as const,
      count: r.count,
      aggregates: r.aggregates,
      ...(r.groups ? { groups: r.groups as z.input<typeof groupOut>[] } : {}),
      meta: r.meta,
    });
  },
  render: (out) => {
    // Group values (a job title, a company name) were typed by people: inside the block.
    if (out.form === 'tree') return `${out.count} ${out.object}\n${untrustedBlock(`${out.object} aggregates`, JSON.stringify(out.aggregates))}`;
    const totals = Object.entries(out.aggregates as Record<string, Record<string, unknown>>).flatMap(([f, m]) => Object.entries(m).map(([fn, v]) => `${f}.${fn} ${JSON.stringify(v)}`));
    const lines = [`${out.count} ${out.object}${totals.length ? `; ${totals.join(', ')}` : ''}`];
    const rows: string[] = [];
    if (out.groups && out.meta) {
      const m = out.meta;
      lines.push(
        m.groupsTruncated
          ? `${out.groups.length} of ${m.groupTotal} groups; the ${(m.groupTotal ?? 0) - out.groups.length} left out hold ${m.otherCount} records; for the rest: limit up to ${Math.min(m.groupTotal ?? 0, MAX_GROUP_LIMIT)}, a filter, or another order`
          : `${out.groups.length} groups`,
      );
      for (const g of out.groups) {
        const row: Record<string, unknown> = { ...g.values };
        for (const [k, v] of Object.entries(g.labels ?? {})) row[`${k}_label`] = v;
        row.count = g.count;
        for (const [f, fns] of Object.entries(g.aggregates)) for (const [fn, v] of Object.entries(fns)) row[`${f}.${fn}`] = v;
        rows.push(JSON.stringify(row));
      }
    }
    return rows.length ? `${lines.join('\n')}\n${untrustedBlock(`${out.object} groups`, rows.join('\n'))}` : lines.join('\n');
  },
});
