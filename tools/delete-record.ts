import { z } from 'zod';
import { type associationsOut, dryRunArg, idArg, objectArg } from '../src/mcp/arguments.js';
import { agentRecordOut } from '../src/mcp/relations.js';
import { compactJson } from '../src/mcp/render.js';
import { defineTool } from '../src/mcp/tool.js';
import { markUntrusted, untrustedBlock, untrustedOut } from '../src/mcp/untrusted.js';
import { withRollback } from '../src/services/dry-run.js';
import { deleteRecord, getRecord, nameRelations, type RecordData } from '../src/services/records.js';

type Associations = z.infer<typeof associationsOut>;

/**
 * Links the delete removes: records pointing at this one (their relation field becomes empty) and
 * explicit associations. The record's own relation fields (its company, owner) go with it and are not listed.
 */
function unlinks(record: Record<string, unknown>, assoc: Associations) {
  return Object.entries(assoc).flatMap(([object, g]) => {
    const incoming = g.records.filter((r) => record[r.via] !== r.id);
    const total = g.total - (g.records.length - incoming.length);
    return total > 0 ? [{ object, total, via: [...new Set(incoming.map((r) => r.via))], ids: incoming.map((r) => r.id) }] : [];
  });
}

export default defineTool({
  name: 'crm_delete_record',
  title: 'Delete a record',
  description:
    "Delete one record (a task too) for good. Records that pointed to it lose that link (a deleted company empties its contacts' company); " +
    'explicit links go. Returns the record as it was and what was unlinked.',
  kind: 'delete',
  toolset: 'records',
  inputSchema: z.object({ object: objectArg, id: idArg, dry_run: dryRunArg }),
  outputSchema: z.object({
    object: z.string(),
    id: z.string(),
    deleted: z.literal(true),
    dry_run: z.boolean().describe('true: nothing was deleted; this is what the delete would do'),
    record: agentRecordOut('The record as it was before the delete'),
    unlinked: z
      .array(
        z.object({
          object: z.string(),
          total: z.number(),
          via: z.array(z.string()).describe("Relation fields of 'object' that pointed here, or 'association'"),
          ids: z.array(z.string()).describe('Up to 20 of their ids'),
        }),
      )
      .describe('Links removed, by object: records that pointed here keep existing without the link'),
    untrusted: untrustedOut,
  }),
  handler: async (ctx, a) => {
    const { associations, ...record } = await getRecord(ctx, a.object, a.id, { enrich: true });
    const assoc = (associations ?? {}) as Associations;
    // Named before the delete: a relation may point at the record itself.
    const [named] = await nameRelations(ctx, a.object, [record as RecordData]);
    if (a.dry_run) await withRollback(ctx, (dry) => deleteRecord(dry, a.object, a.id));
    else await deleteRecord(ctx, a.object, a.id);
    return markUntrusted({ object: a.object, id: a.id, deleted: true as const, dry_run: a.dry_run, record: named!, unlinked: unlinks(record, assoc) });
  },
  render: (out) => {
    const links = out.unlinked.map((u) => `${u.total} ${u.object} (${u.via.join(', ')})`).join(', ');
    return (
      `${out.dry_run ? 'Dry run, nothing deleted. Would delete' : 'Deleted'} ${out.object} ${out.id}` +
      (links ? `; unlinks ${links}` : '') +
      `\n${untrustedBlock(`${out.object} record ${out.id}`, compactJson(out.record))}`
    );
  },
});
