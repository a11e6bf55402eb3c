import Fastify, { LogController, type FastifyInstance, type FastifyRequest } from 'fastify';
import cors from '@fastify/cors';
import rateLimit from '@fastify/rate-limit';
import type { Logger } from 'pino';
import type { Db } from '../db/database.js';
import type { Ctx } from '../services/context.js';
import { CrmError } from '../services/errors.js';
import { checkInput, INPUT_LIMITS } from '../services/input-limits.js';
import { authenticate } from '../services/users.js';
import { errorHandler } from './errors.js';
import { recordRoutes } from './routes/records.js';
import { schemaRoutes } from './routes/schema.js';
import { userRoutes } from './routes/users.js';
import { aggregateRoutes } from './routes/aggregate.js';
import { workRoutes } from './routes/work.js';
import { pipelineRoutes } from './routes/pipelines.js';
import { searchRoutes } from './routes/search.js';
import { dataRoutes } from './routes/data.js';
import { VERSION } from '../version.js';
import { registerMcpRoutes, type McpHttpOptions } from '../mcp/http.js';

export interface AppDeps {
  db: Db;
  log: Logger;
  /** Allowed CORS origins; true reflects any origin. */
  corsOrigin?: boolean | string | string[];
  /** Requests per minute per token (or per IP without one) on /api/v1; 0 or undefined: no limit. */
  rateLimitPerMinute?: number;
  /** Mount MCP (/mcp, /sse, /messages) with these options; true: defaults; absent: REST only. */
  mcp?: McpHttpOptions | boolean;
}

declare module 'fastify' {
  interface FastifyRequest {
    ctx: Ctx;
  }
}

export function bearer(req: FastifyRequest): string | undefined {
  const h = req.headers.authorization;
  if (!h) return undefined;
  const m = /^Bearer\s+(\S+)\s*$/i.exec(h);
  return m?.[1];
}

/** The HTTP surface: REST at /api/v1 (MCP is mounted by mcp/http.ts). No listen() here. */
export async function buildApp(deps: AppDeps): Promise<FastifyInstance> {
  const app = Fastify({
    loggerInstance: deps.log,
    bodyLimit: 5 * 1024 * 1024,
    // Per-request log lines cost throughput; errors are still logged by the error handler.
    logController: new LogController({ disableRequestLogging: true }),
    return503OnClosing: true,
  });
  app.setErrorHandler(errorHandler);
  // An empty body with a JSON content type (curl -X DELETE -H 'Content-Type: application/json')
  // means "no body", not an error; anything else goes through Fastify's safe JSON parser.
  // Bytes that are not UTF-8 (a lone surrogate sent raw) are refused rather than decoded to U+FFFD, and
  // bodies nested deeper than INPUT_LIMITS.jsonDepth before zod or a service recurses over them.
  const json = app.getDefaultJsonParser('error', 'error');
  const utf8 = new TextDecoder('utf-8', { fatal: true });
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, (req, raw, done) => {
    let body: string;
    try {
      body = utf8.decode(raw as Buffer);
    } catch {
      return done(new CrmError('VALIDATION_ERROR', 'JSON body is not valid UTF-8; send the text as UTF-8 (no lone surrogates)'));
    }
    if (body.trim() === '') return done(null, undefined);
    return json(req, body, (err, parsed) => {
      if (err) return done(err);
      try {
        // MCP messages are checked by the tool wrapper instead, so that the client gets a tool error.
        if (req.routeOptions.url?.startsWith('/api/')) checkInput(parsed, 'JSON body', INPUT_LIMITS.jsonDepth, { text: false });
      } catch (e) {
        return done(e as Error);
      }
      return done(null, parsed);
    });
  });
  // Every text of a REST request (body, query string, path) is checked once here for NUL and lone
  // surrogates; MCP tool arguments are checked by the tool wrapper (src/mcp/server.ts), so an MCP
  // client gets its error as a tool result.
  app.addHook('preValidation', async (req) => {
    if (!req.routeOptions.url?.startsWith('/api/')) return;
    // The query parser decodes bad percent-escapes (%ED%A0%80, a raw surrogate) to U+FFFD without a word.
    try {
      decodeURIComponent(req.url);
    } catch {
      throw new CrmError('VALIDATION_ERROR', 'The URL has a malformed percent-escape or bytes that are not UTF-8');
    }
    checkInput(req.params, 'Path');
    checkInput(req.query, 'Query string');
    checkInput(req.body, 'JSON body');
  });
  app.setNotFoundHandler((req, reply) =>
    reply.status(404).send({ error: true, code: 'NOT_FOUND', message: `No route ${req.method} ${req.url.split('?')[0]}; see README for the API` }),
  );
  await app.register(cors, { origin: deps.corsOrigin ?? false, exposedHeaders: ['Retry-After', 'WWW-Authenticate'] });

  app.get('/health', async () => ({ status: 'ok', version: VERSION, database: deps.db.adapter.name }));

  await app.register(
    async (api) => {
      api.decorateRequest('ctx', null as unknown as Ctx);
      if (deps.rateLimitPerMinute) {
        // Per process: behind a load balancer each process counts its own share.
        await api.register(rateLimit, {
          max: deps.rateLimitPerMinute,
          timeWindow: 60_000,
          keyGenerator: (req) => bearer(req) ?? req.ip,
          errorResponseBuilder: (_req, ctx) =>
            new CrmError('RATE_LIMITED', `Rate limit of ${ctx.max} requests per minute exceeded; retry in ${Math.ceil(ctx.ttl / 1000)} s`),
        });
      }
      api.addHook('onRequest', async (req) => {
        const actor = await authenticate(deps.db, bearer(req), 'rest');
        if (!actor)
          throw new CrmError(
            'UNAUTHORIZED',
            req.headers.authorization ? 'Invalid or revoked API token' : "Missing API token: send 'Authorization: Bearer ksr_...'",
          );
        req.ctx = { db: deps.db, log: req.log, actor };
      });
      await api.register(userRoutes);
      await api.register(schemaRoutes);
      await api.register(recordRoutes);
      await api.register(aggregateRoutes);
      await api.register(workRoutes);
      await api.register(pipelineRoutes);
      await api.register(searchRoutes);
      await api.register(dataRoutes);
    },
    { prefix: '/api/v1' },
  );
  if (deps.mcp) {
    const opts = deps.mcp === true ? {} : deps.mcp;
    await registerMcpRoutes(app as unknown as FastifyInstance, {
      db: deps.db,
      log: deps.log,
      allowedOrigins: deps.corsOrigin === true ? true : typeof deps.corsOrigin === 'string' ? [deps.corsOrigin] : deps.corsOrigin || [],
      rateLimitPerMinute: deps.rateLimitPerMinute,
      ...opts,
    });
  }
  return app as unknown as FastifyInstance;
}
