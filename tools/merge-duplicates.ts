import { z } from 'zod';
import { dryRunArg, fieldValue, listedAs, objectArg } from '../src/mcp/arguments.js';
import { agentRecordOut } from '../src/mcp/relations.js';
import { compactJson } from '../src/mcp/render.js';
import { defineTool } from '../src/mcp/tool.js';
import { markUntrusted, untrustedBlock, untrustedOut } from '../src/mcp/untrusted.js';
import { withRollback } from '../src/services/dry-run.js';
import { MAX_MERGE, mergeRecords } from '../src/services/duplicates.js';
import { nameRelations, type RecordData } from '../src/services/records.js';

export default defineTool({
  name: 'crm_merge_duplicates',
  title: 'Merge duplicate records',
  description:
    `Merge up to ${MAX_MERGE} duplicates into a primary record (admins only): the primary's values win, its empty fields are filled ` +
    'from the duplicates (or overrides), everything linked to them moves to the primary, and they are deleted. crm_unmerge undoes it with the merge_id.',
  kind: 'delete',
  toolset: 'data',
  admin: true,
  inputSchema: z.object({
    object: objectArg,
    primary_id: z.string().min(1).describe('The record to keep'),
    duplicate_ids: z.array(z.string().min(1)).min(1).max(MAX_MERGE).describe('Records to merge into it (then deleted)'),
    overrides: listedAs(z.record(z.string(), z.union([fieldValue, z.object({ from: z.string() }).strict()])), { type: 'object' })
      .optional()
      .describe('Per field: the merged value, or {"from": "<record id>"} to take that record\'s'),
    dry_run: dryRunArg,
  }),
  outputSchema: z.object({
    object: z.string(),
    primary_id: z.string(),
    merged_ids: z.array(z.string()),
    dry_run: z.boolean().describe('true: nothing was written; this is what the merge would do'),
    merge_id: z.string().nullable().describe('Pass to crm_unmerge to undo; null on a dry run'),
    record: agentRecordOut('The primary record after the merge'),
    changes: z
      .record(z.string(), z.object({ from: z.unknown(), to: z.unknown(), source: z.string().nullable().describe("Where the value came from: a duplicate's id or 'override'") }))
      .describe("The primary's changed fields"),
    moves: z
      .object({ relations: z.number(), associations: z.number(), notes: z.number(), activity: z.number(), threads: z.number(), stage_history: z.number() })
      .describe('Links moved from the duplicates to the primary, by kind'),
    untrusted: untrustedOut,
  }),
  handler: async (ctx, a) => {
    const input = { primary_id: a.primary_id, duplicate_ids: a.duplicate_ids, overrides: a.overrides ?? {} };
    let r: Awaited<ReturnType<typeof mergeRecords>>;
    if (a.dry_run) {
      r = await mergeRecords(ctx, a.object, { ...input, dry_run: true });
      // The preview only reads; the real merge, rolled back, proves it would succeed.
      await withRollback(ctx, (dry) => mergeRecords(dry, a.object, { ...input, dry_run: false }));
    } else r = await mergeRecords(ctx, a.object, { ...input, dry_run: false });
    const [record] = await nameRelations(ctx, a.object, [r.record as RecordData]);
    return markUntrusted({
      object: a.object,
      primary_id: r.primary_id,
      merged_ids: r.merged_ids,
      dry_run: r.dry_run,
      merge_id: 'merge_id' in r ? r.merge_id : null,
      record: record!,
      changes: r.changes,
      moves: r.moves,
    });
  },
  render: (out) => {
    const changes = Object.entries(out.changes).map(([f, c]) => `${f}: ${JSON.stringify(c.from)} -> ${JSON.stringify(c.to)}`);
    const moves = Object.entries(out.moves)
      .filter(([, n]) => n > 0)
      .map(([k, n]) => `${n} ${k}`);
    return [
      `${out.dry_run ? 'Dry run, nothing written. Would merge' : 'Merged'} ${out.merged_ids.length} ${out.object} into ${out.primary_id}` +
        (out.merge_id ? ` (merge_id ${out.merge_id}: crm_unmerge undoes it)` : ''),
      `changes: ${changes.join('; ') || 'none'}; moves: ${moves.join(', ') || 'none'}`,
      untrustedBlock(`${out.object} record ${out.primary_id}`, compactJson(out.record)),
    ].join('\n');
  },
});
