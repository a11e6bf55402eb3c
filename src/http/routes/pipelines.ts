import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { validationError } from '../../services/errors.js';
import { createPipeline, getPipeline, listPipelines, moveRecord, pipelineSchema, pipelineStats } from '../../services/pipelines.js';
import { Moved, PipelineOne, PipelineStats, Pipelines } from '../openapi/schemas.js';

const docs = {
  list: {
    schema: {
      summary: 'List pipelines with their steps',
      querystring: z.object({ object: z.string().optional().describe("Only this object's pipelines") }),
      response: { 200: Pipelines },
      errors: [404],
    },
  },
  create: { schema: { summary: 'Create a pipeline over a SELECT field (admin)', body: pipelineSchema, response: { 201: PipelineOne }, errors: [403, 404, 409] } },
  get: { schema: { summary: 'Get a pipeline', response: { 200: PipelineOne }, errors: [404] } },
  stats: { schema: { summary: 'Pipeline statistics: counts, amounts, time in stage, conversion', response: { 200: PipelineStats }, errors: [404, 422] } },
  // The body is read by hand (below): this describes it.
  move: {
    schema: {
      summary: 'Move a record to a pipeline step (applies the step defaults)',
      body: z.object({ step: z.string().optional().describe('Step key or id'), step_id: z.string().optional().describe('Alias of step') }),
      response: { 200: Moved },
      errors: [403, 404, 409],
    },
  },
};

export async function pipelineRoutes(app: FastifyInstance) {
  app.get('/pipelines', docs.list, async (req) => {
    const { object } = req.query as { object?: string };
    const data = await listPipelines(req.ctx, object);
    return { data, total: data.length };
  });
  app.post('/pipelines', docs.create, async (req, reply) => reply.status(201).send({ data: await createPipeline(req.ctx, req.body) }));
  app.get<{ Params: { id: string } }>('/pipelines/:id', docs.get, async (req) => ({ data: await getPipeline(req.ctx, req.params.id) }));
  app.get<{ Params: { id: string } }>('/pipelines/:id/stats', docs.stats, async (req) => ({ data: await pipelineStats(req.ctx, req.params.id) }));
  app.put<{ Params: { object: string; id: string } }>('/pipelines/:object/:id/move', docs.move, async (req) => {
    const body = (req.body ?? {}) as { step?: unknown; step_id?: unknown };
    const step = body.step ?? body.step_id;
    if (typeof step !== 'string') throw validationError('Send {"step": "<step key or id>"}');
    const r = await moveRecord(req.ctx, req.params.object, req.params.id, step);
    return { data: r.record, move: { from: r.from, to: r.to, moved: r.moved } };
  });
}
