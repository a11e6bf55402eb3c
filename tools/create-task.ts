import { z } from 'zod';
import { defineTool } from '../src/mcp/tool.js';
import { compactJson } from '../src/mcp/render.js';
import { taskFields, taskInput, taskOut } from '../src/mcp/tasks.js';
import { createTask } from '../src/services/tasks.js';

export default defineTool({
  name: 'crm_create_task',
  title: 'Create a task',
  description:
    'Create a to-do with a due date, priority and assignee (default: you), optionally about a contact, company and/or opportunity ' +
    "(it then shows in that record's timeline). Returns the stored task with its id.",
  kind: 'create',
  toolset: 'tasks',
  inputSchema: z.object(taskFields),
  outputSchema: z.object({ task: taskOut('The stored task') }),
  handler: async (ctx, a) => ({ task: await createTask(ctx, taskInput(a)) }),
  render: (out) => `Created task ${out.task.id}\n${compactJson(out.task)}`,
});
