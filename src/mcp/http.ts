import rateLimit from '@fastify/rate-limit';
import { SSEServerTransport } from '@modelcontextprotocol/sdk/server/sse.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { Db } from '../db/database.js';
import type { AuthThrottle } from '../http/auth-throttle.js';
import { crmErrorOf, SECURITY_HEADERS, setRetryAfter } from '../http/errors.js';
import type { Actor } from '../services/context.js';
import { CrmError } from '../services/errors.js';
import { authenticateNow } from '../services/users.js';
import { invalidEnvelope, invalidMemberStandIn } from './malformed.js';
import { createMcpServer } from './server.js';
import { localSseSlots, redisSseSlots } from './sse-slots.js';
import type { Toolset } from './tool.js';

export interface McpHttpOptions {
  /** Only tools with readOnlyHint true. */
  readOnly?: boolean;
  /** Only these tool sets; undefined: all. */
  toolsets?: readonly Toolset[];
  /**
   * DNS-rebinding protection: Host names (without port) /mcp, /sse and /messages answer; the loopback
   * names are always allowed. '*' turns the check off (e.g. behind a proxy that checks Host itself).
   */
  allowedHosts?: readonly string[] | '*';
  /** Browser origins allowed besides those on an allowed host (the REST CORS list); true: any. */
  allowedOrigins?: readonly string[] | boolean;
  /** Requests per minute per token on the MCP endpoints; 0 or undefined: no limit. */
  rateLimitPerMinute?: number;
  /** Interval of SSE keep-alive comments, so proxies do not cut an idle legacy SSE stream. */
  sseKeepAliveMs?: number;
  /** Open legacy SSE sessions allowed per token (default 20) and in all (default 500) in this process. */
  sseMaxPerToken?: number;
  sseMaxTotal?: number;
  /** Count SSE sessions in Redis, across every process that uses it (CRM_REDIS_URL); absent: per process. */
  sseRedis?: Redis;
}

interface Deps extends McpHttpOptions {
  db: Db;
  log: Logger;
  /** Failed authentications per address, shared with the REST API. */
  authThrottle?: AuthThrottle | undefined;
}

/** Seconds an SSE client over its cap is asked to wait: sessions end when their clients leave. */
const SSE_RETRY_AFTER_S = 30;

const LOOPBACK = ['localhost', '127.0.0.1', '[::1]'];

/**
 * Stateless Streamable HTTP builds a server per POST, so a client's notifications/cancelled arrives
 * at a server that never saw the call. Calls in flight in this process, by token and request id,
 * let the cancellation reach the server that runs it (its handler's extra.signal). A client that
 * disconnects cancels too (the transport closes, the SDK aborts its handlers). Behind a load
 * balancer a cancellation that lands on another process is not seen: the call runs to its end.
 */
type Aborters = Map<string | number, AbortController>;

/** One POST's calls: how to abort each, and how to end the POST once all are cancelled. */
interface Flight {
  aborters: () => Aborters | undefined;
  pending: Set<string | number>;
  end: () => void;
}
/**
 * Calls in flight by token and request id. Two clients sharing a token both number requests from 0:
 * a key taken twice is ambiguous (null) and a cancellation of it is not delivered, rather than
 * stopping the other client's call.
 */
const inFlight = new Map<string, Flight | null>();
const tokensInFlight = new Map<string, number>();
const flightKey = (token: string, id: unknown) => `${token}\u0000${JSON.stringify(id)}`;

/** Calls of stateless Streamable HTTP running in this process (tests check that none is left behind). */
export const mcpCallsInFlight = () => inFlight.size;

/** Deliver a cancellation; true when it reached a call. A POST whose every call is cancelled ends (the SDK sends no response to a cancelled call, so its stream would stay open). */
function cancelCall(token: string, requestId: string | number, reason: string, log: Logger | FastifyRequest['log']): boolean {
  const flight = inFlight.get(flightKey(token, requestId));
  if (flight === null) {
    log.warn({ requestId }, 'MCP cancellation not delivered: two calls of this token share the request id');
    return false;
  }
  if (!flight) return false;
  flight.aborters()?.get(requestId)?.abort(reason);
  flight.pending.delete(requestId);
  if (flight.pending.size === 0) flight.end();
  return true;
}

interface RpcMessage {
  method?: string;
  id?: string | number;
  params?: { requestId?: string | number; reason?: string };
}
const messagesOf = (body: unknown): RpcMessage[] => (Array.isArray(body) ? body : [body]).filter((m): m is RpcMessage => typeof m === 'object' && m !== null);

function bearerOf(req: FastifyRequest): string | undefined {
  const m = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? '');
  return m?.[1];
}

/** Errors on the MCP endpoints are JSON-RPC shaped: that is what MCP clients parse. */
function rpcError(reply: FastifyReply, status: number, message: string, code = -32000) {
  return reply.code(status).send({ jsonrpc: '2.0', error: { code, message }, id: null });
}

function hostnameOf(value: string): string | undefined {
  try {
    return new URL(value.includes('://') ? value : `http://${value}`).hostname;
  } catch {
    return undefined;
  }
}

/** After hijack Fastify no longer writes headers: hand the ones set so far (CORS) to the raw response. */
function passHeaders(reply: FastifyReply) {
  for (const [k, v] of Object.entries(reply.getHeaders())) if (v !== undefined) reply.raw.setHeader(k, v as string | string[]);
  // The SDK's event streams say Cache-Control: no-cache (store, revalidate); answers carrying CRM
  // data must not be stored at all, as on the REST API.
  const raw = reply.raw;
  const writeHead = raw.writeHead.bind(raw) as (...a: unknown[]) => typeof raw;
  raw.writeHead = ((...args: unknown[]) => {
    for (const a of args)
      if (a && typeof a === 'object' && !Array.isArray(a)) for (const k of Object.keys(a)) if (k.toLowerCase() === 'cache-control') (a as Record<string, string>)[k] = 'no-store, no-transform';
    return writeHead(...args);
  }) as typeof raw.writeHead;
}

declare module 'fastify' {
  interface FastifyRequest {
    mcpActor: Actor | null;
    /** A POST with a token that has a call running here: maybe only its cancellation (see the preHandler). */
    mcpCancelCandidate: boolean;
  }
}

/**
 * MCP over HTTP on the REST server, with the same tokens:
 * - Streamable HTTP at /mcp, stateless: every POST gets a fresh server and transport, so any process
 *   behind a load balancer can answer any request and nothing lives in one process's memory.
 *   GET and DELETE /mcp (server-initiated streams, session end) answer 405: there are no sessions.
 * - Legacy HTTP+SSE (GET /sse, POST /messages?sessionId=) for older clients. Its sessions live in this
 *   process's memory: behind a load balancer, route /sse and /messages with sticky sessions.
 */
export async function registerMcpRoutes(app: FastifyInstance, deps: Deps): Promise<void> {
  const allowHosts = deps.allowedHosts === '*' ? null : new Set([...LOOPBACK, ...(deps.allowedHosts ?? [])].map((h) => h.toLowerCase()));
  const corsOrigins = deps.allowedOrigins === true ? null : new Set(Array.isArray(deps.allowedOrigins) ? deps.allowedOrigins : []);
  const sessions = new Map<string, { transport: SSEServerTransport; actor: Actor }>();
  // Places of open SSE sessions (and ones being opened) per token, and in all: each holds a server
  // and a stream. Counted in Redis when given (every process's sessions), else in this process.
  const sseMaxPerToken = deps.sseMaxPerToken ?? 20;
  const sseMaxTotal = deps.sseMaxTotal ?? 500;
  const sseSlots = deps.sseRedis
    ? redisSseSlots(deps.sseRedis, sseMaxPerToken, sseMaxTotal, { onError: (err) => app.log.warn({ err }, 'Redis (SSE session caps) unreachable: this process counts its own sessions') })
    : localSseSlots(sseMaxPerToken, sseMaxTotal);
  if (deps.sseRedis) app.addHook('onClose', async () => deps.sseRedis!.disconnect());

  await app.register(async (scope) => {
    // A body that never became a JSON-RPC message (not JSON, not UTF-8, too large or too slow) is
    // still answered in JSON-RPC's shape, which is what MCP clients parse: -32700 for a parse error.
    scope.setErrorHandler((err: FastifyError, req, reply) => {
      reply.headers(SECURITY_HEADERS);
      const crm = crmErrorOf(err);
      if (!crm) {
        req.log.error({ err }, 'unhandled error');
        return rpcError(reply, 500, 'Internal error; the server log has the details', -32603);
      }
      setRetryAfter(reply, crm);
      const parse = crm.code === 'VALIDATION_ERROR' && /JSON body|not valid UTF-8/.test(crm.message);
      return rpcError(reply, crm.status, crm.message, parse ? -32700 : crm.status === 401 ? -32001 : crm.status < 500 ? -32600 : -32603);
    });
    scope.decorateRequest('mcpActor', null);
    scope.decorateRequest('mcpCancelCandidate', false);

    // DNS rebinding: a web page must not reach a local server through a name it controls.
    scope.addHook('onRequest', async (req, reply) => {
      if (!allowHosts) return;
      const host = hostnameOf(req.headers.host ?? '');
      if (!host || !allowHosts.has(host.toLowerCase()))
        return rpcError(reply, 403, `Invalid Host '${req.headers.host ?? ''}': allowed hosts are ${[...allowHosts].join(', ')}; set CRM_MCP_ALLOWED_HOSTS to add one`);
      const origin = req.headers.origin;
      if (origin && corsOrigins && !corsOrigins.has(origin)) {
        const oh = hostnameOf(origin);
        if (!oh || !allowHosts.has(oh.toLowerCase())) return rpcError(reply, 403, `Invalid Origin '${origin}'`);
      }
    });

    // Stateless: no server-initiated stream, no session to delete.
    const notAllowed = async (_req: FastifyRequest, reply: FastifyReply) => {
      reply.header('Allow', 'POST');
      return rpcError(reply, 405, 'Method not allowed: this MCP endpoint is stateless; POST JSON-RPC messages to /mcp');
    };
    scope.get('/mcp', notAllowed);
    scope.delete('/mcp', notAllowed);

    await scope.register(async (authed) => {
      if (deps.rateLimitPerMinute) {
        await authed.register(rateLimit, {
          max: deps.rateLimitPerMinute,
          timeWindow: 60_000,
          keyGenerator: (req) => bearerOf(req) ?? req.ip,
          errorResponseBuilder: (_req, c) => new CrmError('RATE_LIMITED', `Rate limit of ${c.max} requests per minute exceeded; retry in ${Math.ceil(c.ttl / 1000)} s`),
        });
      }
      const checkToken = async (req: FastifyRequest, reply: FastifyReply) => {
        const refused = deps.authThrottle?.refusal(req.ip);
        if (refused) {
          setRetryAfter(reply, refused);
          return rpcError(reply, 429, refused.message, -32001);
        }
        const token = bearerOf(req);
        const actor = await authenticateNow(deps.db, token, 'mcp');
        if (!actor && req.headers.authorization) deps.authThrottle?.fail(req.ip);
        if (!actor) {
          reply.header('WWW-Authenticate', `Bearer realm="crm-mcp"${req.headers.authorization ? ', error="invalid_token"' : ''}`);
          return rpcError(
            reply,
            401,
            req.headers.authorization ? 'Invalid or revoked API token' : "Missing API token: send 'Authorization: Bearer ksr_...' (create one with `crm-mcp token create --role member`)",
            -32001,
          );
        }
        req.mcpActor = actor;
        return undefined;
      };
      /**
       * A cancellation of a call running in this process needs no database: the running call was
       * authenticated with this very token. It must not wait for the database either, which the
       * running call may hold in a transaction until it ends (the point of cancelling it).
       */
      authed.addHook('onRequest', async (req, reply) => {
        const token = bearerOf(req);
        if (req.method === 'POST' && req.routeOptions.url === '/mcp' && token && tokensInFlight.has(token)) {
          req.mcpCancelCandidate = true;
          return undefined;
        }
        return checkToken(req, reply);
      });
      authed.addHook('preHandler', async (req, reply) => {
        if (!req.mcpCancelCandidate) return undefined;
        const token = bearerOf(req)!;
        const messages = messagesOf(req.body);
        const cancels = messages.filter((m) => m.method === 'notifications/cancelled' && m.params?.requestId !== undefined && inFlight.get(flightKey(token, m.params.requestId)));
        if (cancels.length === 0 || cancels.length !== messages.length) return checkToken(req, reply);
        for (const m of cancels) cancelCall(token, m.params!.requestId!, m.params!.reason ?? 'cancelled', req.log);
        return reply.code(202).send();
      });

      authed.post('/mcp', async (req, reply) => {
        const token = bearerOf(req)!;
        // The transport would call a message with a wrong envelope a "Parse error" and, in a batch,
        // answer none of the others: say what is wrong, and let a batch's valid members run.
        let body: unknown = req.body;
        if (Array.isArray(body)) {
          if (body.length === 0)
            return reply.code(400).send({ jsonrpc: '2.0', id: null, error: { code: -32600, message: 'Invalid Request: an empty batch; send a message, or an array of one or more' } });
          const verdicts = body.map(invalidEnvelope);
          if (verdicts.every((v) => v !== undefined)) return reply.code(400).send(verdicts);
          body = body.map((m: unknown, i) => (verdicts[i] ? invalidMemberStandIn(verdicts[i], i) : m));
        } else {
          const invalid = invalidEnvelope(body);
          if (invalid) return reply.code(400).send(invalid);
        }
        const messages = messagesOf(body);
        for (const m of messages) if (m.method === 'notifications/cancelled' && m.params?.requestId !== undefined) cancelCall(token, m.params.requestId, m.params.reason ?? 'cancelled', req.log);
        const server = await createMcpServer({ db: deps.db, log: req.log, actor: req.mcpActor!, readOnly: deps.readOnly, toolsets: deps.toolsets, logLevel: 'notice' });
        const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined });
        const ids = messages.filter((m) => m.method === 'tools/call' && m.id !== undefined).map((m) => m.id!);
        let ended = false;
        const end = () => {
          if (ended) return;
          ended = true;
          for (const id of ids) {
            const k = flightKey(token, id);
            const v = inFlight.get(k);
            if (v === flight || v === null) inFlight.delete(k);
          }
          if (ids.length) {
            const n = (tokensInFlight.get(token) ?? 0) - ids.length;
            if (n > 0) tokensInFlight.set(token, n);
            else tokensInFlight.delete(token);
          }
          void transport.close();
          void server.close();
          if (!reply.raw.writableEnded) reply.raw.end();
        };
        // The SDK keeps the abort controllers of running handlers on the protocol object.
        const flight: Flight = {
          aborters: () => (server.server as unknown as { _requestHandlerAbortControllers?: Aborters })._requestHandlerAbortControllers,
          pending: new Set(ids),
          end,
        };
        for (const id of ids) {
          const k = flightKey(token, id);
          inFlight.set(k, inFlight.has(k) ? null : flight);
        }
        if (ids.length) tokensInFlight.set(token, (tokensInFlight.get(token) ?? 0) + ids.length);
        reply.hijack();
        passHeaders(reply);
        reply.raw.on('close', end);
        try {
          await server.connect(transport);
          await transport.handleRequest(req.raw, reply.raw, body);
        } catch (e) {
          req.log.error({ err: e }, 'MCP request failed');
          if (!reply.raw.headersSent)
            reply.raw.writeHead(500, { 'content-type': 'application/json' }).end(JSON.stringify({ jsonrpc: '2.0', error: { code: -32603, message: 'Internal error' }, id: null }));
        }
      });

      authed.get('/sse', async (req, reply) => {
        const token = bearerOf(req)!;
        const opened = req.mcpActor!;
        const place = await sseSlots.take(token);
        if (!place.ok && place.over === 'token') {
          reply.header('Retry-After', String(SSE_RETRY_AFTER_S));
          return rpcError(reply, 429, `This token has ${place.count} open SSE sessions, the most allowed (CRM_SSE_MAX_PER_TOKEN); close one, or use Streamable HTTP at /mcp, which holds no session`);
        }
        if (!place.ok) {
          reply.header('Retry-After', String(SSE_RETRY_AFTER_S));
          return rpcError(reply, 503, `The server has ${place.count} open SSE sessions, the most allowed (CRM_SSE_MAX_TOTAL); retry later, or use Streamable HTTP at /mcp`);
        }
        const release = place.release;
        reply.raw.once('close', release);
        // The client may have gone while the place was taken (a round trip to Redis).
        if (req.raw.destroyed) return release();
        // The session outlives the request: check the token again on every call, so revoking it ends the session's rights.
        const resolveActor = async () => {
          const a = await authenticateNow(deps.db, token, 'mcp');
          if (!a) throw new CrmError('UNAUTHORIZED', 'The API token of this session was revoked; reconnect with a valid token');
          return a;
        };
        const server = await createMcpServer({
          db: deps.db,
          log: req.log,
          resolveActor,
          readOnly: deps.readOnly,
          toolsets: deps.toolsets,
          watchSchema: true,
        });
        reply.hijack();
        passHeaders(reply);
        const transport = new SSEServerTransport('/messages', reply.raw);
        sessions.set(transport.sessionId, { transport, actor: opened });
        const ping = setInterval(() => reply.raw.write(': ping\n\n'), deps.sseKeepAliveMs ?? 25_000);
        ping.unref();
        reply.raw.on('close', () => {
          clearInterval(ping);
          sessions.delete(transport.sessionId);
          void server.close();
        });
        await server.connect(transport);
      });

      authed.post('/messages', async (req, reply) => {
        const id = (req.query as { sessionId?: string }).sessionId ?? '';
        const s = sessions.get(id);
        if (!s) return rpcError(reply, 404, `Unknown or closed SSE session '${id}': open a new one with GET /sse (behind a load balancer, /sse and /messages need sticky sessions)`);
        const a = req.mcpActor!;
        if (a.userId !== s.actor.userId || a.workspaceId !== s.actor.workspaceId) return rpcError(reply, 403, 'This SSE session belongs to another user');
        // The transport would refuse it with a bare 400 and the client would wait for an answer on the stream.
        const invalid = invalidEnvelope(req.body);
        if (invalid) {
          await s.transport.send(invalid);
          return reply.code(202).send();
        }
        reply.hijack();
        passHeaders(reply);
        await s.transport.handlePostMessage(req.raw, reply.raw, req.body);
      });
    });
  });

  // Before the HTTP server stops waiting for connections: open SSE streams would keep it waiting.
  app.addHook('preClose', async () => {
    for (const s of sessions.values()) await s.transport.close();
    sessions.clear();
  });
}
