import { z } from 'zod';
import { compactJson } from '../src/mcp/render.js';
import { taskFields, taskInput, taskOut } from '../src/mcp/tasks.js';
import { defineTool } from '../src/mcp/tool.js';
import { markUntrusted, untrustedBlock, untrustedOut } from '../src/mcp/untrusted.js';
import { nameRelations } from '../src/services/records.js';
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
  outputSchema: z.object({ task: taskOut('The stored task'), untrusted: untrustedOut }),
  handler: async (ctx, a) => markUntrusted({ task: (await nameRelations(ctx, 'tasks', [await createTask(ctx, taskInput(a))]))[0]! }),
  render: (out) => `Created task ${out.task.id}\n${untrustedBlock(`task ${out.task.id}`, compactJson(out.task))}`,
});
