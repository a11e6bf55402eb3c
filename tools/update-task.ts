import { z } from 'zod';
import { dryRunArg } from '../src/mcp/arguments.js';
import { changesOut, diffRecords, renderChanges } from '../src/mcp/changes.js';
import { compactJson } from '../src/mcp/render.js';
import { taskFields, taskIdArg, taskInput, taskOut } from '../src/mcp/tasks.js';
import { defineTool } from '../src/mcp/tool.js';
import { markUntrusted, untrustedBlock, untrustedOut } from '../src/mcp/untrusted.js';
import { withRollback } from '../src/services/dry-run.js';
import { getRecord, nameRelations } from '../src/services/records.js';
import { updateTask } from '../src/services/tasks.js';

export default defineTool({
  name: 'crm_update_task',
  title: 'Update a task',
  description: 'Change some fields of a task; fields not named keep their values, null empties one. Complete a task with status completed. ' + 'Returns the changed fields (from -> to) and the task.',
  kind: 'update',
  toolset: 'tasks',
  inputSchema: z.object({ id: taskIdArg, ...taskFields, title: taskFields.title.optional(), dry_run: dryRunArg }),
  outputSchema: z.object({
    id: z.string(),
    dry_run: z.boolean().describe('true: nothing was written; this is what the update would do'),
    changes: changesOut,
    task: taskOut('The task after the update'),
    untrusted: untrustedOut,
  }),
  handler: async (ctx, a) => {
    const before = await getRecord(ctx, 'tasks', a.id, { enrich: false });
    const input = taskInput(a);
    const task = a.dry_run ? await withRollback(ctx, (dry) => updateTask(dry, a.id, input)) : await updateTask(ctx, a.id, input);
    const [named, namedBefore] = await nameRelations(ctx, 'tasks', [task, before]);
    return markUntrusted({ id: a.id, dry_run: a.dry_run, changes: diffRecords(namedBefore!, named!), task: named! });
  },
  render: (out) =>
    `${out.dry_run ? 'Dry run, nothing written. Would update' : 'Updated'} task ${out.id}\n` + untrustedBlock(`task ${out.id}`, `Changes: ${renderChanges(out.changes)}\n${compactJson(out.task)}`),
});
