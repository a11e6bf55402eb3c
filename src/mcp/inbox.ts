import { z } from 'zod';
import { UNTRUSTED_FIELD, untrusted } from './untrusted.js';

/** Threads and messages as the inbox tools return them. Subjects, snippets, sender names and bodies come from outside. */

const link = z.object({ id: z.string(), name: z.string().nullable() }).nullable();

export const threadOut = z.object({
  id: z.string(),
  subject: z.string().describe(`Subject line. ${UNTRUSTED_FIELD}`),
  snippet: z.string().nullable().describe(`Start of the last message. ${UNTRUSTED_FIELD}`),
  unread: z.boolean(),
  message_count: z.number(),
  last_message_at: z.string(),
  contact: link.describe('The contact the thread is linked to'),
  company: link.describe('The company the thread is linked to'),
  created_at: z.string(),
});

export const messageOut = z.object({
  id: z.string(),
  thread_id: z.string(),
  direction: z.enum(['inbound', 'outbound']).describe('inbound: received from outside; outbound: sent by the workspace'),
  from: z.object({ email: z.string(), name: z.string().nullable().describe(UNTRUSTED_FIELD) }),
  to: z.array(z.string()),
  subject: z.string().describe(UNTRUSTED_FIELD),
  body: z.string().describe(`The message text. ${UNTRUSTED_FIELD}`),
  sent_at: z.string(),
});

type Thread = z.infer<typeof threadOut>;
type Message = z.infer<typeof messageOut>;

/** The thread's own facts (ours: ids, counts, dates, linked records) outside the block; what its senders wrote inside. */
export function renderThread(t: Thread): string {
  const meta = {
    id: t.id,
    unread: t.unread,
    messages: t.message_count,
    last_message_at: t.last_message_at,
    ...(t.contact ? { contact_id: t.contact.id } : {}),
    ...(t.company ? { company_id: t.company.id } : {}),
  };
  // Linked records' names were typed by people too: inside the block.
  const names = [t.contact?.name ? `Contact: ${t.contact.name}` : '', t.company?.name ? `Company: ${t.company.name}` : ''].filter(Boolean);
  const text = [...names, `Subject: ${t.subject}`, ...(t.snippet ? [`Last message starts: ${t.snippet}`] : [])].join('\n');
  return `${JSON.stringify(meta)}\n${untrusted(`email thread ${t.id}`, text)}`;
}

export function renderMessage(m: Message, i: number, n: number): string {
  const from = m.from.name ? `${m.from.name} <${m.from.email}>` : m.from.email;
  const head = `Message ${i + 1}/${n} ${JSON.stringify({ id: m.id, direction: m.direction, sent_at: m.sent_at })}`;
  return `${head}\n${untrusted(`email message ${m.id}`, `From: ${from}\nTo: ${m.to.join(', ')}\nSubject: ${m.subject}\n\n${m.body}`)}`;
}
