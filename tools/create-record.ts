import { z } from 'zod';
import { defineTool } from '../src/mcp/tool.js';
import { objectArg, recordOut, valuesArg } from '../src/mcp/arguments.js';
import { compactJson } from '../src/mcp/render.js';
import { createRecord } from '../src/services/records.js';

export default defineTool({
  name: 'crm_create_record',
  title: 'Create a record',
  description:
    'Create one record. Unknown fields, wrong types, options that do not exist and missing required fields are refused ' +
    'with the list of valid choices. Returns the stored record with its id. For many records use crm_batch_write.',
  kind: 'create',
  toolset: 'records',
  inputSchema: z.object({ object: objectArg, values: valuesArg }),
  outputSchema: z.object({ object: z.string(), record: recordOut('The stored record') }),
  handler: async (ctx, a) => ({ object: a.object, record: await createRecord(ctx, a.object, a.values) }),
  render: (out) => `Created ${out.object} ${out.record.id}\n${compactJson(out.record)}`,
});
