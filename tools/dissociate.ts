import { z } from 'zod';
import { defineTool } from '../src/mcp/tool.js';
import { dryRunArg } from '../src/mcp/arguments.js';
import { withRollback } from '../src/services/dry-run.js';
import { dissociate } from '../src/services/records.js';
import { linkArgs } from './associate.js';

export default defineTool({
  name: 'crm_dissociate',
  title: 'Unlink two records',
  description:
    'Remove the link between two records made with crm_associate; both records stay. Fails, naming both records, when ' +
    'they are not linked.',
  kind: 'delete',
  toolset: 'records',
  inputSchema: z.object({ ...linkArgs, dry_run: dryRunArg }),
  outputSchema: z.object({
    object: z.string(),
    id: z.string(),
    to_object: z.string(),
    to_id: z.string(),
    deleted: z.literal(true),
    dry_run: z.boolean().describe('true: nothing was removed; this is what the call would do'),
  }),
  handler: async (ctx, a) => {
    const r = a.dry_run
      ? await withRollback(ctx, (dry) => dissociate(dry, a.object, a.id, a.to_object, a.to_id))
      : await dissociate(ctx, a.object, a.id, a.to_object, a.to_id);
    return { ...r, deleted: true as const, dry_run: a.dry_run };
  },
  render: (out) => `${out.dry_run ? 'Dry run, nothing removed. Would unlink' : 'Unlinked'} ${out.object} ${out.id} <-> ${out.to_object} ${out.to_id}`,
});
