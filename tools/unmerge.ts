import { z } from 'zod';
import { dryRunArg } from '../src/mcp/arguments.js';
import { defineTool } from '../src/mcp/tool.js';
import { withRollback } from '../src/services/dry-run.js';
import { unmergeRecords } from '../src/services/duplicates.js';

export default defineTool({
  name: 'crm_unmerge',
  title: 'Undo a merge',
  description: "Undo a merge (admins only): the merged records come back with their ids and values, the primary's changed fields and every moved link too.",
  kind: 'update',
  toolset: 'data',
  admin: true,
  inputSchema: z.object({
    merge_id: z.string().min(1).describe('From crm_merge_duplicates'),
    dry_run: dryRunArg,
  }),
  outputSchema: z.object({
    merge_id: z.string(),
    primary_id: z.string(),
    restored_ids: z.array(z.string()).describe('The records brought back'),
    dry_run: z.boolean().describe('true: nothing was written; this is what the undo would do'),
  }),
  handler: async (ctx, a) => {
    const r = a.dry_run ? await withRollback(ctx, (dry) => unmergeRecords(dry, a.merge_id)) : await unmergeRecords(ctx, a.merge_id);
    return { ...r, dry_run: a.dry_run };
  },
  render: (out) => `${out.dry_run ? 'Dry run, nothing written. Would restore' : 'Restored'} ${out.restored_ids.join(', ')} from merge ${out.merge_id} into ${out.primary_id}`,
});
