import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import { aggregateGroups, aggregateKasar, type GroupRequest } from '../../services/aggregate.js';
import { aggregateTree } from '../../services/aggregate-tree.js';
import type { Ctx } from '../../services/context.js';
import { validationError } from '../../services/errors.js';
import { filterFromQuery } from '../../services/filters.js';
import { queryInteger } from '../../services/input-limits.js';
import { parseWith } from '../../services/schema.js';
import { INTERVALS } from '../../services/time-buckets.js';
import { GroupAggregate, KasarAggregate, TreeAggregate } from '../openapi/schemas.js';

type P = { Params: { object: string } };

const kasarQuery = z
  .object({
    field: z.string().optional(),
    function: z.string().optional(),
    group_by: z.string().optional(),
    interval: z.enum(INTERVALS).optional(),
    tz: z.string().optional(),
    order: z.enum(['count_desc', 'count_asc', 'value_desc', 'value_asc', 'group_asc', 'group_desc']).optional(),
    limit: queryInteger.optional(),
    filter_field: z.string().optional(),
    filter_operator: z.string().optional(),
    filter_value: z.string().optional(),
    filters: z.string().optional(),
  })
  .strict();

const groupBody = z
  .object({
    aggregate: z
      .array(z.object({ field: z.string(), function: z.string() }).strict())
      .max(20)
      .optional(),
    filter: z.unknown().optional(),
    groupBy: z
      .union([
        z.string(),
        z.array(z.union([z.string(), z.object({ field: z.string(), interval: z.enum(INTERVALS).optional(), histogram: z.number().optional(), timeZone: z.string().optional() }).strict()])),
      ])
      .optional(),
    order: z
      .object({
        by: z.union([z.enum(['count', 'group']), z.object({ field: z.string(), function: z.string() }).strict()]),
        dir: z.enum(['asc', 'desc']).optional(),
      })
      .strict()
      .optional(),
    limit: z.number().int().optional(),
  })
  .strict();

const heavy = [404, 422];
const docs = {
  kasar: { schema: { summary: 'One metric, optionally by one group (Kasar)', querystring: kasarQuery, response: { 200: KasarAggregate }, errors: heavy } },
  groups: { schema: { summary: 'Several metrics by several dimensions (Bitrix24 shape)', body: groupBody, response: { 200: GroupAggregate }, errors: heavy } },
  // The body is checked by hand and by aggregateTree: this describes it.
  tree: {
    schema: {
      summary: 'Nested aggregates: buckets with their own aggregates (Cognite shape)',
      body: z
        .object({
          aggregates: z.record(z.string(), z.unknown()).describe('Named aggregates: {"name": {"count"|"sum"|"avg"|"min"|"max"|"uniqueValues"|"numberHistogram"|"timeHistogram": {...}}}'),
          filter: z.unknown().optional(),
        })
        .strict(),
      response: { 200: TreeAggregate },
      errors: heavy,
    },
  },
};

/**
 * A REST client that hangs up stops its heavy read, as an MCP cancellation does: the read pool ends
 * the query's worker thread and the lane slot goes to the next request.
 */
function untilClientLeaves(req: FastifyRequest, reply: FastifyReply): Ctx {
  const ac = new AbortController();
  reply.raw.once('close', () => {
    if (!reply.raw.writableFinished) ac.abort();
  });
  return { ...req.ctx, work: { ...req.ctx.work, signal: ac.signal } };
}

export async function aggregateRoutes(app: FastifyInstance) {
  // Kasar: one metric, optional single group.
  app.get<P>('/aggregate/:object', docs.kasar, async (req, reply) => {
    const q = parseWith(kasarQuery, req.query, 'aggregate parameters');
    const [by, dir] = (q.order ?? '').split('_') as [string, 'asc' | 'desc'];
    const order = q.order ? { by: by === 'value' ? { field: q.field ?? '', function: q.function ?? '' } : (by as 'count' | 'group'), dir } : undefined;
    return aggregateKasar(untilClientLeaves(req, reply), req.params.object, {
      field: q.field ?? '',
      function: q.function ?? '',
      groupBy: q.group_by,
      interval: q.interval,
      timeZone: q.tz,
      filter: filterFromQuery(q),
      order,
      limit: q.limit,
    });
  });

  // Multi-metric, multi-dimension (Bitrix24 shape).
  app.post<P>('/aggregate/:object', docs.groups, async (req, reply) => {
    const b = parseWith(groupBody, req.body ?? {}, 'aggregate body');
    const groupBy = b.groupBy === undefined ? undefined : Array.isArray(b.groupBy) ? b.groupBy : [b.groupBy];
    const request: GroupRequest = {
      filter: b.filter,
      metrics: b.aggregate ?? [],
      ...(groupBy ? { groupBy } : {}),
      ...(b.order ? { order: b.order } : {}),
      ...(b.limit !== undefined ? { limit: b.limit } : {}),
    };
    const r = await aggregateGroups(untilClientLeaves(req, reply), req.params.object, request);
    return {
      success: true,
      data: {
        count: r.count,
        aggregates: r.aggregates,
        ...(r.groups ? { groups: r.groups.map((g) => ({ ...g.values, count: g.count, aggregates: g.aggregates, ...(g.labels ? { labels: g.labels } : {}) })) } : {}),
        meta: r.meta,
      },
    };
  });

  // Nested trees (Cognite shape).
  app.post<P>('/aggregate/:object/tree', docs.tree, async (req, reply) => {
    const body = req.body as { aggregates?: unknown; filter?: unknown } | null;
    if (!body || typeof body !== 'object') throw validationError('Send {"aggregates": {...}, "filter": {...}}');
    const extra = Object.keys(body).filter((k) => k !== 'aggregates' && k !== 'filter');
    if (extra.length) throw validationError(`Unknown key(s) ${extra.join(', ')}; the body takes "aggregates" and "filter"`);
    return aggregateTree(untilClientLeaves(req, reply), req.params.object, { aggregates: body.aggregates as Record<string, unknown>, filter: body.filter });
  });
}
