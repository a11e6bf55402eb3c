import type { FastifyInstance } from 'fastify';
import { createField, createObject, fieldSpecSchema, getObjectSchema, listObjects, objectSpecSchema } from '../../services/schema.js';
import { FieldOne, ObjectList, ObjectOne } from '../openapi/schemas.js';

const docs = {
  list: { schema: { summary: 'List all objects and their fields', response: { 200: ObjectList } } },
  get: { schema: { summary: 'Get the full schema of one object', response: { 200: ObjectOne }, errors: [404] } },
  createObject: { schema: { summary: 'Create a custom object (admin)', body: objectSpecSchema, response: { 201: ObjectOne }, errors: [403, 409] } },
  createField: { schema: { summary: 'Add a field to an object (admin)', body: fieldSpecSchema, response: { 201: FieldOne }, errors: [403, 404, 409] } },
};

export async function schemaRoutes(app: FastifyInstance) {
  app.get('/schema', docs.list, async (req) => ({ data: await listObjects(req.ctx) }));
  app.get<{ Params: { object: string } }>('/schema/:object', docs.get, async (req) => ({ data: await getObjectSchema(req.ctx, req.params.object) }));
  app.post('/schema', docs.createObject, async (req, reply) => reply.status(201).send({ data: await createObject(req.ctx, req.body) }));
  app.post<{ Params: { object: string } }>('/schema/:object/fields', docs.createField, async (req, reply) => reply.status(201).send({ data: await createField(req.ctx, req.params.object, req.body) }));
}
