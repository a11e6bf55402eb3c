import { z } from 'zod';
import { messageOut, renderMessage, renderThread, threadOut } from '../src/mcp/inbox.js';
import { defineTool } from '../src/mcp/tool.js';
import { markUntrusted, UNTRUSTED_NOTE, untrustedOut } from '../src/mcp/untrusted.js';
import { getThread } from '../src/services/inbox.js';

export default defineTool({
  name: 'crm_get_thread',
  title: 'Read an email thread',
  description: 'One email thread with all its messages, oldest first: sender, recipients, time and body. Does not change its unread flag.',
  kind: 'read',
  toolset: 'inbox',
  inputSchema: z.object({ id: z.string().min(1).describe('Thread id, as returned by crm_list_threads') }),
  outputSchema: z.object({ thread: threadOut.extend({ messages: z.array(messageOut).describe('Messages, oldest first') }), untrusted: untrustedOut }),
  handler: async (ctx, a) => markUntrusted({ thread: await getThread(ctx, a.id) }),
  render: (out) => {
    const t = out.thread;
    return [`Thread ${t.id}, ${t.messages.length} messages`, UNTRUSTED_NOTE, renderThread(t), ...t.messages.map((m, i) => renderMessage(m, i, t.messages.length))].join('\n');
  },
});
