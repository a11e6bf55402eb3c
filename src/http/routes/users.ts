import type { FastifyInstance } from 'fastify';
import { listUsers, me } from '../../services/users.js';
import { getWorkspace, updateWorkspace } from '../../services/workspace.js';

export async function userRoutes(app: FastifyInstance) {
  app.get('/me', async (req) => ({ data: await me(req.ctx) }));
  app.get('/workspace', async (req) => ({ data: await getWorkspace(req.ctx) }));
  app.patch('/workspace', async (req) => ({ data: await updateWorkspace(req.ctx, req.body) }));
  app.get('/users', async (req) => {
    const data = await listUsers(req.ctx);
    return { data, total: data.length };
  });
}
