import { z } from 'zod';
import { defineTool } from '../src/mcp/tool.js';
import { dryRunArg } from '../src/mcp/arguments.js';
import { changesOut, diffRecords, renderChanges } from '../src/mcp/changes.js';
import { compactJson } from '../src/mcp/render.js';
import { taskIdArg, taskOut } from '../src/mcp/tasks.js';
import { withRollback } from '../src/services/dry-run.js';
import { markUntrusted, untrustedBlock, untrustedOut } from '../src/mcp/untrusted.js';
import { getRecord, nameRelations } from '../src/services/records.js';
import { completeTask } from '../src/services/tasks.js';

export default defineTool({
  name: 'crm_complete_task',
  title: 'Complete or reopen a task',
  description:
    'Mark a task completed (status completed, completed_at now), or with completed: false reopen it (status open). A task already in ' +
    'that state is left as it is (changed: false). With dry_run: true nothing is written and the answer says exactly what would change.',
  kind: 'update',
  toolset: 'tasks',
  inputSchema: z.object({
    id: taskIdArg,
    completed: z.boolean().default(true).describe('true (default): complete the task; false: reopen it'),
    dry_run: dryRunArg,
  }),
  outputSchema: z.object({
    id: z.string(),
    completed: z.boolean().describe('The state asked for'),
    changed: z.boolean().describe('false: the task already was in that state'),
    dry_run: z.boolean().describe('true: nothing was written; this is what the call would do'),
    changes: changesOut,
    task: taskOut('The task after the call'),
    untrusted: untrustedOut,
  }),
  handler: async (ctx, a) => {
    const before = await getRecord(ctx, 'tasks', a.id, { enrich: false });
    const task = a.dry_run ? await withRollback(ctx, (dry) => completeTask(dry, a.id, a.completed)) : await completeTask(ctx, a.id, a.completed);
    const changes = diffRecords(before, task);
    const [named] = await nameRelations(ctx, 'tasks', [task]);
    return markUntrusted({ id: a.id, completed: a.completed, changed: Object.keys(changes).length > 0, dry_run: a.dry_run, changes, task: named! });
  },
  render: (out) => {
    const verb = out.completed ? 'complete' : 'reopen';
    const head = !out.changed
      ? `Task ${out.id} already ${out.completed ? 'completed' : 'open'}; nothing to do`
      : `${out.dry_run ? `Dry run, nothing written. Would ${verb}` : out.completed ? 'Completed' : 'Reopened'} task ${out.id}: ${renderChanges(out.changes)}`;
    return `${head}\n${untrustedBlock(`task ${out.id}`, compactJson(out.task))}`;
  },
});
