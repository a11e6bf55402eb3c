import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { listUsers, me } from '../../services/users.js';
import { getWorkspace, updateWorkspace } from '../../services/workspace.js';
import { Me, Users, Workspace } from '../openapi/schemas.js';

const docs = {
  me: { schema: { summary: 'The authenticated user and workspace', response: { 200: Me } } },
  workspace: { schema: { summary: 'Workspace settings', response: { 200: Workspace } } },
  // updateWorkspace reads the body by hand: this describes it.
  updateWorkspace: {
    schema: {
      summary: 'Change workspace settings (admin)',
      body: z.object({ time_zone: z.string().optional().describe('IANA time zone (Europe/Paris): relative dates in filters are read in it') }).strict(),
      response: { 200: Workspace },
      errors: [403],
    },
  },
  users: { schema: { summary: 'List workspace users', response: { 200: Users } } },
};

export async function userRoutes(app: FastifyInstance) {
  app.get('/me', docs.me, async (req) => ({ data: await me(req.ctx) }));
  app.get('/workspace', docs.workspace, async (req) => ({ data: await getWorkspace(req.ctx) }));
  app.patch('/workspace', docs.updateWorkspace, async (req) => ({ data: await updateWorkspace(req.ctx, req.body) }));
  app.get('/users', docs.users, async (req) => {
    const data = await listUsers(req.ctx);
    return { data, total: data.length };
  });
}
