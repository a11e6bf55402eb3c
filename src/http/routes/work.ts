import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { parseWith } from '../../services/schema.js';
import { queryInteger } from '../../services/input-limits.js';
import { completeTask, createTask, deleteTask, getTask, listTasks, taskStats, updateTask, TASK_MODES } from '../../services/tasks.js';
import { createNote, deleteNote, getNote, listNotes, updateNote } from '../../services/notes.js';
import { getTimeline } from '../../services/timeline.js';
import { listChanges } from '../../services/changes.js';
import { createThread, getInteraction, getThread, integrationStatus, listThreads, markThread } from '../../services/inbox.js';
import { validationError } from '../../services/errors.js';
import { cursorOf, cursorParams } from '../cursor-param.js';

type Id = { Params: { id: string } };
const list = (v: string | undefined) => (v ? v.split(',').map((s) => s.trim()).filter(Boolean) : undefined);
const bool = z.enum(['true', 'false']).transform((v) => v === 'true');

const taskQuery = z
  .object({
    mode: z.enum(TASK_MODES).optional(),
    assignee: z.string().optional(),
    status: z.string().optional(),
    priority: z.string().optional(),
    due_from: z.string().optional(),
    due_to: z.string().optional(),
    object: z.string().optional(),
    record_id: z.string().optional(),
    q: z.string().optional(),
    tz: z.string().optional(),
    limit: queryInteger.optional(),
    ...cursorParams,
  })
  .strict();

const noteQuery = z
  .object({
    object: z.string().optional(),
    record_id: z.string().optional(),
    visibility: z.enum(['private', 'workspace', 'mine']).optional(),
    q: z.string().optional(),
    limit: queryInteger.optional(),
    ...cursorParams,
  })
  .strict();

const threadQuery = z
  .object({
    unread: bool.optional(),
    contact_id: z.string().optional(),
    company_id: z.string().optional(),
    q: z.string().optional(),
    from: z.string().optional(),
    limit: queryInteger.optional(),
    ...cursorParams,
  })
  .strict();

/** Tasks, notes, the activity feed, the inbox and integration status. */
export async function workRoutes(app: FastifyInstance) {
  app.get('/tasks', async (req) => {
    const q = parseWith(taskQuery, req.query, 'task query');
    return listTasks(req.ctx, {
      mode: q.mode,
      assignee: q.assignee,
      status: list(q.status),
      priority: list(q.priority),
      dueFrom: q.due_from,
      dueTo: q.due_to,
      object: q.object,
      recordId: q.record_id,
      q: q.q,
      timeZone: q.tz,
      limit: q.limit,
      cursor: cursorOf(q),
    });
  });
  app.get('/tasks/stats', async (req) => {
    const q = parseWith(z.object({ assignee: z.string().optional() }).strict(), req.query, 'stats query');
    return { data: await taskStats(req.ctx, { assignee: q.assignee }) };
  });
  app.get<Id>('/tasks/:id', async (req) => ({ data: await getTask(req.ctx, req.params.id) }));
  app.post('/tasks', async (req, reply) => reply.status(201).send({ data: await createTask(req.ctx, req.body) }));
  app.put<Id>('/tasks/:id', async (req) => ({ data: await updateTask(req.ctx, req.params.id, req.body) }));
  app.put<Id>('/tasks/:id/complete', async (req) => {
    const body = (req.body ?? {}) as { completed?: unknown };
    if (body.completed !== undefined && typeof body.completed !== 'boolean') throw validationError("'completed' is true (complete) or false (reopen)");
    return { data: await completeTask(req.ctx, req.params.id, body.completed !== false) };
  });
  app.delete<Id>('/tasks/:id', async (req) => ({ data: await deleteTask(req.ctx, req.params.id) }));

  app.get('/notes', async (req) => {
    const q = parseWith(noteQuery, req.query, 'note query');
    return listNotes(req.ctx, { object: q.object, recordId: q.record_id, visibility: q.visibility, q: q.q, limit: q.limit, cursor: cursorOf(q) });
  });
  app.get<Id>('/notes/:id', async (req) => ({ data: await getNote(req.ctx, req.params.id) }));
  app.post('/notes', async (req, reply) => reply.status(201).send({ data: await createNote(req.ctx, req.body) }));
  app.put<Id>('/notes/:id', async (req) => ({ data: await updateNote(req.ctx, req.params.id, req.body) }));
  app.delete<Id>('/notes/:id', async (req) => ({ data: await deleteNote(req.ctx, req.params.id) }));

  app.get<{ Params: { object: string; id: string } }>('/activity/:object/:id', async (req) => {
    const q = parseWith(
      z.object({ limit: queryInteger.optional(), ...cursorParams, actions: z.string().optional(), from: z.string().optional(), to: z.string().optional() }).strict(),
      req.query,
      'activity query',
    );
    return getTimeline(req.ctx, req.params.object, req.params.id, { limit: q.limit, cursor: cursorOf(q), actions: list(q.actions), from: q.from, to: q.to });
  });
  // The workspace's change feed, oldest first: poll with since=nextCursor.
  app.get('/changes', async (req) => {
    const q = parseWith(
      z
        .object({
          since: z.string().optional(),
          nextCursor: z.string().optional(),
          from: z.string().optional(),
          to: z.string().optional(),
          object: z.string().optional(),
          actions: z.string().optional(),
          user: z.string().optional(),
          limit: queryInteger.optional(),
        })
        .strict(),
      req.query,
      'changes query',
    );
    const r = await listChanges(req.ctx, { since: cursorOf({ cursor: q.since, nextCursor: q.nextCursor }, 'since'), from: q.from, to: q.to, object: q.object, actions: list(q.actions), user: q.user, limit: q.limit });
    return { data: r.data, nextCursor: r.next_cursor, hasMore: r.has_more };
  });

  app.get('/inbox/threads', async (req) => {
    const q = parseWith(threadQuery, req.query, 'thread query');
    return listThreads(req.ctx, { unread: q.unread, contactId: q.contact_id, companyId: q.company_id, q: q.q, from: q.from, limit: q.limit, cursor: cursorOf(q) });
  });
  app.post('/inbox/threads', async (req, reply) => reply.status(201).send({ data: await createThread(req.ctx, req.body) }));
  app.get<Id>('/inbox/threads/:id', async (req) => ({ data: await getThread(req.ctx, req.params.id) }));
  app.put<Id>('/inbox/threads/:id', async (req) => {
    const b = parseWith(z.object({ read: z.boolean().optional(), unread: z.boolean().optional() }).strict(), req.body ?? {}, 'thread update');
    if ((b.read === undefined) === (b.unread === undefined)) throw validationError('Send {"read": true|false} or {"unread": true|false}');
    return { data: await markThread(req.ctx, req.params.id, b.unread ?? !b.read) };
  });
  app.get<Id>('/interactions/:id', async (req) => ({ data: await getInteraction(req.ctx, req.params.id) }));
  app.get('/integrations/status', async () => ({ data: integrationStatus() }));
}
