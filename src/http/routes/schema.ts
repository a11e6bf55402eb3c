import type { FastifyInstance } from 'fastify';
import { createField, createObject, getObjectSchema, listObjects } from '../../services/schema.js';

export async function schemaRoutes(app: FastifyInstance) {
  app.get('/schema', async (req) => ({ data: await listObjects(req.ctx) }));
  app.get<{ Params: { object: string } }>('/schema/:object', async (req) => ({ data: await getObjectSchema(req.ctx, req.params.object) }));
  app.post('/schema', async (req, reply) => reply.status(201).send({ data: await createObject(req.ctx, req.body) }));
  app.post<{ Params: { object: string } }>('/schema/:object/fields', async (req, reply) =>
    reply.status(201).send({ data: await createField(req.ctx, req.params.object, req.body) }),
  );
}
