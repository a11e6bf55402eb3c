import { z } from 'zod';
import { defineTool } from '../src/mcp/tool.js';
import { listPipelines } from '../src/services/pipelines.js';

const stepOut = z.object({
  id: z.string(),
  key: z.string().describe('The value of the pipeline field on this step: pass it to crm_move_pipeline_step'),
  name: z.string(),
  position: z.number(),
  probability: z.number().nullable(),
  won: z.boolean(),
  lost: z.boolean(),
  defaults: z.record(z.string(), z.unknown()).optional().describe('Field values a record takes on entering the step'),
});

export default defineTool({
  name: 'crm_list_pipelines',
  title: 'List pipelines',
  description:
    'The pipelines of this workspace (the sales pipeline over opportunities.status, and any an admin added): for each, the object and ' +
    'field it runs over and its ordered steps with probability, won/lost flags and the defaults a record takes on entering a step.',
  kind: 'read',
  toolset: 'pipelines',
  inputSchema: z.object({ object: z.string().min(1).optional().describe("Only this object's pipeline; omit for all") }),
  outputSchema: z.object({
    data: z.array(z.object({ id: z.string(), object: z.string(), name: z.string(), field: z.string(), steps: z.array(stepOut) })),
  }),
  handler: async (ctx, a) => ({ data: await listPipelines(ctx, a.object) }),
  render: (out) =>
    out.data.length
      ? out.data
          .map((p) => `${p.name} (id ${p.id}) over ${p.object}.${p.field}: ${p.steps.map((s) => `${s.key}${s.won ? ' [won]' : s.lost ? ' [lost]' : ''}${s.probability !== null ? ` ${s.probability}%` : ''}`).join(' -> ')}`)
          .join('\n')
      : 'No pipelines',
});
