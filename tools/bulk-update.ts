import { z } from 'zod';
import { dryRunArg, filterRefArg, objectArg, valuesArg } from '../src/mcp/arguments.js';
import { defineTool } from '../src/mcp/tool.js';
import { markUntrusted, untrustedBlock, untrustedOut } from '../src/mcp/untrusted.js';
import { BULK_MAX, bulkOperation } from '../src/services/bulk.js';
import { withRollback } from '../src/services/dry-run.js';

export default defineTool({
  name: 'crm_bulk_update',
  title: 'Update or link many records',
  description:
    `Change up to ${BULK_MAX} records of one object at once, by ids or filter, all or none: update sets the same values on each; ` +
    'add_relation / remove_relation link each to one record or unlink it. A dry run counts what would change, with examples.',
  kind: 'update',
  toolset: 'data',
  inputSchema: z.object({
    object: objectArg,
    action: z.enum(['update', 'add_relation', 'remove_relation']).describe('update needs values; the others need relation'),
    ids: z.array(z.string()).min(1).max(BULK_MAX).optional().describe('The records, by id (or filter)'),
    filter: filterRefArg.describe("As crm_search's (or ids); without conditions it needs all"),
    all: z.boolean().optional().describe('true: every record of the object, on purpose'),
    values: valuesArg.optional().describe('update: field -> new value, e.g. {"status": "qualified"}'),
    relation: z
      .object({ object: z.string().min(1), id: z.string().min(1) })
      .strict()
      .optional()
      .describe('The record {object, id} to link to or unlink from'),
    dry_run: dryRunArg,
  }),
  outputSchema: z.object({
    action: z.enum(['update', 'add_relation', 'remove_relation']),
    object: z.string(),
    matched: z.number().describe('Records chosen by ids or filter'),
    dry_run: z.boolean().describe('true: nothing was written; this is what the call would do'),
    would_change: z.number().optional().describe('dry run: records that would change'),
    updated: z.number().optional().describe('update: records written'),
    changed: z.number().optional().describe('add/remove_relation: links added or removed'),
    unchanged: z.number().optional().describe('Records already as asked'),
    changes_by_field: z.record(z.string(), z.number()).optional().describe('dry run of update: records that would change, per field'),
    samples: z
      .array(z.object({ id: z.string(), changes: z.record(z.string(), z.tuple([z.unknown(), z.unknown()])).describe('field -> [from, to]') }))
      .optional()
      .describe('dry run of update: up to 20 records that would change'),
    relation: z.object({ object: z.string(), id: z.string() }).optional(),
    untrusted: untrustedOut,
  }),
  handler: async (ctx, a) => {
    const input = {
      action: a.action,
      object: a.object,
      ...(a.ids ? { ids: a.ids } : {}),
      ...(a.filter !== undefined ? { filter: a.filter } : {}),
      ...(a.all !== undefined ? { all: a.all } : {}),
      ...(a.values ? { values: a.values } : {}),
      ...(a.relation ? { relation: a.relation } : {}),
    };
    if (!a.dry_run) return markUntrusted(await bulkOperation(ctx, { ...input, dry_run: false }));
    const preview = await bulkOperation(ctx, { ...input, dry_run: true });
    // An update's dry run is the update rolled back already; a relation's preview reads, and the
    // real call, rolled back, proves it would succeed.
    if (a.action !== 'update') await withRollback(ctx, (dry) => bulkOperation(dry, { ...input, dry_run: false }));
    return markUntrusted(preview);
  },
  render: (out) => {
    const what = out.action === 'update' ? 'update' : out.action === 'add_relation' ? `link to ${out.relation?.object} ${out.relation?.id}` : `unlink from ${out.relation?.object} ${out.relation?.id}`;
    if (out.dry_run) {
      const lines = [`Dry run, nothing written. ${out.matched} ${out.object} chosen; ${what} would change ${out.would_change}, ${out.unchanged} already as asked`];
      if (out.changes_by_field) lines.push(`by field: ${JSON.stringify(out.changes_by_field)}`);
      // The samples' old values were typed by people: inside the block.
      const samples = (out.samples ?? []).map(
        (s) =>
          `${s.id}: ${Object.entries(s.changes)
            .map(([f, [from, to]]) => `${f}: ${JSON.stringify(from)} -> ${JSON.stringify(to)}`)
            .join('; ')}`,
      );
      if (samples.length) lines.push(untrustedBlock(`${out.object} samples`, samples.join('\n')));
      return lines.join('\n');
    }
    return out.action === 'update'
      ? `Updated ${out.updated} ${out.object}`
      : `${out.action === 'add_relation' ? 'Linked' : 'Unlinked'} ${out.changed} ${out.object} (${what}); ${out.unchanged} already as asked`;
  },
});
