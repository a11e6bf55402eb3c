import type { Ctx } from './context.js';
import { CrmError, validationError } from './errors.js';
import { requireAdmin } from './permissions.js';
import { bumpVersion, getSchema } from './schema.js';
import { checkTimeZone } from './time-buckets.js';

export interface WorkspaceSettings {
  id: number;
  name: string;
  time_zone: string;
}

export async function getWorkspace(ctx: Ctx): Promise<WorkspaceSettings> {
  const ws = await ctx.db.kysely.selectFrom('workspaces').select(['id', 'name', 'time_zone']).where('id', '=', ctx.actor.workspaceId).executeTakeFirst();
  if (!ws) throw new CrmError('UNAUTHORIZED', 'Workspace no longer exists');
  return ws;
}

/** The zone relative dates in filters ('today', 'this_week') are read in; cached with the schema. */
export async function workspaceTimeZone(ctx: Ctx): Promise<string> {
  return (await getSchema(ctx)).timeZone;
}

export async function updateWorkspace(ctx: Ctx, input: unknown): Promise<WorkspaceSettings> {
  requireAdmin(ctx, 'change workspace settings');
  if (typeof input !== 'object' || input === null || Array.isArray(input)) throw validationError('Send a JSON object such as {"time_zone": "Europe/Paris"}');
  const { time_zone: tz, ...rest } = input as Record<string, unknown>;
  const extra = Object.keys(rest);
  if (extra.length) throw validationError(`Unknown workspace setting '${extra[0]}'. Settings: time_zone`);
  if (tz !== undefined) {
    if (typeof tz !== 'string' || tz.trim() === '') throw validationError('time_zone must be an IANA name such as Europe/Paris or America/New_York');
    const zone = tz.trim();
    checkTimeZone(zone);
    // The canonical spelling ('utc' -> 'UTC'), so comparisons and answers are stable.
    const canonical = new Intl.DateTimeFormat('en-US', { timeZone: zone }).resolvedOptions().timeZone;
    await ctx.db.kysely.transaction().execute(async (trx) => {
      await trx.updateTable('workspaces').set({ time_zone: canonical }).where('id', '=', ctx.actor.workspaceId).execute();
      // The zone is cached with the schema: every process's cache sees the new version and reloads.
      await bumpVersion(trx, ctx.actor.workspaceId);
    });
  }
  return getWorkspace(ctx);
}
