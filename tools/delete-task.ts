import { z } from 'zod';
import { defineTool } from '../src/mcp/tool.js';
import { dryRunArg } from '../src/mcp/arguments.js';
import { compactJson } from '../src/mcp/render.js';
import { taskIdArg, taskOut } from '../src/mcp/tasks.js';
import { withRollback } from '../src/services/dry-run.js';
import { getRecord } from '../src/services/records.js';
import { deleteTask } from '../src/services/tasks.js';

export default defineTool({
  name: 'crm_delete_task',
  title: 'Delete a task',
  description:
    'Delete a task for good (to close a task that is done, set its status to completed with crm_update_task instead). Returns the task as it was. ' +
    'With dry_run: true nothing is deleted and the answer says exactly what would be.',
  kind: 'delete',
  toolset: 'tasks',
  inputSchema: z.object({ id: taskIdArg, dry_run: dryRunArg }),
  outputSchema: z.object({
    id: z.string(),
    deleted: z.literal(true),
    dry_run: z.boolean().describe('true: nothing was deleted; this is what the delete would do'),
    task: taskOut('The task as it was before the delete'),
  }),
  handler: async (ctx, a) => {
    const task = await getRecord(ctx, 'tasks', a.id, { enrich: false });
    if (a.dry_run) await withRollback(ctx, (dry) => deleteTask(dry, a.id));
    else await deleteTask(ctx, a.id);
    return { id: a.id, deleted: true as const, dry_run: a.dry_run, task };
  },
  render: (out) => `${out.dry_run ? 'Dry run, nothing deleted. Would delete' : 'Deleted'} task ${out.id}\n${compactJson(out.task)}`,
});
