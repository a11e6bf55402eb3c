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
  const rows = entries.map((e) => [ctx.actor.workspaceId, e.object, e.recordId, e.action, e.payload === undefined ? null : JSON.stringify(e.payload), ctx.actor.userId, ctx.actor.via, at]);
  await ctx.db.adapter.feedOrder(trx, ctx.actor.workspaceId);
  await bulkInsert(trx, 'activity', ['workspace_id', 'object', 'record_id', 'action', 'payload', 'user_id', 'via', 'created_at'], rows);
}
