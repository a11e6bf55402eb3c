import { z } from 'zod';
import { dryRunArg, idArg, objectArg } from '../src/mcp/arguments.js';
import { defineTool } from '../src/mcp/tool.js';
import type { Ctx } from '../src/services/context.js';
import { withRollback } from '../src/services/dry-run.js';
import { associate, dissociate } from '../src/services/records.js';

interface Link {
  object: string;
  id: string;
  to_object: string;
  to_id: string;
  unlink: boolean;
}

/** Link (associate) or unlink (dissociate) two records; changed: false when the link already was as asked. */
async function link(ctx: Ctx, a: Link) {
  const ends = { object: a.object, id: a.id, to_object: a.to_object, to_id: a.to_id };
  if (!a.unlink) return { ...ends, linked: true, changed: (await associate(ctx, a.object, a.id, a.to_object, a.to_id)).created };
  await dissociate(ctx, a.object, a.id, a.to_object, a.to_id);
  return { ...ends, linked: false, changed: true };
}

export default defineTool({
  name: 'crm_link',
  title: 'Link or unlink two records',
  description:
    'Link two records of any objects (many-to-many, e.g. a contact to several deals), or with unlink: true remove that link; both ' +
    "records stay. Linking twice is harmless; unlinking what is not linked fails. A contact's company is a field: set it with crm_update_record.",
  // Linking again changes nothing more, unlinking removes: an update in the kind table (idempotent, destructive).
  kind: 'update',
  toolset: 'records',
  inputSchema: z.object({
    object: objectArg,
    id: idArg,
    to_object: objectArg.describe('Object of the other record'),
    to_id: z.string().min(1).describe('Id of the other record'),
    unlink: z.boolean().default(false).describe('true: remove the link'),
    dry_run: dryRunArg,
  }),
  outputSchema: z.object({
    object: z.string(),
    id: z.string(),
    to_object: z.string(),
    to_id: z.string(),
    linked: z.boolean().describe('Whether the two are linked after the call'),
    changed: z.boolean().describe('false: the link already was as asked'),
    dry_run: z.boolean(),
  }),
  handler: async (ctx, a) => ({ ...(a.dry_run ? await withRollback(ctx, (dry) => link(dry, a)) : await link(ctx, a)), dry_run: a.dry_run }),
  render: (out) =>
    `${out.dry_run ? 'Dry run, nothing written. Would have: ' : ''}${out.linked ? (out.changed ? 'Linked' : 'Already linked:') : 'Unlinked'} ` +
    `${out.object} ${out.id} <-> ${out.to_object} ${out.to_id}`,
});
