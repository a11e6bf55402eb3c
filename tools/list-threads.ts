import { z } from 'zod';
import { limitArg } from '../src/mcp/arguments.js';
import { renderThread, threadOut } from '../src/mcp/inbox.js';
import { defineTool } from '../src/mcp/tool.js';
import { markUntrusted, UNTRUSTED_NOTE, untrustedOut } from '../src/mcp/untrusted.js';
import { listThreads } from '../src/services/inbox.js';

export default defineTool({
  name: 'crm_list_threads',
  title: 'List email threads',
  description: 'Email threads, latest first: subject, start of the last message, unread flag, count, linked contact and company. ' + 'crm_get_thread has the messages.',
  kind: 'read',
  toolset: 'inbox',
  inputSchema: z.object({
    unread: z.boolean().optional().describe('Only unread (true) or read (false)'),
    contact_id: z.string().optional().describe('Only threads linked to this contact'),
    company_id: z.string().optional().describe('Only threads linked to this company'),
    q: z.string().optional().describe('Words in subject, body or sender'),
    from: z.string().optional().describe('Sender name or address (part)'),
    limit: limitArg,
    cursor: z.string().optional().describe('next_cursor of the previous page'),
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
