import { z } from 'zod';
import { fieldsArg, filterArg, limitArg, objectArg } from '../src/mcp/arguments.js';
import { agentRecordOut } from '../src/mcp/relations.js';
import { recordLines } from '../src/mcp/render.js';
import { defineTool } from '../src/mcp/tool.js';
import { markUntrusted, untrustedBlock, untrustedOut } from '../src/mcp/untrusted.js';
import { FILTER_VALUE_HELP } from '../src/services/filters.js';
import { listRecords } from '../src/services/records.js';
import type { WorkspaceSchema } from '../src/services/schema.js';

/** Field names per object, with SELECT options: enough to write a filter without guessing. */
const COMMON = new Set(['id', 'created_at', 'updated_at', 'created_by']);

function fieldsOfEachObject(schema: WorkspaceSchema): string {
  const lines = [...schema.objects.values()].map((o) => {
    const fields = o.fields.filter((f) => !COMMON.has(f.name)).map((f) => (f.options && f.options.length <= 12 ? `${f.name}(${f.options.map((x) => x.value).join('|')})` : f.name));
    return `- ${o.name}: ${fields.join(', ')}`;
  });
  const text = `Fields (and id, created_at, updated_at):\n${lines.join('\n')}`;
  // A workspace with many custom objects would flood every tool listing: point to the schema tool instead.
  return text.length <= 3000 ? text : 'Call crm_describe_schema for the fields of each object.';
}

export default defineTool({
  name: 'crm_search',
  title: 'Search records',
  description:
    'Find records of one object with a structured filter, sorted, a page at a time: the records (relations as {id, name}), the ' +
    `total and next_cursor (null on the last page). Filters: ${FILTER_VALUE_HELP}`,
  kind: 'read',
  toolset: 'records',
  inputSchema: z.object({
    object: objectArg,
    filter: filterArg,
    fields: fieldsArg,
    sort_by: z.string().optional().describe('Sort field, also company.name (default created_at)'),
    sort_dir: z.enum(['asc', 'desc']).optional().describe('Default desc'),
    limit: limitArg,
    cursor: z.string().optional().describe('next_cursor of the previous page'),
    include_total: z.boolean().default(true).describe('false: skip the count (faster on large objects)'),
  }),
  outputSchema: z.object({
    object: z.string(),
    data: z.array(agentRecordOut("A record: id plus its object's fields")).describe('The records of this page'),
    total: z.number().nullable().describe('Number of records matching the filter; null when include_total is false'),
    next_cursor: z.string().nullable().describe('Cursor for the next page; null on the last page'),
    untrusted: untrustedOut,
  }),
  handler: async (ctx, a) => {
    const r = await listRecords(ctx, a.object, {
      filter: a.filter,
      fields: a.fields,
      sortBy: a.sort_by,
      sortDir: a.sort_dir,
      limit: a.limit,
      cursor: a.cursor,
      includeTotal: a.include_total,
      relationNames: true,
    });
    return markUntrusted({ object: a.object, data: r.data, total: r.total, next_cursor: r.nextCursor });
  },
  render: (out) => {
    const head = `${out.data.length}${out.total !== null ? ` of ${out.total}` : ''} ${out.object}` + (out.next_cursor ? `; next_cursor: ${out.next_cursor}` : '; last page');
    return out.data.length ? `${head}\n${untrustedBlock(`${out.object} records`, recordLines(out.data))}` : head;
  },
  describeWorkspace: fieldsOfEachObject,
});
