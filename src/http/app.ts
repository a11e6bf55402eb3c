import cors from '@fastify/cors';
import rateLimit from '@fastify/rate-limit';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest, LogController } from 'fastify';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { Db } from '../db/database.js';
import { type McpHttpOptions, registerMcpRoutes } from '../mcp/http.js';
import { type Actor, type Ctx, contextFor } from '../services/context.js';
import { CrmError } from '../services/errors.js';
import { checkInput, INPUT_LIMITS } from '../services/input-limits.js';
import { stillActs, tokenCacheOf } from '../services/users.js';
import { VERSION } from '../version.js';
import { AuthThrottle } from './auth-throttle.js';
import { bitrix24Routes } from './compat/bitrix24.js';
import { cogniteRoutes } from './compat/cognite.js';
import { clientErrorHandler, errorHandler, errorPayload, expectationHandler, frameworkErrorHandler, SECURITY_HEADERS } from './errors.js';
import { registerOpenApi } from './openapi/plugin.js';
import { Health } from './openapi/schemas.js';
import { aggregateRoutes } from './routes/aggregate.js';
import { dataRoutes } from './routes/data.js';
import { pipelineRoutes } from './routes/pipelines.js';
import { recordRoutes } from './routes/records.js';
import { schemaRoutes } from './routes/schema.js';
import { searchRoutes } from './routes/search.js';
import { userRoutes } from './routes/users.js';
import { workRoutes } from './routes/work.js';

export interface AppDeps {
  db: Db;
  log: Logger;
  /** Allowed CORS origins; true reflects any origin. */
  corsOrigin?: boolean | string | string[];
  /** Requests per minute per token (or per IP without one) on /api/v1; 0 or undefined: no limit. */
  rateLimitPerMinute?: number;
  /**
   * Where the rate limit counts (the rate limiter's own Redis store): shared by every process that
   * uses it. Absent: each process counts its own requests. Closed with the app.
   */
  rateLimitRedis?: Redis;
  /** Mount MCP (/mcp, /sse, /messages) with these options; true: defaults; absent: REST only. */
  mcp?: McpHttpOptions | boolean;
  /** Slow-client limits; absent: DEFAULT_TIMEOUTS. */
  timeouts?: Partial<HttpTimeouts>;
  /** Failed authentications per minute from one address before 429 (REST and MCP); 0: no limit; default 20. */
  authFailuresPerMinute?: number;
  /** Trust X-Forwarded-For from these proxies for the client address (Fastify's trustProxy). */
  trustProxy?: boolean | number | string[];
}

export interface HttpTimeouts {
  /** Headers and body must all arrive within this (ms); 0: none. */
  requestTimeoutMs: number;
  /** Headers must arrive within this (ms); capped at requestTimeoutMs. */
  headersTimeoutMs: number;
  /** An idle keep-alive connection is closed after this (ms). */
  keepAliveTimeoutMs: number;
  /** No byte either way for this long closes the connection (ms); 0: never. */
  connectionTimeoutMs: number;
}

export const DEFAULT_TIMEOUTS: HttpTimeouts = { requestTimeoutMs: 60_000, headersTimeoutMs: 10_000, keepAliveTimeoutMs: 72_000, connectionTimeoutMs: 0 };

/** Seconds a client is asked to wait (Retry-After) when this process is shutting down. */
const RETRY_AFTER_SHUTDOWN_S = 5;

/** Token prefix for logs: the 12 characters `token list` shows, never more. */
const tokenPrefix = (token: string | undefined) => token?.slice(0, 12);

declare module 'fastify' {
  interface FastifyRequest {
    ctx: Ctx;
    /** A GET that ran on a cached token: the actor it acts as now, awaited before anything is answered. */
    tokenConfirmed?: Promise<Actor | null> | undefined;
  }
}

export function bearer(req: FastifyRequest): string | undefined {
  const h = req.headers.authorization;
  if (!h) return undefined;
  const m = /^Bearer\s+(\S+)\s*$/i.exec(h);
  return m?.[1];
}

/**
 * One info line per request, when its connection is done with it (also for hijacked MCP streams and
 * aborted requests): ids, route pattern, status, time, workspace and token prefix. Never the query
 * string, a body, a header value or a whole token.
 */
function accessLog(req: FastifyRequest, reply: FastifyReply) {
  // A level that drops the line (warn, silent): no listener a request for it.
  if ((req.log as Partial<Logger>).isLevelEnabled?.('info') === false) return;
  reply.raw.once('close', () => {
    const actor = req.ctx?.actor ?? req.mcpActor ?? undefined;
    req.log.info(
      {
        method: req.method,
        route: req.routeOptions.url ?? req.url.split('?')[0]!.slice(0, 200),
        status: reply.raw.statusCode,
        ms: Math.round(reply.elapsedTime * 10) / 10,
        workspace: actor?.workspaceId,
        token: actor ? tokenPrefix(bearer(req)) : undefined,
        ...(reply.raw.writableFinished ? {} : { aborted: true }),
      },
      'request',
    );
  });
}

/** An answer that will not be sent: a stream's resources are let go. */
function discard(payload: unknown) {
  if (payload && typeof (payload as { destroy?: unknown }).destroy === 'function') (payload as { destroy(): void }).destroy();
}

/** Fastify's trustProxy for a hop count (the socket's peer and the n-1 entries before it are proxies), or a proxy list. */
function trustFn(tp: number | string[]): string[] | ((address: string, hop: number) => boolean) {
  return typeof tp === 'number' ? (_address: string, hop: number) => hop < tp : tp;
}

/** The HTTP surface: REST at /api/v1 (MCP is mounted by mcp/http.ts). No listen() here. */
export async function buildApp(deps: AppDeps): Promise<FastifyInstance> {
  const t = { ...DEFAULT_TIMEOUTS, ...deps.timeouts };
  // Node refuses a header limit above the request limit.
  const headersTimeout = t.requestTimeoutMs > 0 ? Math.min(t.headersTimeoutMs, t.requestTimeoutMs) : t.headersTimeoutMs;
  const app = Fastify({
    loggerInstance: deps.log,
    bodyLimit: 5 * 1024 * 1024,
    // Fastify's two lines per request are replaced by one access-log line (below).
    logController: new LogController({ disableRequestLogging: true }),
    // Fastify's own 503 is not in the contract's shape: the draining hook below answers instead.
    return503OnClosing: false,
    requestTimeout: t.requestTimeoutMs,
    keepAliveTimeout: t.keepAliveTimeoutMs,
    connectionTimeout: t.connectionTimeoutMs,
    // Node checks the header and request limits on this interval (default 30 s, which would let a
    // slow body run 30 s past its limit).
    http: {
      headersTimeout,
      requestTimeout: t.requestTimeoutMs,
      connectionsCheckingInterval: Math.max(100, Math.min(1000, Math.floor(Math.min(headersTimeout, t.requestTimeoutMs || headersTimeout) / 4))),
    },
    clientErrorHandler,
    frameworkErrors: frameworkErrorHandler,
    // `true` is one hop, not Fastify's "trust every hop": that takes the leftmost X-Forwarded-For
    // entry, which the client writes, so a client could pick its address (and dodge the failed-auth
    // throttle). A hop count is given as a function: Fastify now ignores a number (it cannot check
    // the peer is a proxy; the operator who sets a count says it is).
    ...(deps.trustProxy ? { trustProxy: trustFn(deps.trustProxy === true ? 1 : deps.trustProxy) } : {}),
  });
  app.setErrorHandler(errorHandler);
  app.server.on('checkExpectation', expectationHandler(app.log));
  // The API reads JSON only: Fastify's built-in text/plain parser would hand routes a string (a
  // confusing 400 "must be an object"); without it any other body type answers 415.
  app.removeContentTypeParser('text/plain');

  // Shutdown: from Fastify's preClose on (the CLI's SIGTERM calls close()), a request that still
  // reaches the app (on a kept-alive connection) is refused, and answers close their connection.
  let draining = false;
  let idleSweep: NodeJS.Timeout | undefined;
  app.addHook('preClose', async () => {
    draining = true;
    // Node closes the connections idle when close() starts, not those that become idle later: a
    // kept-alive connection whose answer could not say "Connection: close" (a hijacked MCP stream)
    // would hold the close until its keep-alive timeout. Close them as they become idle.
    idleSweep = setInterval(() => app.server.closeIdleConnections(), 100);
    idleSweep.unref();
  });
  app.addHook('onClose', async () => clearInterval(idleSweep));
  app.addHook('onRequest', async (req, reply) => {
    reply.headers(SECURITY_HEADERS);
    accessLog(req, reply);
    if (draining) {
      reply.header('Connection', 'close').header('Retry-After', String(RETRY_AFTER_SHUTDOWN_S));
      throw new CrmError('SERVICE_UNAVAILABLE', `The server is shutting down; retry in ${RETRY_AFTER_SHUTDOWN_S} s`);
    }
  });
  app.addHook('onSend', (_req, reply, payload, done) => {
    if (draining) reply.header('Connection', 'close');
    done(null, payload);
  });
  const tokens = tokenCacheOf(deps.db);
  const throttle = (deps.authFailuresPerMinute ?? 20) > 0 ? new AuthThrottle(deps.authFailuresPerMinute ?? 20) : undefined;
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
      if (err) {
        // Well-formed JSON refused by the parser's prototype-poisoning guard: say so, not "not valid JSON".
        let wellFormed = false;
        try {
          JSON.parse(body);
          wellFormed = true;
        } catch {
          /* really malformed */
        }
        if (wellFormed) return done(new CrmError('VALIDATION_ERROR', "JSON body: a key named '__proto__', or 'constructor' holding 'prototype', is not allowed; rename it"));
        return done(err);
      }
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
  app.setNotFoundHandler((req, reply) => reply.status(404).send({ error: true, code: 'NOT_FOUND', message: `No route ${req.method} ${req.url.split('?')[0]}; see README for the API` }));
  await app.register(cors, {
    origin: deps.corsOrigin ?? false,
    // Every method and request header the REST API and MCP over HTTP use (the plugin's default is GET, HEAD, POST).
    methods: ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE'],
    allowedHeaders: ['Authorization', 'X-Api-Key', 'Content-Type', 'Accept', 'Mcp-Session-Id', 'Mcp-Protocol-Version', 'Last-Event-ID'],
    exposedHeaders: ['Retry-After', 'WWW-Authenticate', 'Mcp-Session-Id'],
    maxAge: 600,
  });

  // Before any route: the document is collected as routes are added.
  await registerOpenApi(app as unknown as FastifyInstance);

  app.get('/health', { schema: { summary: 'Liveness: version and database kind', security: [], response: { 200: Health } } }, async () => ({
    status: 'ok',
    version: VERSION,
    database: deps.db.adapter.name,
  }));

  if (deps.rateLimitRedis) app.addHook('onClose', async () => deps.rateLimitRedis!.disconnect());
  await app.register(
    async (api) => {
      api.decorateRequest('ctx', null as unknown as Ctx);
      if (deps.rateLimitPerMinute) {
        // In Redis when given (every process behind a load balancer counts into it); else per process.
        // Redis unreachable: requests go on uncounted rather than fail.
        await api.register(rateLimit, {
          max: deps.rateLimitPerMinute,
          ...(deps.rateLimitRedis ? { redis: deps.rateLimitRedis, nameSpace: 'crm-rate-', skipOnError: true } : {}),
          timeWindow: 60_000,
          keyGenerator: (req) => bearer(req) ?? req.ip,
          errorResponseBuilder: (_req, ctx) => new CrmError('RATE_LIMITED', `Rate limit of ${ctx.max} requests per minute exceeded; retry in ${Math.ceil(ctx.ttl / 1000)} s`),
        });
      }
      const unauthorized = (req: FastifyRequest) =>
        new CrmError('UNAUTHORIZED', req.headers.authorization ? 'Invalid or revoked API token' : "Missing API token: send 'Authorization: Bearer ksr_...'");
      api.addHook('onRequest', async (req) => {
        const refused = throttle?.refusal(req.ip);
        if (refused) throw refused;
        // A GET writes nothing: on a cached token it runs while the token is confirmed, and its
        // answer waits for that (onSend below). Anything else is confirmed first.
        // SQLite: the file's data_version read once, as the request begins, for every cache it consults.
        const dataVersion = deps.db.tokenVersion ? undefined : (deps.db.dataVersion() ?? undefined);
        const { actor, confirmed } = await tokens.authenticate(bearer(req), 'rest', req.method === 'GET' || req.method === 'HEAD', dataVersion);
        if (!actor && req.headers.authorization) throttle?.fail(req.ip);
        if (!actor) throw unauthorized(req);
        req.ctx = contextFor(deps.db, req.log, actor, undefined, dataVersion);
        if (confirmed) {
          req.tokenConfirmed = confirmed;
          // Settled by onSend; a request that never gets there (the client went away) must not leave it unheard.
          confirmed.catch(() => {});
        }
      });
      // Nothing of a request that ran on a cached token is answered, errors included, unless the
      // token still acts as that actor: revoked (or its user gone): 401; its user changed (role) while
      // it ran: 503, to be sent again.
      // Only where tokens are cached with a version (PostgreSQL): elsewhere no request runs on a cached token.
      if (deps.db.tokenVersion)
        api.addHook('onSend', async (req, reply, payload) => {
          const confirmed = req.tokenConfirmed;
          if (!confirmed) return payload;
          req.tokenConfirmed = undefined;
          let refusal: unknown;
          try {
            const now = await confirmed;
            if (stillActs(req.ctx.actor, now)) return payload;
            if (!now) throttle?.fail(req.ip);
            refusal = now ? new CrmError('SERVICE_UNAVAILABLE', "The token's user changed while the request ran; send it again") : unauthorized(req);
          } catch (e) {
            refusal = e;
          }
          discard(payload);
          return errorPayload(refusal, req, reply);
        });
      await api.register(userRoutes);
      await api.register(schemaRoutes);
      await api.register(recordRoutes);
      await api.register(aggregateRoutes);
      await api.register(workRoutes);
      await api.register(pipelineRoutes);
      await api.register(searchRoutes);
      await api.register(dataRoutes);
      await api.register(cogniteRoutes);
    },
    { prefix: '/api/v1' },
  );
  await app.register(bitrix24Routes, { db: deps.db, throttle, rateLimitPerMinute: deps.rateLimitPerMinute });
  if (deps.mcp) {
    const opts = deps.mcp === true ? {} : deps.mcp;
    await registerMcpRoutes(app as unknown as FastifyInstance, {
      db: deps.db,
      log: deps.log,
      allowedOrigins: deps.corsOrigin === true ? true : typeof deps.corsOrigin === 'string' ? [deps.corsOrigin] : deps.corsOrigin || [],
      rateLimitPerMinute: deps.rateLimitPerMinute,
      authThrottle: throttle,
      ...opts,
    });
  }
  return app as unknown as FastifyInstance;
}
