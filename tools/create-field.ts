import { z } from 'zod';
import { dryRunArg, objectArg } from '../src/mcp/arguments.js';
import { fieldSpecShape } from '../src/mcp/schema-args.js';
import { defineTool } from '../src/mcp/tool.js';
import { withRollback } from '../src/services/dry-run.js';
import { createField } from '../src/services/schema.js';
import { objectOut } from './describe-schema.js';

const fieldOut = objectOut.shape.fields.element;

export default defineTool({
  name: 'crm_create_field',
  title: 'Add a custom field',
  description:
    'Add a custom field to an object (system or custom); admins only. It can be set with crm_update_record right away. ' +
    'A default, when given, fills the existing records too. Answers the field as crm_describe_schema shows it.',
  kind: 'create',
  toolset: 'schema',
  admin: true,
  inputSchema: z.object({ object: objectArg, ...fieldSpecShape, dry_run: dryRunArg }),
  outputSchema: z.object({
    dry_run: z.boolean().describe('true: nothing was written; this is the field that would be created'),
    object: z.string(),
    field: fieldOut,
  }),
  handler: async (ctx, a) => {
    const { dry_run, object, ...spec } = a;
    const field = dry_run ? await withRollback(ctx, (dry) => createField(dry, object, spec)) : await createField(ctx, object, spec);
    return { dry_run, object, field };
  },
  render: (out) => {
    const f = out.field;
    const type = `${f.type}${f.options ? `(${f.options.map((o) => o.value).join('|')})` : ''}${f.target ? ` -> ${f.target}` : ''}`;
    return `${out.dry_run ? 'Dry run, nothing written. Would add' : 'Added'} field ${out.object}.${f.name} ${type}${f.required ? ' required' : ''}${f.unique ? ' unique' : ''}`;
  },
  describeWorkspace: (schema) => `RELATION targets: users, ${[...schema.objects.keys()].join(', ')}.`,
});
