import type { FastifyInstance } from 'fastify';
import { listUsers, me } from '../../services/users.js';

export async function userRoutes(app: FastifyInstance) {
  app.get('/me', async (req) => ({ data: await me(req.ctx) }));
  app.get('/users', async (req) => {
    const data = await listUsers(req.ctx);
    return { data, total: data.length };
  });
}
