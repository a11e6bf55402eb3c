import { z } from 'zod';
import { defineTool } from '../src/mcp/tool.js';
import { listPipelines, pipelineOutput } from '../src/services/pipelines.js';
import { getObjectSchema, listObjects } from '../src/services/schema.js';

const fieldOut = z.object({
  name: z.string(),
  label: z.string(),
  type: z.string(),
  required: z.boolean(),
  unique: z.boolean(),
  system: z.boolean(),
  read_only: z.boolean(),
  options: z.array(z.object({ value: z.string(), label: z.string() })).optional(),
  target: z.string().optional(),
  scale: z.number().optional(),
  min: z.number().optional(),
  max: z.number().optional(),
  default: z.unknown().optional(),
  description: z.string().optional(),
});

export const objectOut = z.object({
  name: z.string(),
  label: z.string(),
  label_plural: z.string(),
  description: z.string().nullable(),
  system: z.boolean(),
  display_fields: z.array(z.string()),
  fields: z.array(fieldOut),
});

type ObjectOut = z.infer<typeof objectOut>;

/** One line per field: "status SELECT(lead|qualified|customer|churned) default=lead". */
export function renderObject(o: ObjectOut): string {
  const head = `${o.name} (${o.label_plural})${o.description ? `: ${o.description}` : ''}`;
  const lines = o.fields.map((f) => {
    let t = `${f.name} ${f.type}`;
    if (f.options) t += `(${f.options.map((x) => x.value).join('|')})`;
    if (f.target) t += ` -> ${f.target}`;
    const flags = [f.required && 'required', f.unique && 'unique', f.read_only && 'read-only'].filter(Boolean);
    if (flags.length) t += ` ${flags.join(' ')}`;
    if (f.default !== undefined && f.default !== null) t += ` default=${JSON.stringify(f.default)}`;
    if (f.min !== undefined || f.max !== undefined) t += ` range=[${f.min ?? ''}, ${f.max ?? ''}]`;
    if (f.description) t += ` - ${f.description}`;
    return `  ${t}`;
  });
  return [head, ...lines].join('\n');
}

export default defineTool({
  name: 'crm_describe_schema',
  title: 'Describe the CRM schema',
  description:
    'The objects and their fields (type, required/unique, SELECT options, RELATION targets, defaults), and their pipelines: ' +
    'ordered steps (the keys crm_move_pipeline_step takes) with probability, won/lost and the defaults a record takes on entering one.',
  kind: 'read',
  toolset: 'schema',
  inputSchema: z.object({
    object: z.string().min(1).optional().describe('One object; omit for all'),
  }),
  outputSchema: z.object({ objects: z.array(objectOut).describe('Objects with their fields'), pipelines: z.array(pipelineOutput) }),
  handler: async (ctx, args) => ({
    objects: args.object ? [await getObjectSchema(ctx, args.object)] : await listObjects(ctx),
    pipelines: await listPipelines(ctx, args.object),
  }),
  render: (out) =>
    [
      ...out.objects.map(renderObject),
      ...out.pipelines.map(
        (p) =>
          `Pipeline ${p.name} (id ${p.id}) over ${p.object}.${p.field}: ` +
          p.steps.map((s) => `${s.key}${s.won ? ' [won]' : s.lost ? ' [lost]' : ''}${s.probability !== null ? ` ${s.probability}%` : ''}`).join(' -> '),
      ),
    ].join('\n\n'),
});
