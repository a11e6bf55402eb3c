import type { Ctx } from './context.js';
import { CrmError } from './errors.js';

export function requireAdmin(ctx: Ctx, action: string): void {
  if (ctx.actor.role !== 'admin') throw new CrmError('PERMISSION_DENIED', `Only admins may ${action}; this token belongs to a member`);
}
