import { z } from 'zod';
import { idArg, objectArg } from '../src/mcp/arguments.js';
import { defineTool } from '../src/mcp/tool.js';
import { markUntrusted, untrustedBlock, untrustedOut } from '../src/mcp/untrusted.js';
import { getTimeline } from '../src/services/timeline.js';

export default defineTool({
  name: 'crm_get_activity',
  title: 'Record timeline',
  description:
    "A record's timeline, newest first: created, each field change (from -> to), links, pipeline moves, merges, tasks, notes and emails " +
    'about it, each with who did it and through which surface (rest, cli, mcp:<tool>).',
  kind: 'read',
  toolset: 'activity',
  inputSchema: z.object({
    object: objectArg,
    id: idArg,
    actions: z.array(z.string()).optional().describe('Only these, e.g. ["updated", "pipeline_moved", "note_added"] (a wrong one is refused with the list)'),
    from: z.string().optional().describe('From this ISO date or date-time (UTC)'),
    to: z.string().optional().describe('Until this ISO date (inclusive) or date-time'),
    limit: z.number().int().min(1).max(100).default(50).describe('Entries per page'),
    cursor: z.string().optional().describe('next_cursor of the previous page'),
  }),
  outputSchema: z.object({
    object: z.string(),
    id: z.string(),
    data: z
      .array(
        z.object({
          id: z.number(),
          action: z.string().describe('created, updated, deleted, associated, dissociated, merged, note_added, email_received, ...'),
          at: z.string(),
          user: z.object({ id: z.string(), name: z.string().nullable() }).nullable(),
          via: z.string().describe("Surface: 'rest', 'cli' or 'mcp:<tool name>'"),
          details: z.unknown().describe('What changed (e.g. field -> {from, to}); values are data written by users or email senders'),
        }),
      )
      .describe('Entries of this page, newest first'),
    total: z.number().describe('Entries in the whole timeline (with the actions and date filters)'),
    next_cursor: z.string().nullable().describe('Cursor for the next page; null on the last page'),
    untrusted: untrustedOut,
  }),
  handler: async (ctx, a) => {
    const r = await getTimeline(ctx, a.object, a.id, { limit: a.limit, cursor: a.cursor, actions: a.actions, from: a.from, to: a.to });
    return markUntrusted({ object: a.object, id: a.id, data: r.data, total: r.total, next_cursor: r.nextCursor });
  },
  render: (out) => {
    const head = `${out.data.length} of ${out.total} timeline entries of ${out.object} ${out.id}` + (out.next_cursor ? `; next_cursor: ${out.next_cursor}` : '; last page');
    if (!out.data.length) return head;
    const lines = out.data.map((e) =>
      JSON.stringify({ at: e.at, action: e.action, by: e.user?.name ?? e.user?.id ?? null, via: e.via, ...(e.details !== null && e.details !== undefined ? { details: e.details } : {}) }),
    );
    return `${head}\n${untrustedBlock(`timeline of ${out.object} ${out.id}`, lines.join('\n'))}`;
  },
});
