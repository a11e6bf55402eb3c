import { z } from 'zod';
import { dryRunArg, listedAs } from '../src/mcp/arguments.js';
import { fieldSpecArg } from '../src/mcp/schema-args.js';
import { defineTool } from '../src/mcp/tool.js';
import { withRollback } from '../src/services/dry-run.js';
import { createObject } from '../src/services/schema.js';
import { objectOut, renderObject } from './describe-schema.js';

export default defineTool({
  name: 'crm_create_object',
  title: 'Create a custom object',
  description:
    'Add a custom object (a new kind of record, e.g. projects) with its fields; admins only. Records of it can then be created, ' +
    'searched and linked like any other. Answers the object as crm_describe_schema shows it.',
  kind: 'create',
  toolset: 'schema',
  admin: true,
  inputSchema: z.object({
    name: z.string().min(1).max(40).describe('Plural snake_case name, e.g. projects'),
    label: z.string().min(1).max(200).optional().describe('Singular, e.g. Project'),
    label_plural: z.string().min(1).max(200).optional().describe('e.g. Projects'),
    description: z.string().max(1000).optional().describe('What it holds'),
    fields: listedAs(z.array(fieldSpecArg).min(1).max(200), { type: 'array', items: { type: 'object', required: ['name', 'type'] } }).describe("Fields, each as crm_create_field's arguments"),
    display_fields: z.array(z.string()).min(1).max(5).optional().describe("Fields making a record's name"),
    dry_run: dryRunArg,
  }),
  outputSchema: z.object({
    dry_run: z.boolean().describe('true: nothing was written; this is the object that would be created'),
    object: objectOut,
  }),
  handler: async (ctx, a) => {
    const { dry_run, ...spec } = a;
    const object = dry_run ? await withRollback(ctx, (dry) => createObject(dry, spec)) : await createObject(ctx, spec);
    return { dry_run, object };
  },
  render: (out) => `${out.dry_run ? 'Dry run, nothing written. Would create' : 'Created'} object ${renderObject(out.object)}`,
  describeWorkspace: (schema) => `Existing objects (names taken; RELATION targets): users, ${[...schema.objects.keys()].join(', ')}.`,
});
