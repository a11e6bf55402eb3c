import { z } from 'zod';
import { defineTool } from '../src/mcp/tool.js';
import { limitArg } from '../src/mcp/arguments.js';
import { renderThread, threadOut } from '../src/mcp/inbox.js';
import { markUntrusted, UNTRUSTED_NOTE, untrustedOut } from '../src/mcp/untrusted.js';
import { listThreads } from '../src/services/inbox.js';

export default defineTool({
  name: 'crm_list_threads',
  title: 'List email threads',
  description:
    'Email threads of the inbox, latest message first: subject, start of the last message, unread flag, message count and the linked ' +
    'contact and company. Filter by unread, linked contact or company, words in subject/body/sender, or sender. Use crm_get_thread ' +
    'for the messages.',
  kind: 'read',
  toolset: 'inbox',
  inputSchema: z.object({
    unread: z.boolean().optional().describe('true: only unread threads; false: only read ones; omit for both'),
    contact_id: z.string().optional().describe('Only threads linked to this contact'),
    company_id: z.string().optional().describe('Only threads linked to this company'),
    q: z.string().optional().describe('Words in the subject, a message body or a sender (case-insensitive)'),
    from: z.string().optional().describe('Only threads with a message from this sender (part of the name or address)'),
    limit: limitArg,
    cursor: z.string().optional().describe('next_cursor of the previous page (same arguments otherwise)'),
  }),
  outputSchema: z.object({
    data: z.array(threadOut).describe('The threads of this page, latest message first'),
    total: z.number().describe('Threads matching the filters'),
    next_cursor: z.string().nullable().describe('Cursor for the next page; null on the last page'),
    untrusted: untrustedOut,
  }),
  handler: async (ctx, a) => {
    const r = await listThreads(ctx, { unread: a.unread, contactId: a.contact_id, companyId: a.company_id, q: a.q, from: a.from, limit: a.limit, cursor: a.cursor });
    return markUntrusted({ data: r.data, total: r.total, next_cursor: r.nextCursor });
  },
  render: (out) => {
    const head = `${out.data.length} of ${out.total} threads` + (out.next_cursor ? `; next_cursor: ${out.next_cursor}` : '; last page');
    return out.data.length ? [head, UNTRUSTED_NOTE, ...out.data.map(renderThread)].join('\n') : head;
  },
});
