import type { ContentBlock } from '@modelcontextprotocol/sdk/types.js';
import { z } from 'zod';
import { fieldsArg, filterRefArg, objectArg } from '../src/mcp/arguments.js';
import { type ExportRequest, exportCsv, exportUri } from '../src/mcp/export-csv.js';
import { agentRecordOut } from '../src/mcp/relations.js';
import { recordLines } from '../src/mcp/render.js';
import { defineTool } from '../src/mcp/tool.js';
import { markUntrusted, untrustedBlock, untrustedOut } from '../src/mcp/untrusted.js';
import { budgetLimits } from '../src/services/budget.js';
import { planExport } from '../src/services/import-export.js';
import { listRecords } from '../src/services/records.js';

/** The product's default for agents (REST's is 1000). */
const DEFAULT_LIMIT = 500;
const MAX_PREVIEW = 50;
/** CSV embedded in the answer only up to this many rows; beyond, the link (or a narrower query). */
const MAX_EMBEDDED_ROWS = 1000;

const requestOf = (a: { fields?: string[] | undefined; filter?: ExportRequest['filter']; sort_by?: string | undefined; sort_dir?: 'asc' | 'desc' | undefined; limit: number }): ExportRequest => ({
  fields: a.fields,
  filter: a.filter,
  sort_by: a.sort_by,
  sort_dir: a.sort_dir,
  limit: a.limit,
});

export default defineTool({
  name: 'crm_export',
  title: 'Export records (CSV)',
  description:
    'Export the records of one object that match a filter as CSV (admins only; a <field>_name column beside each relation). ' +
    'Answers the count, a preview and a resource link (crm://export/...) to the full file: read it or hand it to the user.',
  kind: 'read',
  toolset: 'data',
  admin: true,
  inputSchema: z.object({
    object: objectArg,
    filter: filterRefArg,
    fields: fieldsArg,
    sort_by: z.string().optional().describe('Sort field (default created_at)'),
    sort_dir: z.enum(['asc', 'desc']).optional().describe('Default desc'),
    limit: z.number().int().min(1).default(DEFAULT_LIMIT).describe('Rows in the export (at most 10,000 by default; the server says its limit)'),
    preview: z.number().int().min(0).max(MAX_PREVIEW).default(10).describe('Rows shown in the answer'),
    include_csv: z.boolean().default(false).describe('The CSV in the answer too'),
  }),
  outputSchema: z.object({
    object: z.string(),
    fields: z.array(z.string()).describe("The fields exported; in the CSV each RELATION field is followed by a <field>_name column with the related record's name"),
    matched: z.number().describe('Records matching the filter'),
    exported: z.number().describe('Rows in the export: matched, capped by limit'),
    preview: z.array(agentRecordOut('A record of the export')).describe('The first rows of the export'),
    csv: z.object({
      uri: z.string().describe('Resource with the full CSV; reading it runs the export at that moment'),
      mime_type: z.literal('text/csv'),
      embedded: z.boolean().describe('true: the CSV text is embedded in this answer as a resource'),
    }),
    note: z.string(),
    untrusted: untrustedOut,
  }),
  handler: async (ctx, a) => {
    // Checks the role, fields, filter and sort before anything is read.
    const plan = await planExport(ctx, a.object, { fields: a.fields, filter: a.filter, sortBy: a.sort_by, sortDir: a.sort_dir, limit: a.limit });
    const page = await listRecords(ctx, a.object, {
      filter: a.filter,
      fields: plan.fields,
      sortBy: a.sort_by ?? 'created_at',
      sortDir: a.sort_dir ?? 'desc',
      limit: Math.max(1, Math.min(a.preview, a.limit)),
      includeTotal: true,
      relationNames: true,
    });
    const matched = page.total ?? 0;
    const exported = Math.min(matched, a.limit);
    const embedded = a.include_csv && exported <= MAX_EMBEDDED_ROWS;
    const uri = exportUri(plan.object.name, requestOf(a));
    const note =
      (embedded ? 'The CSV is embedded in this answer. ' : '') +
      `Full CSV (${exported} rows): read the resource ${uri}.` +
      (a.include_csv && !embedded ? ` Not embedded: ${exported} rows is more than ${MAX_EMBEDDED_ROWS}; narrow the filter, lower limit or choose fewer fields to embed it.` : '') +
      (matched > a.limit ? ` ${matched - a.limit} more records match beyond limit (at most ${budgetLimits(ctx.db).exportMaxRows}).` : '');
    return markUntrusted({
      object: plan.object.name,
      fields: plan.fields,
      matched,
      exported,
      preview: page.data.slice(0, a.preview),
      csv: { uri, mime_type: 'text/csv' as const, embedded },
      note,
    });
  },
  render: (out) =>
    [
      `Export of ${out.exported} ${out.object} (${out.matched} match); columns: ${out.fields.join(', ')}`,
      out.note,
      ...(out.preview.length ? [`First ${out.preview.length} rows:`, untrustedBlock(`${out.object} export preview`, recordLines(out.preview))] : []),
    ].join('\n'),
  attachments: async (ctx, out, a) => {
    const blocks: ContentBlock[] = [{ type: 'resource_link', uri: out.csv.uri, name: `${out.object}_export.csv`, title: `${out.object} export (${out.exported} rows)`, mimeType: 'text/csv' }];
    if (out.csv.embedded) {
      const { csv } = await exportCsv(ctx, out.object, requestOf(a));
      blocks.push({ type: 'resource', resource: { uri: out.csv.uri, mimeType: 'text/csv', text: csv } });
    }
    return blocks;
  },
});
