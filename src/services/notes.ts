import { v7 as uuidv7 } from 'uuid';
import { z } from 'zod';
import { escapeLike } from '../db/dialect.js';
import { recordActivity } from './activity.js';
import { nowIso } from './clock.js';
import type { Ctx } from './context.js';
import { CrmError, validationError } from './errors.js';
import { recordExists } from './record-tables.js';
import { checkLimit, notFound } from './records.js';
import { parseWith, resolveObject } from './schema.js';
import { decodeTimeCursor, encodeTimeCursor } from './time-cursor.js';

/**
 * Notes: free text by a user, optionally on a record, private to its author or shared with the
 * workspace. Only the author, or an admin, may change or delete a note. Note bodies are user
 * content: surfaces hand them to agents as data, never as instructions.
 */

export interface Note {
  id: string;
  body: string;
  visibility: 'private' | 'workspace';
  object: string | null;
  record_id: string | null;
  author: { id: string; name: string | null };
  created_at: string;
  updated_at: string;
}

export const newNote = z
  .object({
    body: z.string().trim().min(1, 'body is required').max(100_000),
    visibility: z.enum(['private', 'workspace']).default('workspace'),
    object: z.string().optional(),
    record_id: z.string().optional(),
  })
  .strict();

export const notePatch = z
  .object({
    body: z.string().trim().min(1).max(100_000).optional(),
    visibility: z.enum(['private', 'workspace']).optional(),
  })
  .strict();

async function checkRecord(ctx: Ctx, object: string | undefined, recordId: string | undefined) {
  if (!object && !recordId) return;
  if (!object || !recordId) throw validationError('A note on a record needs both object and record_id');
  const obj = await resolveObject(ctx, object);
  if (!(await recordExists(ctx.db.kysely, obj, recordId))) throw notFound(obj, recordId);
}

function visible(ctx: Ctx) {
  return ctx.db.kysely
    .selectFrom('notes')
    .leftJoin('users', 'users.id', 'notes.author_id')
    .select(['notes.id', 'notes.body', 'notes.visibility', 'notes.object', 'notes.record_id', 'notes.author_id', 'users.name as author_name', 'notes.created_at', 'notes.updated_at'])
    .where('notes.workspace_id', '=', ctx.actor.workspaceId)
    .where((eb) => eb.or([eb('notes.visibility', '=', 'workspace'), eb('notes.author_id', '=', ctx.actor.userId)]));
}

type Row = {
  id: string;
  body: string;
  visibility: 'private' | 'workspace';
  object: string | null;
  record_id: string | null;
  author_id: string;
  author_name: string | null;
  created_at: string;
  updated_at: string;
};
const toNote = (r: Row): Note => ({
  id: r.id,
  body: r.body,
  visibility: r.visibility,
  object: r.object,
  record_id: r.record_id,
  author: { id: r.author_id, name: r.author_name },
  created_at: r.created_at,
  updated_at: r.updated_at,
});

export interface NoteQuery {
  object?: string | undefined;
  recordId?: string | undefined;
  /** 'mine' = written by me; 'private' = my private notes; 'workspace' = shared notes. */
  visibility?: 'private' | 'workspace' | 'mine' | undefined;
  q?: string | undefined;
  limit?: number | undefined;
  cursor?: string | undefined;
}

/** Newest first; keyset on (created_at, id). Private notes of other users are never listed. */
export async function listNotes(ctx: Ctx, q: NoteQuery = {}) {
  const limit = checkLimit(q.limit);
  let query = visible(ctx);
  if (q.object) query = query.where('notes.object', '=', (await resolveObject(ctx, q.object)).name);
  if (q.recordId) query = query.where('notes.record_id', '=', q.recordId);
  if (q.visibility === 'private') query = query.where('notes.visibility', '=', 'private');
  else if (q.visibility === 'workspace') query = query.where('notes.visibility', '=', 'workspace');
  else if (q.visibility === 'mine') query = query.where('notes.author_id', '=', ctx.actor.userId);
  else if (q.visibility !== undefined) throw validationError("visibility is 'private', 'workspace' or 'mine'");
  if (q.q) {
    const pattern = `%${escapeLike(q.q)}%`;
    query = query.where((eb) => ctx.db.adapter.ilike(eb.ref('notes.body'), pattern));
  }
  const count = await query
    .clearSelect()
    .select((eb) => eb.fn.countAll<number>().as('n'))
    .executeTakeFirstOrThrow();
  if (q.cursor) {
    const c = decodeTimeCursor(q.cursor);
    query = query.where((eb) => eb(eb.refTuple('notes.created_at', 'notes.id'), '<', eb.tuple(c.t, c.i)));
  }
  const rows = (await query
    .orderBy('notes.created_at', 'desc')
    .orderBy('notes.id', 'desc')
    .limit(limit + 1)
    .execute()) as Row[];
  let nextCursor: string | null = null;
  if (rows.length > limit) {
    rows.length = limit;
    const last = rows[limit - 1]!;
    nextCursor = encodeTimeCursor(last.created_at, last.id);
  }
  return { data: rows.map(toNote), total: Number(count.n), nextCursor };
}

async function fetchNote(ctx: Ctx, id: string): Promise<Note> {
  const r = (await visible(ctx).where('notes.id', '=', id).executeTakeFirst()) as Row | undefined;
  if (!r) throw new CrmError('RECORD_NOT_FOUND', `No note with id '${id}'`);
  return toNote(r);
}

export async function getNote(ctx: Ctx, id: string): Promise<Note> {
  return fetchNote(ctx, id);
}

export async function createNote(ctx: Ctx, input: unknown): Promise<Note> {
  const n = parseWith(newNote, input, 'note');
  await checkRecord(ctx, n.object, n.record_id);
  const object = n.object ? (await resolveObject(ctx, n.object)).name : null;
  const at = nowIso();
  // Listing is newest first on (created_at, id): a monotonic UUIDv7 (the package's own state, unlike
  // newId's pooled random bytes) keeps notes written in the same millisecond in order.
  const id = uuidv7();
  await ctx.db.kysely.transaction().execute(async (trx) => {
    await trx
      .insertInto('notes')
      .values({ id, workspace_id: ctx.actor.workspaceId, author_id: ctx.actor.userId, body: n.body, visibility: n.visibility, object, record_id: n.record_id ?? null, created_at: at, updated_at: at })
      .execute();
    // A private note leaves no trace in the shared timeline.
    if (object && n.record_id && n.visibility === 'workspace') await recordActivity(trx, ctx, [{ object, recordId: n.record_id, action: 'note_added', payload: { note_id: id } }]);
  });
  return fetchNote(ctx, id);
}

async function ownedNote(ctx: Ctx, id: string): Promise<Note> {
  const note = await fetchNote(ctx, id);
  if (note.author.id !== ctx.actor.userId && ctx.actor.role !== 'admin') throw new CrmError('PERMISSION_DENIED', 'Only the author of a note, or an admin, may change or delete it');
  return note;
}

export async function updateNote(ctx: Ctx, id: string, input: unknown): Promise<Note> {
  const patch = parseWith(notePatch, input, 'note update');
  const note = await ownedNote(ctx, id);
  await ctx.db.kysely.transaction().execute(async (trx) => {
    await trx
      .updateTable('notes')
      .set({ ...patch, updated_at: nowIso() })
      .where('id', '=', id)
      .where('workspace_id', '=', ctx.actor.workspaceId)
      .execute();
    // A private note that becomes shared enters the timeline now, as added (it left no entry before).
    if (note.object && note.record_id && (patch.visibility ?? note.visibility) === 'workspace') {
      const action = note.visibility === 'private' ? 'note_added' : 'note_updated';
      await recordActivity(trx, ctx, [{ object: note.object, recordId: note.record_id, action, payload: { note_id: id } }]);
    }
  });
  return fetchNote(ctx, id);
}

export async function deleteNote(ctx: Ctx, id: string) {
  const note = await ownedNote(ctx, id);
  await ctx.db.kysely.transaction().execute(async (trx) => {
    await trx.deleteFrom('notes').where('id', '=', id).where('workspace_id', '=', ctx.actor.workspaceId).execute();
    if (note.object && note.record_id && note.visibility === 'workspace')
      await recordActivity(trx, ctx, [{ object: note.object, recordId: note.record_id, action: 'note_deleted', payload: { note_id: id } }]);
  });
  return { id, deleted: true as const };
}
