import { z } from 'zod';
import { defineTool } from '../src/mcp/tool.js';
import { me } from '../src/services/users.js';

export default defineTool({
  name: 'crm_whoami',
  title: 'Who am I',
  description: 'Who this connection acts as (id, name, role), its workspace and time zone, and what this server allows (read-only, tools).',
  kind: 'read',
  toolset: 'users',
  inputSchema: z.object({}),
  outputSchema: z.object({
    user: z.object({ id: z.string(), email: z.string(), name: z.string(), role: z.enum(['admin', 'member']) }),
    workspace: z.string(),
    time_zone: z.string().describe("The workspace's IANA time zone: 'today', 'this_week' and other relative dates in filters are days there"),
    read_only: z.boolean().describe('true: this server exposes no tools that write'),
    toolsets: z.array(z.string()),
    tools: z.array(z.string()),
  }),
  handler: async (ctx, _a, session) => {
    const u = await me(ctx);
    return {
      user: { id: u.id, email: u.email, name: u.name, role: u.role },
      workspace: u.workspace,
      time_zone: u.time_zone,
      read_only: session.readOnly,
      toolsets: [...session.toolsets],
      tools: [...session.tools],
    };
  },
  render: (out) =>
    `${out.user.name} <${out.user.email}> (${out.user.role}, id ${out.user.id}) in workspace ${out.workspace} (time zone ${out.time_zone})` +
    `${out.read_only ? '; read-only' : ''}; tools: ${out.tools.join(', ')}`,
});
