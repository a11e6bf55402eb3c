import { z } from 'zod';
import { defineTool } from '../src/mcp/tool.js';
import { markUntrusted, UNTRUSTED_NOTE, untrusted, untrustedOut } from '../src/mcp/untrusted.js';
import { listChanges, MAX_CHANGES } from '../src/services/changes.js';

export default defineTool({
  name: 'crm_list_changes',
  title: 'What changed in the CRM',
  description:
    'What changed in the whole workspace, oldest first: each change with its record and name, field changes (from -> to), ' +
    'who, and through which surface (rest, cli, mcp:<tool>). Call again with since = next_cursor for later changes, each once.',
  kind: 'read',
  toolset: 'activity',
  inputSchema: z.object({
    since: z.string().optional().describe('next_cursor of the previous call: only later changes'),
    from: z.string().optional().describe('From this ISO date or date-time (UTC)'),
    to: z.string().optional().describe('Until this ISO date (inclusive) or date-time'),
    object: z.string().min(1).optional().describe('Only this object'),
    actions: z.array(z.string()).optional().describe("Only these, as crm_get_activity's (default: all but related_* echoes)"),
    user: z.string().optional().describe("Only by this user id, or 'me'"),
    limit: z.number().int().min(1).max(MAX_CHANGES).default(50).describe('Changes per call'),
  }),
  outputSchema: z.object({
    data: z
      .array(
        z.object({
          id: z.number(),
          at: z.string(),
          object: z.string(),
          record_id: z.string(),
          record_name: z.string().nullable().describe("The record's name (a deleted record's last name when known)"),
          action: z.string(),
          changes: z
            .record(z.string(), z.object({ from: z.unknown(), to: z.unknown() }))
            .optional()
            .describe('Field -> {from, to}; values written by users'),
          details: z.unknown().optional().describe('What else was recorded (linked record, note id, email subject, merge); data written by users'),
          user: z.object({ id: z.string(), name: z.string().nullable() }).nullable(),
          via: z.string().describe("Surface: 'rest', 'cli' or 'mcp:<tool name>'"),
        }),
      )
      .describe('Changes, oldest first'),
    next_cursor: z.string().describe('Pass as since on the next call (also when this page is empty) to get only later changes'),
    has_more: z.boolean().describe('true: more changes are waiting already; call again with since = next_cursor'),
    untrusted: untrustedOut,
  }),
  handler: async (ctx, a) => markUntrusted(await listChanges(ctx, { since: a.since, from: a.from, to: a.to, object: a.object, actions: a.actions, user: a.user, limit: a.limit })),
  render: (out) => {
    const head = `${out.data.length} change(s)${out.has_more ? ', more waiting' : ', up to date'}; next_cursor: ${out.next_cursor}`;
    if (!out.data.length) return head;
    const lines = out.data.map((e) =>
      JSON.stringify({
        at: e.at,
        object: e.object,
        id: e.record_id,
        name: e.record_name,
        action: e.action,
        ...(e.changes ? { changes: e.changes } : {}),
        ...(e.details !== undefined ? { details: e.details } : {}),
        by: e.user?.name ?? e.user?.id ?? null,
        via: e.via,
      }),
    );
    return `${head}\n${UNTRUSTED_NOTE}\n${untrusted('change feed', lines.join('\n'))}`;
  },
});
