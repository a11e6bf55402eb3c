import { z } from 'zod';
import { dryRunArg, idArg, objectArg } from '../src/mcp/arguments.js';
import { changesOut, diffRecords, renderChanges } from '../src/mcp/changes.js';
import { agentRecordOut } from '../src/mcp/relations.js';
import { compactJson } from '../src/mcp/render.js';
import { defineTool } from '../src/mcp/tool.js';
import { markUntrusted, untrustedBlock, untrustedOut } from '../src/mcp/untrusted.js';
import { withRollback } from '../src/services/dry-run.js';
import { moveRecord } from '../src/services/pipelines.js';
import { getRecord, nameRelations, type RecordData } from '../src/services/records.js';
import type { WorkspaceSchema } from '../src/services/schema.js';

export default defineTool({
  name: 'crm_move_pipeline_step',
  title: 'Move a record to a pipeline step',
  description: "Move a record (e.g. a deal) to another step of its object's pipeline: the step's defaults (probability) apply and the move is " + 'recorded. Returns from, to and the changed fields.',
  kind: 'update',
  toolset: 'pipelines',
  inputSchema: z.object({
    object: objectArg,
    id: idArg,
    step: z.string().min(1).describe('Step key (crm_describe_schema lists them), e.g. proposal'),
    dry_run: dryRunArg,
  }),
  outputSchema: z.object({
    object: z.string(),
    id: z.string(),
    from: z.string().nullable().describe('Step before the move'),
    to: z.string(),
    moved: z.boolean().describe('false: the record already was on that step'),
    dry_run: z.boolean().describe('true: nothing was written; this is what the move would do'),
    changes: changesOut,
    record: agentRecordOut('The record after the move'),
    untrusted: untrustedOut,
  }),
  handler: async (ctx, a) => {
    // A missing record is reported by the move itself, after the object and step are checked.
    const before = await getRecord(ctx, a.object, a.id, { enrich: false }).catch(() => ({}));
    const r = a.dry_run ? await withRollback(ctx, (dry) => moveRecord(dry, a.object, a.id, a.step)) : await moveRecord(ctx, a.object, a.id, a.step);
    const [named, namedBefore] = await nameRelations(ctx, a.object, [r.record, before as RecordData]);
    return markUntrusted({ object: a.object, id: a.id, from: r.from, to: r.to, moved: r.moved, dry_run: a.dry_run, changes: diffRecords(namedBefore ?? {}, named!), record: named! });
  },
  render: (out) => {
    const head = !out.moved
      ? `${out.object} ${out.id} already on step ${out.to}; nothing to do`
      : `${out.dry_run ? 'Dry run, nothing written. Would move' : 'Moved'} ${out.object} ${out.id} from ${out.from ?? '(none)'} to ${out.to}: ${renderChanges(out.changes)}`;
    return `${head}\n${untrustedBlock(`${out.object} record ${out.id}`, compactJson(out.record))}`;
  },
  describeWorkspace: pipelineSteps,
});

function pipelineSteps(schema: WorkspaceSchema): string {
  const lines = [...schema.objects.values()].filter((o) => o.pipeline).map((o) => `- ${o.name} (${o.pipeline!.field}): ${o.pipeline!.steps.map((s) => s.key).join(' -> ')}`);
  return lines.length ? `Pipelines:\n${lines.join('\n')}` : 'No object has a pipeline yet.';
}
