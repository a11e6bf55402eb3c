import { z } from 'zod';
import { fieldMap, objectArg } from '../src/mcp/arguments.js';
import { defineTool } from '../src/mcp/tool.js';
import { IMPORT_BATCH, importDetailed } from '../src/services/import-export.js';

export default defineTool({
  name: 'crm_import',
  title: 'Import records',
  description:
    `Import up to ${IMPORT_BATCH} records of one object (admins only), each row alone: a row matching an existing record or an ` +
    'earlier row (email, phone, domain, name at the company) is skipped as a duplicate; company_name links or creates the company. ' +
    'Answers row by row: created, duplicate or failed, and why.',
  kind: 'create',
  toolset: 'data',
  admin: true,
  inputSchema: z.object({
    object: objectArg,
    records: z
      .array(fieldMap)
      .min(1)
      .max(IMPORT_BATCH, `At most ${IMPORT_BATCH} records per call: split them into batches of ${IMPORT_BATCH}`)
      .describe('Records, field -> value; <relation>_name links by name'),
  }),
  outputSchema: z.object({
    object_name: z.string(),
    created: z.number(),
    duplicates: z.number().describe('Rows skipped because the record exists already (or appears twice in the import)'),
    failed: z.number(),
    errors: z.array(z.object({ index: z.number(), code: z.string(), message: z.string() })).describe('Failed rows: position and reason'),
    rows: z
      .array(
        z.object({
          index: z.number().describe('Position in records'),
          status: z.enum(['created', 'duplicate', 'failed']),
          id: z.string().optional().describe('created: the new record id'),
          duplicate_of: z.string().optional().describe('duplicate: the existing record it matches'),
          reason: z.string().optional(),
        }),
      )
      .describe('One entry per input row, in order'),
  }),
  handler: async (ctx, a) => importDetailed(ctx, a.object, a.records),
  render: (out) =>
    [
      `Imported ${out.object_name}: ${out.created} created, ${out.duplicates} duplicates skipped, ${out.failed} failed`,
      ...out.rows.map((r) => `#${r.index} ${r.status}${r.id ? ` ${r.id}` : ''}${r.duplicate_of ? ` of ${r.duplicate_of}` : ''}${r.reason && r.status !== 'created' ? `: ${r.reason}` : ''}`),
    ].join('\n'),
});
