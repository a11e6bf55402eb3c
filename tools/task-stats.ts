import { z } from 'zod';
import { defineTool } from '../src/mcp/tool.js';
import { taskStats } from '../src/services/tasks.js';

export default defineTool({
  name: 'crm_task_stats',
  title: 'Task statistics',
  description:
    'Task counts: total, open, overdue, by status, by priority, and open tasks per assignee (with names), for the workspace or one assignee. ' +
    'For other breakdowns of tasks use crm_aggregate on the tasks object.',
  kind: 'read',
  toolset: 'tasks',
  inputSchema: z.object({
    assignee: z.string().optional().describe("Only this user's tasks: a user id, or 'me'; omit for everyone's"),
  }),
  outputSchema: z.object({
    total: z.number(),
    open: z.number().describe('Open, in progress or waiting'),
    overdue: z.number().describe('Open tasks due before now'),
    by_status: z.record(z.string(), z.number()),
    by_priority: z.record(z.string(), z.number()),
    open_by_assignee: z.array(z.object({ assignee: z.string().nullable(), name: z.string().nullable(), open: z.number() })),
  }),
  handler: async (ctx, a) => {
    const s = await taskStats(ctx, { assignee: a.assignee });
    return { ...s, open_by_assignee: s.open_by_assignee.map((x) => ({ assignee: (x.assignee as string | null) ?? null, name: x.name, open: x.open })) };
  },
  render: (out) =>
    `${out.total} tasks, ${out.open} open, ${out.overdue} overdue\nby status: ${JSON.stringify(out.by_status)}\nby priority: ${JSON.stringify(out.by_priority)}\n` +
    `open by assignee: ${out.open_by_assignee.map((x) => `${x.name ?? x.assignee ?? 'unassigned'} ${x.open}`).join(', ') || 'none'}`,
});
