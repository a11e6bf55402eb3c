import type { Kysely } from 'kysely';
import type { Tables } from '../db/tables.js';
import type { Ctx } from './context.js';
import { nowIso } from './clock.js';

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
  const rows = entries.map((e) => ({
    workspace_id: ctx.actor.workspaceId,
    object: e.object,
    record_id: e.recordId,
    action: e.action,
    payload: e.payload === undefined ? null : JSON.stringify(e.payload),
    user_id: ctx.actor.userId,
    via: ctx.actor.via,
    created_at: at,
  }));
  for (let i = 0; i < rows.length; i += 500) await trx.insertInto('activity').values(rows.slice(i, i + 500)).execute();
}
