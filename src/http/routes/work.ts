import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { listChanges } from '../../services/changes.js';
import { validationError } from '../../services/errors.js';
import { createThread, getInteraction, getThread, integrationStatus, listThreads, markThread, threadInput } from '../../services/inbox.js';
import { queryInteger } from '../../services/input-limits.js';
import { createNote, deleteNote, getNote, listNotes, newNote, notePatch, updateNote } from '../../services/notes.js';
import { parseWith } from '../../services/schema.js';
import { completeTask, createTask, deleteTask, getTask, listTasks, TASK_MODES, taskStats, updateTask } from '../../services/tasks.js';
import { getTimeline } from '../../services/timeline.js';
import { cursorOf, cursorParams } from '../cursor-param.js';
import * as S from '../openapi/schemas.js';

type Id = { Params: { id: string } };
const list = (v: string | undefined) =>
  v
    ? v
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean)
    : undefined;
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

const statsQuery = z.object({ assignee: z.string().optional() }).strict();
const activityQuery = z.object({ limit: queryInteger.optional(), ...cursorParams, actions: z.string().optional(), from: z.string().optional(), to: z.string().optional() }).strict();
const changesQuery = z
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
  .strict();
const threadUpdate = z.object({ read: z.boolean().optional(), unread: z.boolean().optional() }).strict();
/** A task is a record of the tasks object: its body is field values. */
const taskBody = z.record(z.string(), z.unknown()).describe('Task fields: title, description, status, priority, due_at, assignee, contact, company, opportunity, time_estimate');

const docs = {
  tasks: { schema: { summary: 'List tasks with mode presets and filters', querystring: taskQuery, response: { 200: S.RecordPage }, errors: [404] } },
  taskStats: { schema: { summary: 'Task statistics', querystring: statsQuery, response: { 200: S.TaskStats } } },
  task: { schema: { summary: 'Get a task with its associations', response: { 200: S.RecordGet }, errors: [404] } },
  createTask: { schema: { summary: 'Create a task', body: taskBody, response: { 201: S.RecordOne }, errors: [403, 404] } },
  updateTask: { schema: { summary: 'Update a task', body: taskBody, response: { 200: S.RecordOne }, errors: [403, 404] } },
  // Read by hand (below): this describes it.
  completeTask: {
    schema: {
      summary: 'Complete or reopen a task',
      body: z.object({ completed: z.boolean().optional().describe('true (default): complete; false: reopen') }),
      response: { 200: S.RecordOne },
      errors: [403, 404],
    },
  },
  deleteTask: { schema: { summary: 'Delete a task', response: { 200: S.Deleted }, errors: [403, 404] } },
  notes: { schema: { summary: 'List notes with visibility filtering', querystring: noteQuery, response: { 200: S.NotePage }, errors: [404] } },
  note: { schema: { summary: 'Get a note', response: { 200: S.NoteOne }, errors: [404] } },
  createNote: { schema: { summary: 'Create a note, on a record or standalone', body: newNote, response: { 201: S.NoteOne }, errors: [403, 404] } },
  updateNote: { schema: { summary: 'Update a note (its author)', body: notePatch, response: { 200: S.NoteOne }, errors: [403, 404] } },
  deleteNote: { schema: { summary: 'Delete a note (its author)', response: { 200: S.Deleted }, errors: [403, 404] } },
  activity: { schema: { summary: "A record's activity feed, newest first", querystring: activityQuery, response: { 200: S.Timeline }, errors: [404] } },
  changes: { schema: { summary: "The workspace's change feed, oldest first: poll with since=nextCursor", querystring: changesQuery, response: { 200: S.Changes }, errors: [404] } },
  threads: { schema: { summary: 'List email threads', querystring: threadQuery, response: { 200: S.ThreadPage }, errors: [404] } },
  createThread: { schema: { summary: 'Log an email thread with its messages', body: threadInput, response: { 201: S.ThreadWithMessages }, errors: [403, 404] } },
  thread: { schema: { summary: 'Get a thread with its messages', response: { 200: S.ThreadWithMessages }, errors: [404] } },
  markThread: { schema: { summary: 'Mark a thread read or unread', body: threadUpdate, response: { 200: S.ThreadOne }, errors: [404] } },
  interaction: { schema: { summary: 'Get an interaction (an email) with its thread', response: { 200: S.Interaction }, errors: [404] } },
  integrations: { schema: { summary: 'Integration credentials status', response: { 200: S.Integrations } } },
};

/** Tasks, notes, the activity feed, the inbox and integration status. */
export async function workRoutes(app: FastifyInstance) {
  app.get('/tasks', docs.tasks, async (req) => {
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
  app.get('/tasks/stats', docs.taskStats, async (req) => {
    const q = parseWith(statsQuery, req.query, 'stats query');
    return { data: await taskStats(req.ctx, { assignee: q.assignee }) };
  });
  app.get<Id>('/tasks/:id', docs.task, async (req) => ({ data: await getTask(req.ctx, req.params.id) }));
  app.post('/tasks', docs.createTask, async (req, reply) => reply.status(201).send({ data: await createTask(req.ctx, req.body) }));
  app.put<Id>('/tasks/:id', docs.updateTask, async (req) => ({ data: await updateTask(req.ctx, req.params.id, req.body) }));
  app.put<Id>('/tasks/:id/complete', docs.completeTask, async (req) => {
    const body = (req.body ?? {}) as { completed?: unknown };
    if (body.completed !== undefined && typeof body.completed !== 'boolean') throw validationError("'completed' is true (complete) or false (reopen)");
    return { data: await completeTask(req.ctx, req.params.id, body.completed !== false) };
  });
  app.delete<Id>('/tasks/:id', docs.deleteTask, async (req) => ({ data: await deleteTask(req.ctx, req.params.id) }));

  app.get('/notes', docs.notes, async (req) => {
    const q = parseWith(noteQuery, req.query, 'note query');
    return listNotes(req.ctx, { object: q.object, recordId: q.record_id, visibility: q.visibility, q: q.q, limit: q.limit, cursor: cursorOf(q) });
  });
  app.get<Id>('/notes/:id', docs.note, async (req) => ({ data: await getNote(req.ctx, req.params.id) }));
  app.post('/notes', docs.createNote, async (req, reply) => reply.status(201).send({ data: await createNote(req.ctx, req.body) }));
  app.put<Id>('/notes/:id', docs.updateNote, async (req) => ({ data: await updateNote(req.ctx, req.params.id, req.body) }));
  app.delete<Id>('/notes/:id', docs.deleteNote, async (req) => ({ data: await deleteNote(req.ctx, req.params.id) }));

  app.get<{ Params: { object: string; id: string } }>('/activity/:object/:id', docs.activity, async (req) => {
    const q = parseWith(activityQuery, req.query, 'activity query');
    return getTimeline(req.ctx, req.params.object, req.params.id, { limit: q.limit, cursor: cursorOf(q), actions: list(q.actions), from: q.from, to: q.to });
  });
  // The workspace's change feed, oldest first: poll with since=nextCursor.
  app.get('/changes', docs.changes, async (req) => {
    const q = parseWith(changesQuery, req.query, 'changes query');
    const r = await listChanges(req.ctx, {
      since: cursorOf({ cursor: q.since, nextCursor: q.nextCursor }, 'since'),
      from: q.from,
      to: q.to,
      object: q.object,
      actions: list(q.actions),
      user: q.user,
      limit: q.limit,
    });
    return { data: r.data, nextCursor: r.next_cursor, hasMore: r.has_more };
  });

  app.get('/inbox/threads', docs.threads, async (req) => {
    const q = parseWith(threadQuery, req.query, 'thread query');
    return listThreads(req.ctx, { unread: q.unread, contactId: q.contact_id, companyId: q.company_id, q: q.q, from: q.from, limit: q.limit, cursor: cursorOf(q) });
  });
  app.post('/inbox/threads', docs.createThread, async (req, reply) => reply.status(201).send({ data: await createThread(req.ctx, req.body) }));
  app.get<Id>('/inbox/threads/:id', docs.thread, async (req) => ({ data: await getThread(req.ctx, req.params.id) }));
  app.put<Id>('/inbox/threads/:id', docs.markThread, async (req) => {
    const b = parseWith(threadUpdate, req.body ?? {}, 'thread update');
    if ((b.read === undefined) === (b.unread === undefined)) throw validationError('Send {"read": true|false} or {"unread": true|false}');
    return { data: await markThread(req.ctx, req.params.id, b.unread ?? !b.read) };
  });
  app.get<Id>('/interactions/:id', docs.interaction, async (req) => ({ data: await getInteraction(req.ctx, req.params.id) }));
  app.get('/integrations/status', docs.integrations, async () => ({ data: integrationStatus() }));
}
