import type { Expression, ExpressionBuilder, Kysely, SqlBool } from 'kysely';
import { readPayload } from './activity.js';
import type { Ctx } from './context.js';
import { namesFor } from './display-names.js';
import { validationError } from './errors.js';
import { parseDate, parseDateTime } from './field-types.js';
import { checkLimit } from './records.js';
import { getSchema, type ObjectDef, resolveObject, type WorkspaceSchema } from './schema.js';

/**
 * The workspace-wide change feed ("what changed since I last looked") and the query pieces it shares
 * with a record's timeline: the action names and the time bounds.
 */

/** Every action the services write to the activity table (services/records, notes, inbox, duplicates, bulk). */
export const ACTIVITY_ACTIONS = [
  'created',
  'updated',
  'deleted',
  'associated',
  'dissociated',
  'pipeline_moved',
  'merged',
  'unmerged',
  'note_added',
  'note_updated',
  'note_deleted',
  'email_received',
  'email_sent',
  'related_created',
  'related_deleted',
  'related_linked',
  'related_unlinked',
  'related_status_changed',
  // Schema changes (services/schema.ts), with record_id '': they concern the object, not a record.
  'object_created',
  'field_created',
] as const;

/**
 * Echoes on linked records (a task created shows on its contact as related_created): the feed leaves
 * them out unless asked for, since the change itself is already in it under the record that changed.
 */
const ECHOES = new Set<string>(ACTIVITY_ACTIONS.filter((a) => a.startsWith('related_')));

/** Unknown action names are refused rather than matching nothing, so a typo does not read as "no history". */
export function checkActions(actions: readonly string[] | undefined): string[] | undefined {
  if (!actions?.length) return undefined;
  const bad = actions.filter((a) => !(ACTIVITY_ACTIONS as readonly string[]).includes(a));
  if (bad.length)
    throw validationError(`Unknown action${bad.length > 1 ? 's' : ''} ${bad.map((b) => `'${b}'`).join(', ')}. Valid actions: ${ACTIVITY_ACTIONS.join(', ')}`, {
      validActions: [...ACTIVITY_ACTIONS],
    });
  return [...new Set(actions)];
}

/**
 * `from` and `to` as UTC ISO instants comparable with activity.created_at, checked by the field
 * types' own date and date-time parsers: a bare date is the start of that day in UTC for `from`,
 * the whole day for `to` (as tasks' due_to reads it). Returns the inclusive lower and exclusive
 * upper bound.
 */
export function timeBounds(from: string | undefined, to: string | undefined): { gte?: string; lt?: string } {
  const parse = (v: string, name: string, endOfDay: boolean): string => {
    try {
      if (/^\d{4}-\d{2}-\d{2}$/.test(v.trim())) return new Date(Date.parse(`${parseDate(name, v)}T00:00:00Z`) + (endOfDay ? 86_400_000 : 0)).toISOString();
      // A given instant is included: the exclusive bound is the next millisecond (stored times have ms precision).
      return new Date(Date.parse(parseDateTime(name, v)) + (endOfDay ? 1 : 0)).toISOString();
    } catch {
      // One message for both forms the argument takes (each parser names only its own).
      throw validationError(`${name} must be an ISO date (2026-01-31) or date-time (2026-01-31T09:00:00Z), got '${v}'`);
    }
  };
  const out: { gte?: string; lt?: string } = {};
  if (from) out.gte = parse(from, 'from', false);
  if (to) out.lt = parse(to, 'to', true);
  if (out.gte && out.lt && out.gte >= out.lt) throw validationError(`from (${from}) must be before to (${to})`);
  return out;
}

/** Objects with an owner field relating to users (opportunities, contacts, companies...). */
export const ownedObjects = (schema: WorkspaceSchema): ObjectDef[] => [...schema.objects.values()].filter((o) => o.byName.get('owner')?.target === 'users');

/**
 * Rows (activity entries, notes) about a record owned by `userId`: the row's object and record id
 * columns against each owned object's records, one subquery per object.
 */
export function ownedBy(ctx: Ctx, eb: ExpressionBuilder<any, any>, owned: ObjectDef[], userId: string, objectCol: string, recordCol: string): Expression<SqlBool> {
  const k = ctx.db.kysely as unknown as Kysely<any>;
  return eb.or(owned.map((o) => eb.and([eb(objectCol, '=', o.name), eb(recordCol, 'in', k.selectFrom(o.table).select('id').where(o.byName.get('owner')!.column, '=', userId))])));
}

export interface ChangeQuery {
  /** next_cursor of the previous call: only entries after it. */
  since?: string | undefined;
  from?: string | undefined;
  to?: string | undefined;
  object?: string | undefined;
  actions?: string[] | undefined;
  /** A user id, or 'me'. */
  user?: string | undefined;
  /** Only records whose `owner` field is this user id (or 'me'): objects without an owner field drop out. */
  owner?: string | undefined;
  limit?: number | undefined;
}

export interface ChangeEntry {
  id: number;
  at: string;
  object: string;
  record_id: string;
  /** The record's name now; for a deleted record, the name it had (when the entry kept it). */
  record_name: string | null;
  action: string;
  /** Field -> {from, to}: updates, and pipeline moves (on the pipeline's field). */
  changes?: Record<string, { from: unknown; to: unknown }>;
  /** What else the entry recorded (the linked record, the note, the email subject, the merge). */
  details?: unknown;
  user: { id: string; name: string | null } | null;
  via: string;
}

const encodeCursor = (id: number) => Buffer.from(`a${id}`).toString('base64url');
function decodeCursor(raw: string): number {
  const s = Buffer.from(raw, 'base64url').toString();
  const id = /^a(\d{1,15})$/.exec(s) ? Number(s.slice(1)) : NaN;
  if (!Number.isSafeInteger(id)) throw validationError('Invalid cursor: pass next_cursor from the previous answer back unchanged');
  return id;
}

export const MAX_CHANGES = 200;

/**
 * Activity of the whole workspace, oldest first after the cursor. Polling with next_cursor sees
 * every entry exactly once: entry ids grow in commit order, because SQLite has one writer at a time
 * and PostgreSQL's appenders to one workspace's feed take turns until they commit (adapter.feedOrder),
 * and ids are never reused (AUTOINCREMENT; a sequence).
 */
export async function listChanges(ctx: Ctx, q: ChangeQuery = {}): Promise<{ data: ChangeEntry[]; next_cursor: string; has_more: boolean }> {
  const limit = checkLimit(q.limit, MAX_CHANGES, 50);
  const after = q.since ? decodeCursor(q.since) : 0;
  const actions = checkActions(q.actions);
  const { gte, lt } = timeBounds(q.from, q.to);
  const schema = await getSchema(ctx);
  const object = q.object ? (await resolveObject(ctx, q.object)).name : undefined;
  const userOf = async (v: string | undefined, what: string) => {
    if (!v) return undefined;
    const id = v === 'me' ? ctx.actor.userId : v;
    const known = await ctx.db.kysely.selectFrom('users').select('id').where('workspace_id', '=', ctx.actor.workspaceId).where('id', '=', id).executeTakeFirst();
    if (!known) throw validationError(`${what}: no user '${v}' in this workspace; pass a user id (crm_whoami, GET /users) or 'me'`);
    return id;
  };
  const userId = await userOf(q.user, 'user');
  const ownerId = await userOf(q.owner, 'owner');

  let sel = ctx.db.kysely
    .selectFrom('activity')
    .leftJoin('users', 'users.id', 'activity.user_id')
    .select(['activity.id', 'activity.object', 'activity.record_id', 'activity.action', 'activity.payload', 'activity.user_id', 'users.name as user_name', 'activity.via', 'activity.created_at'])
    .where('activity.workspace_id', '=', ctx.actor.workspaceId)
    .where('activity.id', '>', after);
  if (object) sel = sel.where('activity.object', '=', object);
  if (actions) sel = sel.where('activity.action', 'in', actions);
  else sel = sel.where('activity.action', 'not in', [...ECHOES]);
  if (userId) sel = sel.where('activity.user_id', '=', userId);
  if (ownerId) {
    const owned = ownedObjects(schema).filter((o) => !object || o.name === object);
    if (!owned.length) throw validationError(`owner: ${object ?? 'no object'} has no owner field`);
    sel = sel.where((eb) => ownedBy(ctx, eb, owned, ownerId, 'activity.object', 'activity.record_id'));
  }
  if (gte) sel = sel.where('activity.created_at', '>=', gte);
  if (lt) sel = sel.where('activity.created_at', '<', lt);
  const rows = await sel
    .orderBy('activity.id', 'asc')
    .limit(limit + 1)
    .execute();
  const has_more = rows.length > limit;
  if (has_more) rows.length = limit;

  // Names: one query per object on the page, not one per entry.
  const idsByObject = new Map<string, Set<string>>();
  for (const r of rows) {
    let s = idsByObject.get(r.object);
    if (!s) idsByObject.set(r.object, (s = new Set()));
    s.add(r.record_id);
  }
  const names = new Map<string, Map<string, string>>();
  for (const [obj, ids] of idsByObject) {
    ids.delete('');
    const found = await namesFor(ctx, schema, obj, [...ids]);
    // Deleted records: the name their 'deleted' entry kept, so their earlier entries are named too.
    const gone = [...ids].filter((id) => !found.has(id));
    for (let i = 0; i < gone.length; i += 500) {
      const kept = await ctx.db.kysely
        .selectFrom('activity')
        .select(['record_id', 'payload'])
        .where('workspace_id', '=', ctx.actor.workspaceId)
        .where('object', '=', obj)
        .where('action', '=', 'deleted')
        .where('record_id', 'in', gone.slice(i, i + 500))
        .execute();
      for (const k of kept) {
        const name = k.payload ? (JSON.parse(k.payload) as { name?: unknown }).name : undefined;
        if (typeof name === 'string') found.set(k.record_id, name);
      }
    }
    names.set(obj, found);
  }

  const data = rows.map((r): ChangeEntry => {
    const payload = readPayload(schema.objects.get(r.object), r.payload) as Record<string, unknown> | null;
    const e: ChangeEntry = {
      id: r.id,
      at: r.created_at,
      object: r.object,
      record_id: r.record_id,
      record_name: names.get(r.object)?.get(r.record_id) ?? null,
      action: r.action,
      user: r.user_id ? { id: r.user_id, name: r.user_name } : null,
      via: r.via,
    };
    if (r.action === 'updated' && payload?.changes && typeof payload.changes === 'object') {
      e.changes = Object.fromEntries(Object.entries(payload.changes as Record<string, [unknown, unknown]>).map(([f, [from, to]]) => [f, { from, to }]));
    } else if (r.action === 'pipeline_moved' && payload) {
      const field = schema.objects.get(r.object)?.pipeline?.field ?? 'step';
      e.changes = { [field]: { from: payload.from ?? null, to: payload.to ?? null } };
      const { from: _f, to: _t, ...rest } = payload;
      if (Object.keys(rest).length) e.details = rest;
    } else if (payload && Object.keys(payload).length) e.details = payload;
    return e;
  });
  const last = rows.length ? rows[rows.length - 1]!.id : after;
  return { data, next_cursor: encodeCursor(last), has_more };
}
