import { z } from 'zod';
import { associationsOut, fieldsArg, idArg, objectArg } from '../src/mcp/arguments.js';
import { RELATION_VALUE } from '../src/mcp/relations.js';
import { compactJson } from '../src/mcp/render.js';
import { defineTool } from '../src/mcp/tool.js';
import { markUntrusted, UNTRUSTED_FIELD, untrustedBlock, untrustedOut } from '../src/mcp/untrusted.js';
import { getRecord } from '../src/services/records.js';

export default defineTool({
  name: 'crm_get_record',
  title: 'Get a record',
  description: "One record with its associations: what it points to (company, owner), what points to it (a company's contacts, deals) " + 'and explicit links, 20 per object with the total.',
  kind: 'read',
  toolset: 'records',
  inputSchema: z.object({
    object: objectArg,
    id: idArg,
    fields: fieldsArg,
    associations: z.boolean().default(true).describe('Include associated records (default true)'),
  }),
  outputSchema: z.object({
    object: z.string(),
    record: z
      .looseObject({ id: z.string(), associations: associationsOut.optional().describe('Associated records by object') })
      .describe(`The record: id, its object's fields and its associations. ${RELATION_VALUE}. Text fields: ${UNTRUSTED_FIELD}`),
    untrusted: untrustedOut,
  }),
  handler: async (ctx, a) =>
    markUntrusted({
      object: a.object,
      record: await getRecord(ctx, a.object, a.id, { enrich: a.associations, fields: a.fields, relationNames: true }),
    }),
  render: (out) => untrustedBlock(`${out.object} record ${out.record.id}`, compactJson(out.record)),
});
