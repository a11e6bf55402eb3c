import { z } from 'zod';
import { limitArg } from '../src/mcp/arguments.js';
import { noteOut, renderNote } from '../src/mcp/notes.js';
import { defineTool } from '../src/mcp/tool.js';
import { markUntrusted, UNTRUSTED_NOTE, untrustedOut } from '../src/mcp/untrusted.js';
import { listNotes } from '../src/services/notes.js';

export default defineTool({
  name: 'crm_list_notes',
  title: 'List notes',
  description: 'Notes you can see (shared with the workspace, or your own private ones), newest first, optionally on one record or containing some words.',
  kind: 'read',
  toolset: 'notes',
  inputSchema: z.object({
    object: z.string().min(1).optional().describe('With record_id: notes on that record'),
    record_id: z.string().optional().describe('With object: the record whose notes to list'),
    visibility: z.enum(['private', 'workspace', 'mine']).optional().describe('Shared, your private, or all you wrote; omit for all'),
    q: z.string().optional().describe('Words in the note text (case-insensitive)'),
    limit: limitArg,
    cursor: z.string().optional().describe('next_cursor of the previous page'),
  }),
  outputSchema: z.object({
    data: z.array(noteOut).describe('The notes of this page, newest first'),
    total: z.number().describe('Notes matching the filters'),
    next_cursor: z.string().nullable().describe('Cursor for the next page; null on the last page'),
    untrusted: untrustedOut,
  }),
  handler: async (ctx, a) => {
    const r = await listNotes(ctx, { object: a.object, recordId: a.record_id, visibility: a.visibility, q: a.q, limit: a.limit, cursor: a.cursor });
    return markUntrusted({ data: r.data, total: r.total, next_cursor: r.nextCursor });
  },
  render: (out) => {
    const head = `${out.data.length} of ${out.total} notes` + (out.next_cursor ? `; next_cursor: ${out.next_cursor}` : '; last page');
    return out.data.length ? [head, UNTRUSTED_NOTE, ...out.data.map(renderNote)].join('\n') : head;
  },
});
