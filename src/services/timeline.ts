import { readPayload } from './activity.js';
import { checkActions, timeBounds } from './changes.js';
import type { Ctx } from './context.js';
import { validationError } from './errors.js';
import { recordExists } from './record-tables.js';
import { checkLimit, notFound } from './records.js';
import { resolveObject } from './schema.js';

/**
 * A record's timeline, newest first: what happened to it (created, field changes, associations,
 * deletion) and around it (tasks and deals linked to it, notes, emails), with who did it and
 * through which surface ('rest', 'cli', 'mcp:<tool>').
 */
export interface TimelineEntry {
  id: number;
  action: string;
  at: string;
  user: { id: string; name: string | null } | null;
  via: string;
  details: unknown;
}

export async function getTimeline(
  ctx: Ctx,
  objectName: string,
  recordId: string,
  opts: { limit?: number | undefined; cursor?: string | undefined; actions?: string[] | undefined; from?: string | undefined; to?: string | undefined } = {},
) {
  const obj = await resolveObject(ctx, objectName);
  const limit = checkLimit(opts.limit, 100, 50);
  const actions = checkActions(opts.actions);
  const { gte, lt } = timeBounds(opts.from, opts.to);
  let before: number | undefined;
  if (opts.cursor) {
    before = Number(Buffer.from(opts.cursor, 'base64url').toString());
    // Entry ids start at 1: anything else is not a cursor this endpoint handed out.
    if (!Number.isSafeInteger(before) || before < 1) throw validationError('Invalid cursor: pass nextCursor back unchanged');
  }
  const base = () => {
    let q = ctx.db.kysely.selectFrom('activity').where('activity.workspace_id', '=', ctx.actor.workspaceId).where('activity.object', '=', obj.name).where('activity.record_id', '=', recordId);
    if (actions) q = q.where('activity.action', 'in', actions);
    if (gte) q = q.where('activity.created_at', '>=', gte);
    if (lt) q = q.where('activity.created_at', '<', lt);
    return q;
  };
  let q = base()
    .leftJoin('users', 'users.id', 'activity.user_id')
    .select(['activity.id', 'activity.action', 'activity.created_at', 'activity.user_id', 'users.name as user_name', 'activity.via', 'activity.payload']);
  if (before !== undefined) q = q.where('activity.id', '<', before);
  const rows = await q
    .orderBy('activity.id', 'desc')
    .limit(limit + 1)
    .execute();
  if (rows.length === 0 && before === undefined) {
    // No history: only a record that exists has an (empty) timeline.
    if (!(await recordExists(ctx.db.kysely, obj, recordId))) throw notFound(obj, recordId);
  }
  const total = Number(
    (
      await base()
        .select((eb) => eb.fn.countAll<number>().as('n'))
        .executeTakeFirstOrThrow()
    ).n,
  );
  let nextCursor: string | null = null;
  if (rows.length > limit) {
    rows.length = limit;
    nextCursor = Buffer.from(String(rows[limit - 1]!.id)).toString('base64url');
  }
  const data: TimelineEntry[] = rows.map((r) => ({
    id: r.id,
    action: r.action,
    at: r.created_at,
    user: r.user_id ? { id: r.user_id, name: r.user_name } : null,
    via: r.via,
    details: readPayload(obj, r.payload),
  }));
  return { data, total, nextCursor };
}
