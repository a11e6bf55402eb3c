import { z } from 'zod';
import { limitArg } from '../src/mcp/arguments.js';
import { recordLines } from '../src/mcp/render.js';
import { taskOut } from '../src/mcp/tasks.js';
import { defineTool } from '../src/mcp/tool.js';
import { markUntrusted, untrustedBlock, untrustedOut } from '../src/mcp/untrusted.js';
import { TASK_PRIORITIES, TASK_STATUSES } from '../src/services/system-objects.js';
import { LINK_FIELDS, listTasks, TASK_MODES } from '../src/services/tasks.js';

export default defineTool({
  name: 'crm_list_tasks',
  title: 'List tasks',
  description:
    "List tasks by mode: 'my_open' (yours, not done, soonest due first), 'overdue', 'today', 'upcoming', 'completed' (latest first) " +
    "or 'all' (newest first), narrowed by assignee, status, priority, due range, the record a task is about, or words in the title.",
  kind: 'read',
  toolset: 'tasks',
  inputSchema: z.object({
    mode: z.enum(TASK_MODES).default('all').describe('Which tasks'),
    assignee: z.string().optional().describe("User id or 'me'"),
    status: z
      .array(z.enum(TASK_STATUSES as [string, ...string[]]))
      .optional()
      .describe('Only these statuses'),
    priority: z
      .array(z.enum(TASK_PRIORITIES as [string, ...string[]]))
      .optional()
      .describe('Only these priorities'),
    due_from: z.string().optional().describe('Due from: date, date-time or this_week, ...'),
    due_to: z.string().optional().describe('Due until (a date: its end)'),
    linked_object: z
      .enum(Object.keys(LINK_FIELDS) as [string, ...string[]])
      .optional()
      .describe('With linked_id: tasks about this record'),
    linked_id: z.string().optional().describe('With linked_object: its id'),
    q: z.string().optional().describe('Words in the title'),
    time_zone: z.string().optional().describe("IANA zone for 'today' and dates (default: the workspace's)"),
    limit: limitArg,
    cursor: z.string().optional().describe('next_cursor of the previous page'),
  }),
  outputSchema: z.object({
    mode: z.enum(TASK_MODES),
    data: z.array(taskOut()).describe('The tasks of this page'),
    total: z.number().nullable().describe('Tasks matching mode and filters'),
    next_cursor: z.string().nullable().describe('Cursor for the next page; null on the last page'),
    untrusted: untrustedOut,
  }),
  handler: async (ctx, a) => {
    const r = await listTasks(ctx, {
      mode: a.mode,
      assignee: a.assignee,
      status: a.status,
      priority: a.priority,
      dueFrom: a.due_from,
      dueTo: a.due_to,
      object: a.linked_object,
      recordId: a.linked_id,
      q: a.q,
      timeZone: a.time_zone,
      limit: a.limit,
      cursor: a.cursor,
      relationNames: true,
    });
    return markUntrusted({ mode: a.mode, data: r.data, total: r.total, next_cursor: r.nextCursor });
  },
  render: (out) => {
    const head = `${out.data.length}${out.total !== null ? ` of ${out.total}` : ''} tasks (${out.mode})` + (out.next_cursor ? `; next_cursor: ${out.next_cursor}` : '; last page');
    return out.data.length ? `${head}\n${untrustedBlock('tasks', recordLines(out.data))}` : head;
  },
});
