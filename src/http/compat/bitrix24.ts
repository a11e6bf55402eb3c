import rateLimit from '@fastify/rate-limit';
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import type { Db } from '../../db/database.js';
import { aggregateGroups } from '../../services/aggregate.js';
import { type Ctx, contextFor } from '../../services/context.js';
import { CrmError } from '../../services/errors.js';
import { checkInput } from '../../services/input-limits.js';
import { parseWith, resolveObject } from '../../services/schema.js';
import { authenticateNow } from '../../services/users.js';
import { bearer } from '../app.js';
import type { AuthThrottle } from '../auth-throttle.js';
import { crmErrorOf, SECURITY_HEADERS, setRetryAfter } from '../errors.js';
import { BitrixError } from '../openapi/schemas.js';
import { TASKS_OBJECT, translateRequest, translateResult } from './bitrix24-translate.js';

/**
 * Bitrix24's POST /v1/tasks/aggregate (bitrix24-tasks-aggregate.txt), at the document's own path:
 * its base URL is the host itself (https://<portal>/v1/...), not our /api/v1. Auth, throttles, input
 * checks and the heavy lane are the same as /api/v1's; errors take the document's shape,
 * {"success": false, "error": {"code", "message"}}, every 400 with the code INVALID_PARAMS.
 */

export interface Bitrix24Deps {
  db: Db;
  throttle?: AuthThrottle | undefined;
  rateLimitPerMinute?: number | undefined;
}

const body = z
  .object({
    aggregate: z
      .array(z.object({ field: z.string(), function: z.string() }).strict())
      .max(20)
      .optional(),
    filter: z.record(z.string(), z.unknown()).optional(),
    groupBy: z.union([z.string(), z.array(z.string())]).optional(),
    /** Not in the document's request table, but its meta.groupsTruncated speaks of it. */
    groupLimit: z.number().int().optional(),
  })
  .strict();

const doc = {
  schema: {
    summary: 'Bitrix24 tasks aggregate: metrics over tasks, optionally grouped',
    description: "Bitrix24's POST /v1/tasks/aggregate at its own path. Fields take Bitrix24's names (status, priority, responsibleId, groupId, timeEstimate).",
    security: [{ apiKey: [] }, { bearerAuth: [] }] as Record<string, string[]>[],
    body,
    response: {
      200: z.object({
        success: z.literal(true),
        data: z.looseObject({}).describe("The document's result: count, aggregates, groups and meta, in Bitrix24's field names"),
      }),
    },
    errors: [422],
    errorBody: BitrixError,
  },
};

/** Our error in the document's shape: 400s are INVALID_PARAMS, a missing key TOKEN_MISSING; other statuses keep our code. */
export function bitrixError(e: CrmError) {
  const code = typeof e.details?.bitrixCode === 'string' ? e.details.bitrixCode : e.status === 400 ? 'INVALID_PARAMS' : e.code;
  return { success: false, error: { code, message: e.message } };
}

function apiKey(req: FastifyRequest): string | undefined {
  const h = req.headers['x-api-key'];
  const v = (Array.isArray(h) ? h[0] : h)?.trim();
  return v || undefined;
}

/**
 * X-Api-Key carries one of our API tokens; Authorization: Bearer is accepted beside it. With both
 * (the document's OAuth-application form: an application key and a user's token), both must be valid
 * and of one workspace, and the request acts as the Bearer token's user.
 */
async function authenticateBitrix(db: Db, req: FastifyRequest) {
  const key = apiKey(req);
  const tok = bearer(req);
  if (!key && !tok && !req.headers.authorization)
    return { error: new CrmError('UNAUTHORIZED', "Missing API key: send 'X-Api-Key: ksr_...' (or 'Authorization: Bearer ksr_...')", { bitrixCode: 'TOKEN_MISSING' }) };
  const byKey = key ? await authenticateNow(db, key, 'rest') : null;
  const byBearer = tok ? await authenticateNow(db, tok, 'rest') : null;
  const bad = (key && !byKey) || (req.headers.authorization && !byBearer);
  if (bad) return { error: new CrmError('UNAUTHORIZED', 'Invalid or revoked API key'), failed: true };
  if (byKey && byBearer && byKey.workspaceId !== byBearer.workspaceId)
    return { error: new CrmError('UNAUTHORIZED', 'The X-Api-Key and the Bearer token belong to different workspaces'), failed: true };
  return { actor: (byBearer ?? byKey)! };
}

export async function bitrix24Routes(app: FastifyInstance, deps: Bitrix24Deps) {
  app.decorateRequest('ctx', null as unknown as Ctx);
  app.setErrorHandler((err: FastifyError, req, reply) => {
    const crm = crmErrorOf(err);
    reply.headers(SECURITY_HEADERS);
    if (!crm) {
      req.log.error({ err }, 'unhandled error');
      return reply.status(500).send({ success: false, error: { code: 'INTERNAL_ERROR', message: 'Internal error; the server log has the details' } });
    }
    setRetryAfter(reply, crm);
    return reply.status(crm.status).send(bitrixError(crm));
  });
  if (deps.rateLimitPerMinute) {
    await app.register(rateLimit, {
      max: deps.rateLimitPerMinute,
      timeWindow: 60_000,
      keyGenerator: (req) => apiKey(req) ?? bearer(req) ?? req.ip,
      errorResponseBuilder: (_req, ctx) => new CrmError('RATE_LIMITED', `Rate limit of ${ctx.max} requests per minute exceeded; retry in ${Math.ceil(ctx.ttl / 1000)} s`),
    });
  }
  app.addHook('onRequest', async (req) => {
    const refused = deps.throttle?.refusal(req.ip);
    if (refused) throw refused;
    const r = await authenticateBitrix(deps.db, req);
    if (!r.actor) {
      if (r.failed) deps.throttle?.fail(req.ip);
      throw r.error;
    }
    req.ctx = contextFor(deps.db, req.log, r.actor);
  });
  // The app's JSON parser and text checks look at /api/ routes only: the same checks here.
  app.addHook('preValidation', async (req) => {
    checkInput(req.body, 'JSON body');
  });

  app.post('/v1/tasks/aggregate', doc, async (req, reply) => {
    const b = parseWith(body, req.body ?? {}, 'request body');
    const ctx = untilClientLeaves(req, reply);
    const plan = translateRequest(await resolveObject(ctx, TASKS_OBJECT), b);
    const r = await aggregateGroups(ctx, TASKS_OBJECT, plan.request);
    return { success: true, data: translateResult(plan, r) };
  });
}

/** A client that hangs up stops its heavy read (as on /api/v1/aggregate). */
function untilClientLeaves(req: FastifyRequest, reply: FastifyReply): Ctx {
  const ac = new AbortController();
  reply.raw.once('close', () => {
    if (!reply.raw.writableFinished) ac.abort();
  });
  return { ...req.ctx, work: { ...req.ctx.work, signal: ac.signal } };
}
