import { z } from 'zod';
import { objectArg, valuesArg } from '../src/mcp/arguments.js';
import { agentRecordOut } from '../src/mcp/relations.js';
import { compactJson } from '../src/mcp/render.js';
import { defineTool } from '../src/mcp/tool.js';
import { markUntrusted, untrustedBlock, untrustedOut } from '../src/mcp/untrusted.js';
import { createRecord, nameRelations } from '../src/services/records.js';

export default defineTool({
  name: 'crm_create_record',
  title: 'Create a record',
  description:
    'Create one record. Unknown fields, wrong types, options that do not exist and missing required fields are refused ' +
    'with the list of valid choices. Returns the stored record with its id. For many records use crm_batch_write.',
  kind: 'create',
  toolset: 'records',
  inputSchema: z.object({ object: objectArg, values: valuesArg }),
  outputSchema: z.object({ object: z.string(), record: agentRecordOut('The stored record'), untrusted: untrustedOut }),
  handler: async (ctx, a) => markUntrusted({ object: a.object, record: (await nameRelations(ctx, a.object, [await createRecord(ctx, a.object, a.values)]))[0]! }),
  render: (out) => `Created ${out.object} ${out.record.id}\n${untrustedBlock(`${out.object} record ${out.record.id}`, compactJson(out.record))}`,
});
