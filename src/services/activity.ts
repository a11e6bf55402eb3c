import type { Kysely } from 'kysely';
import { bulkInsert } from '../db/bulk-insert.js';
import type { Tables } from '../db/tables.js';
import { nowIso } from './clock.js';
import type { Ctx } from './context.js';
import type { ObjectDef } from './schema.js';

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

/**
 * A 'created' entry's payload: the fields its input named, stored as their field ids (a JSON array:
 * a quarter of the names' bytes, on every record an import writes) and read back by readPayload as
 * `{"fields": [names]}`, as it was once stored.
 */
export function createdPayload(obj: ObjectDef, names: Iterable<string>): number[] {
  return [...names].map((n) => obj.byName.get(n)!.id);
}

const namesById = new WeakMap<ObjectDef, Map<number, string>>();

/** An entry's payload as stored, for display: a 'created' entry's field ids (createdPayload) become `{fields: [names]}`. */
export function readPayload(obj: ObjectDef | undefined, text: string | null): unknown {
  if (!text) return null;
  const payload: unknown = JSON.parse(text);
  if (!Array.isArray(payload)) return payload;
  let names = obj && namesById.get(obj);
  if (obj && !names) namesById.set(obj, (names = new Map(obj.fields.map((f) => [f.id, f.name]))));
  return { fields: payload.map((id: number) => names?.get(id) ?? String(id)) };
}
