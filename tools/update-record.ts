import { z } from 'zod';
import { dryRunArg, idArg, objectArg, valuesArg } from '../src/mcp/arguments.js';
import { changesOut, diffRecords, renderChanges } from '../src/mcp/changes.js';
import { agentRecordOut } from '../src/mcp/relations.js';
import { compactJson } from '../src/mcp/render.js';
import { defineTool } from '../src/mcp/tool.js';
import { markUntrusted, untrustedBlock, untrustedOut } from '../src/mcp/untrusted.js';
import { withRollback } from '../src/services/dry-run.js';
import { getRecord, nameRelations, updateRecord } from '../src/services/records.js';

export default defineTool({
  name: 'crm_update_record',
  title: 'Update a record',
  description: 'Change some fields of one record; fields not named keep their values. Set a field to null to empty it. ' + 'Returns the record after the change and the changed fields (from -> to).',
  kind: 'update',
  toolset: 'records',
  inputSchema: z.object({ object: objectArg, id: idArg, values: valuesArg, dry_run: dryRunArg }),
  outputSchema: z.object({
    object: z.string(),
    id: z.string(),
    dry_run: z.boolean().describe('true: nothing was written; this is what the update would do'),
    changes: changesOut,
    record: agentRecordOut('The record after the update'),
    untrusted: untrustedOut,
  }),
  handler: async (ctx, a) => {
    const before = await getRecord(ctx, a.object, a.id, { enrich: false });
    const record = a.dry_run ? await withRollback(ctx, (dry) => updateRecord(dry, a.object, a.id, a.values)) : await updateRecord(ctx, a.object, a.id, a.values);
    // Both sides named, so a changed relation reads {id, name} -> {id, name}.
    const [named, namedBefore] = await nameRelations(ctx, a.object, [record, before]);
    return markUntrusted({ object: a.object, id: a.id, dry_run: a.dry_run, changes: diffRecords(namedBefore!, named!), record: named! });
  },
  render: (out) =>
    `${out.dry_run ? 'Dry run, nothing written. Would update' : 'Updated'} ${out.object} ${out.id}\n` +
    untrustedBlock(`${out.object} record ${out.id}`, `Changes: ${renderChanges(out.changes)}\n${compactJson(out.record)}`),
});
