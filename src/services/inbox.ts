import type { Kysely } from 'kysely';
import { v7 as uuidv7 } from 'uuid';
import { z } from 'zod';
import { escapeLike } from '../db/dialect.js';
import type { Tables } from '../db/tables.js';
import { type ActivityEntry, recordActivity } from './activity.js';
import { nowIso } from './clock.js';
import type { Ctx } from './context.js';
import { namesFor } from './display-names.js';
import { CrmError, validationError } from './errors.js';
import { recordExists } from './record-tables.js';
import { checkLimit } from './records.js';
import { getSchema, parseWith, type WorkspaceSchema } from './schema.js';
import { decodeTimeCursor, encodeTimeCursor } from './time-cursor.js';

/**
 * Email threads and their messages, linked to a contact and/or a company. Message bodies are
 * content written by outside parties: surfaces pass them to agents as untrusted data.
 * Connecting mail providers is out of scope; threads arrive through the API (logging an email,
 * as a CRM user does by hand), imports and the demo seed.
 */

export interface ThreadQuery {
  unread?: boolean | undefined;
  contactId?: string | undefined;
  companyId?: string | undefined;
  /** Matches the subject, the senders and the message bodies (case-insensitive). */
  q?: string | undefined;
  from?: string | undefined;
  limit?: number | undefined;
  cursor?: string | undefined;
}

type ThreadRow = Tables['threads'];

async function threadView(ctx: Ctx, rows: ThreadRow[]) {
  const schema = await getSchema(ctx);
  const contacts = await namesFor(ctx, schema, 'contacts', [...new Set(rows.map((r) => r.contact_id).filter((x): x is string => !!x))]);
  const companies = await namesFor(ctx, schema, 'companies', [...new Set(rows.map((r) => r.company_id).filter((x): x is string => !!x))]);
  return rows.map((r) => ({
    id: r.id,
    subject: r.subject,
    snippet: r.snippet,
    unread: r.unread === 1,
    message_count: r.message_count,
    last_message_at: r.last_message_at,
    contact: r.contact_id ? { id: r.contact_id, name: contacts.get(r.contact_id) ?? null } : null,
    company: r.company_id ? { id: r.company_id, name: companies.get(r.company_id) ?? null } : null,
    created_at: r.created_at,
  }));
}

export async function listThreads(ctx: Ctx, q: ThreadQuery = {}) {
  const limit = checkLimit(q.limit);
  const a = ctx.db.adapter;
  let base = ctx.db.kysely.selectFrom('threads').where('threads.workspace_id', '=', ctx.actor.workspaceId);
  if (q.unread !== undefined) base = base.where('threads.unread', '=', q.unread ? 1 : 0);
  if (q.contactId) base = base.where('threads.contact_id', '=', q.contactId);
  if (q.companyId) base = base.where('threads.company_id', '=', q.companyId);
  if (q.q) {
    const p = `%${escapeLike(q.q)}%`;
    base = base.where((eb) =>
      eb.or([
        a.ilike(eb.ref('threads.subject'), p),
        eb.exists(
          eb
            .selectFrom('messages')
            .select('messages.id')
            .whereRef('messages.thread_id', '=', 'threads.id')
            .where((m) => m.or([a.ilike(m.ref('messages.body'), p), a.ilike(m.ref('messages.from_email'), p), a.ilike(m.ref('messages.from_name'), p)])),
        ),
      ]),
    );
  }
  if (q.from) {
    const p = `%${escapeLike(q.from)}%`;
    base = base.where((eb) =>
      eb.exists(
        eb
          .selectFrom('messages')
          .select('messages.id')
          .whereRef('messages.thread_id', '=', 'threads.id')
          .where((m) => m.or([a.ilike(m.ref('messages.from_email'), p), a.ilike(m.ref('messages.from_name'), p)])),
      ),
    );
  }
  const total = Number((await base.select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow()).n);
  let page = base.selectAll('threads');
  if (q.cursor) {
    const c = decodeTimeCursor(q.cursor);
    page = page.where((eb) => eb(eb.refTuple('threads.last_message_at', 'threads.id'), '<', eb.tuple(c.t, c.i)));
  }
  const rows = await page
    .orderBy('threads.last_message_at', 'desc')
    .orderBy('threads.id', 'desc')
    .limit(limit + 1)
    .execute();
  let nextCursor: string | null = null;
  if (rows.length > limit) {
    rows.length = limit;
    const last = rows[limit - 1]!;
    nextCursor = encodeTimeCursor(last.last_message_at, last.id);
  }
  return { data: await threadView(ctx, rows), total, nextCursor };
}

function messageView(m: Tables['messages']) {
  return {
    id: m.id,
    thread_id: m.thread_id,
    direction: m.direction,
    from: { email: m.from_email, name: m.from_name },
    to: JSON.parse(m.to_emails) as string[],
    subject: m.subject,
    body: m.body,
    sent_at: m.sent_at,
  };
}

async function threadRow(ctx: Ctx, id: string): Promise<ThreadRow> {
  const t = await ctx.db.kysely.selectFrom('threads').selectAll().where('workspace_id', '=', ctx.actor.workspaceId).where('id', '=', id).executeTakeFirst();
  if (!t) throw new CrmError('RECORD_NOT_FOUND', `No thread with id '${id}'`);
  return t;
}

export async function getThread(ctx: Ctx, id: string) {
  const t = await threadRow(ctx, id);
  const messages = await ctx.db.kysely.selectFrom('messages').selectAll().where('thread_id', '=', id).orderBy('sent_at').orderBy('id').execute();
  const [view] = await threadView(ctx, [t]);
  return { ...view!, messages: messages.map(messageView) };
}

export async function markThread(ctx: Ctx, id: string, unread: boolean) {
  await threadRow(ctx, id);
  await ctx.db.kysely
    .updateTable('threads')
    .set({ unread: unread ? 1 : 0 })
    .where('workspace_id', '=', ctx.actor.workspaceId)
    .where('id', '=', id)
    .execute();
  const [view] = await threadView(ctx, [await threadRow(ctx, id)]);
  return view!;
}

/** One message (an interaction) with the thread it belongs to. */
export async function getInteraction(ctx: Ctx, id: string) {
  const m = await ctx.db.kysely.selectFrom('messages').selectAll().where('workspace_id', '=', ctx.actor.workspaceId).where('id', '=', id).executeTakeFirst();
  if (!m) throw new CrmError('RECORD_NOT_FOUND', `No interaction with id '${id}'`);
  const [thread] = await threadView(ctx, [await threadRow(ctx, m.thread_id)]);
  return { ...messageView(m), type: 'email', thread: thread! };
}

const messageInput = z
  .object({
    direction: z.enum(['inbound', 'outbound']),
    from_email: z.string().email(),
    from_name: z.string().max(200).optional(),
    to: z.array(z.string().email()).min(1).max(100),
    body: z.string().max(1_000_000),
    sent_at: z.string().datetime({ offset: true }).optional(),
  })
  .strict();

export const threadInput = z
  .object({
    subject: z.string().trim().min(1).max(1000),
    contact_id: z.string().optional(),
    company_id: z.string().optional(),
    messages: z.array(messageInput).min(1).max(500),
  })
  .strict();

async function checkLinks(schema: WorkspaceSchema, trx: Kysely<Tables>, contactId?: string, companyId?: string) {
  for (const [object, id] of [
    ['contacts', contactId],
    ['companies', companyId],
  ] as const) {
    if (!id) continue;
    const t = schema.objects.get(object)!;
    if (!(await recordExists(trx, t, id))) throw validationError(`No ${object} record with id '${id}' to link the thread to`);
  }
}

function timelineFor(thread: { id: string; subject: string; contact_id: string | null; company_id: string | null }, m: { id: string; direction: string; sent_at: string }): ActivityEntry[] {
  const action = m.direction === 'inbound' ? 'email_received' : 'email_sent';
  const payload = { thread_id: thread.id, message_id: m.id, subject: thread.subject, sent_at: m.sent_at };
  return [
    ...(thread.contact_id ? [{ object: 'contacts', recordId: thread.contact_id, action, payload }] : []),
    ...(thread.company_id ? [{ object: 'companies', recordId: thread.company_id, action, payload }] : []),
  ];
}

/** Log an email thread (as a CRM user logs an email by hand); its messages reach the linked records' timelines. */
export async function createThread(ctx: Ctx, input: unknown) {
  const t = parseWith(threadInput, input, 'thread');
  // Read outside the transaction: getSchema queries through ctx.db, which waits for the
  // transaction's connection (SQLite has one), so calling it inside would deadlock.
  const schema = await getSchema(ctx);
  // Listings order by (time, id): monotonic UUIDv7 ids keep messages stamped in the same millisecond
  // (no sent_at given) in the order they were sent in, and threads logged together newest first.
  const id = uuidv7();
  const msgs = t.messages.map((m) => ({ ...m, id: uuidv7(), sent_at: m.sent_at ? new Date(m.sent_at).toISOString() : nowIso() })).sort((a, b) => a.sent_at.localeCompare(b.sent_at));
  const last = msgs[msgs.length - 1]!;
  const row = {
    id,
    workspace_id: ctx.actor.workspaceId,
    subject: t.subject,
    snippet: last.body.replace(/\s+/g, ' ').trim().slice(0, 160),
    contact_id: t.contact_id ?? null,
    company_id: t.company_id ?? null,
    unread: last.direction === 'inbound' ? 1 : 0,
    message_count: msgs.length,
    last_message_at: last.sent_at,
    created_at: nowIso(),
  };
  await ctx.db.kysely.transaction().execute(async (trx) => {
    await checkLinks(schema, trx, t.contact_id, t.company_id);
    await trx.insertInto('threads').values(row).execute();
    await trx
      .insertInto('messages')
      .values(
        msgs.map((m) => ({
          id: m.id,
          workspace_id: ctx.actor.workspaceId,
          thread_id: id,
          direction: m.direction,
          from_email: m.from_email.toLowerCase(),
          from_name: m.from_name ?? null,
          to_emails: JSON.stringify(m.to.map((x) => x.toLowerCase())),
          subject: t.subject,
          body: m.body,
          sent_at: m.sent_at,
        })),
      )
      .execute();
    await recordActivity(
      trx,
      ctx,
      msgs.flatMap((m) => timelineFor(row, m)),
    );
  });
  return getThread(ctx, id);
}

/** Which integrations are configured: honestly, none can be connected in this version. */
export function integrationStatus() {
  return {
    email: {
      configured: false,
      provider: null,
      supported_providers: [],
      note: 'Mail providers cannot be connected in this version. Threads are logged through POST /api/v1/inbox/threads, imports, or the demo data.',
    },
    calendar: { configured: false, provider: null, supported_providers: [] },
  };
}
