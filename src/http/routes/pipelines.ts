import type { FastifyInstance } from 'fastify';
import { validationError } from '../../services/errors.js';
import { createPipeline, getPipeline, listPipelines, moveRecord, pipelineStats } from '../../services/pipelines.js';

export async function pipelineRoutes(app: FastifyInstance) {
  app.get('/pipelines', async (req) => {
    const { object } = req.query as { object?: string };
    const data = await listPipelines(req.ctx, object);
    return { data, total: data.length };
  });
  app.post('/pipelines', async (req, reply) => reply.status(201).send({ data: await createPipeline(req.ctx, req.body) }));
  app.get<{ Params: { id: string } }>('/pipelines/:id', async (req) => ({ data: await getPipeline(req.ctx, req.params.id) }));
  app.get<{ Params: { id: string } }>('/pipelines/:id/stats', async (req) => ({ data: await pipelineStats(req.ctx, req.params.id) }));
  app.put<{ Params: { object: string; id: string } }>('/pipelines/:object/:id/move', async (req) => {
    const body = (req.body ?? {}) as { step?: unknown; step_id?: unknown };
    const step = body.step ?? body.step_id;
    if (typeof step !== 'string') throw validationError('Send {"step": "<step key or id>"}');
    const r = await moveRecord(req.ctx, req.params.object, req.params.id, step);
    return { data: r.record, move: { from: r.from, to: r.to, moved: r.moved } };
  });
}
