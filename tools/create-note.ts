import { z } from 'zod';
import { noteOut, renderNote } from '../src/mcp/notes.js';
import { defineTool } from '../src/mcp/tool.js';
import { markUntrusted, UNTRUSTED_NOTE, untrustedOut } from '../src/mcp/untrusted.js';
import { createNote } from '../src/services/notes.js';

export default defineTool({
  name: 'crm_create_note',
  title: 'Add a note',
  description: "Write a note, on a record (it then shows in that record's timeline) or standalone; shared with the workspace by default, " + 'or private to you. Returns the stored note.',
  kind: 'create',
  toolset: 'notes',
  inputSchema: z.object({
    body: z.string().min(1).max(100_000).describe('The note text'),
    visibility: z.enum(['workspace', 'private']).default('workspace').describe('private: only you see it'),
    object: z.string().min(1).optional().describe('With record_id: the record it is on'),
    record_id: z.string().optional().describe('With object'),
  }),
  outputSchema: z.object({ note: noteOut, untrusted: untrustedOut }),
  handler: async (ctx, a) =>
    markUntrusted({ note: await createNote(ctx, { body: a.body, visibility: a.visibility, ...(a.object ? { object: a.object } : {}), ...(a.record_id ? { record_id: a.record_id } : {}) }) }),
  render: (out) => `Created note ${out.note.id}\n${UNTRUSTED_NOTE}\n${renderNote(out.note)}`,
});
