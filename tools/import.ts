import { z } from 'zod';
import { defineTool } from '../src/mcp/tool.js';
import { fieldValue, objectArg } from '../src/mcp/arguments.js';
import { IMPORT_BATCH, importDetailed } from '../src/services/import-export.js';

export default defineTool({
  name: 'crm_import',
  title: 'Import records',
  description:
    `Import up to ${IMPORT_BATCH} records of one object per call (admins only). Unlike crm_batch_write, rows are independent and ` +
    'checked for duplicates first: a row with the same email, phone (any formatting), domain, or name at the same company as an ' +
    'existing record or an earlier row is skipped as a duplicate, not created; a bad row fails alone with its reason. Pipeline ' +
    'defaults apply. A relation can be given by name: company_name "Acme" links (or creates) the company called Acme. ' +
    'Returns counts and, row by row, created (with id), duplicate (of which record) or failed (why).',
  kind: 'create',
  toolset: 'data',
  admin: true,
  inputSchema: z.object({
    object: objectArg,
    records: z
      .array(z.record(z.string(), fieldValue))
      .min(1)
      .max(IMPORT_BATCH, `At most ${IMPORT_BATCH} records per call: split them into batches of ${IMPORT_BATCH}`)
      .describe(`1 to ${IMPORT_BATCH} records, each field name -> value; <relation>_name (e.g. company_name) links by name`),
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
