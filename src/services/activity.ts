import type { Kysely } from 'kysely';
import { bulkInsert } from '../db/bulk-insert.js';
import type { Tables } from '../db/tables.js';
import { nowIso } from './clock.js';
import type { Ctx } from './context.js';

export interface ActivityEntry {
  object: string;
  recordId: string;
  action: string;
  payload?: unknown;
}

/** Append entries inside the caller's transaction, so a failed write leaves no trace. */
export async function recordActivity(trx: Kysely<Tables>, ctx: Ctx, entries: ActivityEntry[]): Promise<void> {
  if (entries.length === 0) return;
  const at = nowIso();
  const { workspaceId, userId, via } = ctx.actor;
  const rows = entries.map((e) => ({
    workspace_id: workspaceId,
    object: e.object,
    record_id: e.recordId,
    action: e.action,
    payload: e.payload === undefined ? null : JSON.stringify(e.payload),
    user_id: userId,
    via,
    created_at: at,
  }));
  await ctx.db.adapter.feedOrder(trx, workspaceId);
  await bulkInsert(trx, 'activity', ['workspace_id', 'object', 'record_id', 'action', 'payload', 'user_id', 'via', 'created_at'], rows);
}
