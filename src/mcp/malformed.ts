import type { Server } from '@modelcontextprotocol/sdk/server/index.js';
import { ErrorCode, McpError, type JSONRPCMessage } from '@modelcontextprotocol/sdk/types.js';

/**
 * Malformed JSON-RPC requests are the client's mistake and are answered as such: -32600 (invalid
 * request), -32602 (invalid params) or -32601 (unknown method), each with a short message saying what
 * was wrong and what is expected. The SDK alone would answer -32603 "internal error" with the
 * validator's issues as JSON, drop the line (stdio) or call it a parse error (Streamable HTTP).
 */

interface ZodLikeIssue {
  path: PropertyKey[];
  message: string;
  code?: string;
  expected?: string;
}
interface ZodLike {
  issues: ZodLikeIssue[];
}
const isZodLike = (e: unknown): e is ZodLike =>
  !!e && typeof e === 'object' && /ZodError/.test(String((e as { name?: unknown }).name)) && Array.isArray((e as ZodLike).issues);

const A: Record<string, string> = {
  record: 'an object',
  object: 'an object',
  string: 'a string',
  number: 'a number',
  int: 'an integer',
  boolean: 'a boolean',
  array: 'an array',
};

/** What a field holds, for the few a client is most likely to get wrong. */
const HINTS: Record<string, string> = {
  'tools/call params.name': ' (a tool name from tools/list)',
  'tools/call params.arguments': ' of argument names to values',
  'resources/read params.uri': ' (a resource URI from resources/list or resources/templates/list)',
  'prompts/get params.name': ' (a prompt name from prompts/list)',
  'prompts/get params.arguments': ' of argument names to string values',
};

function describeIssue(method: string, issue: ZodLikeIssue): string {
  const where = ['params', ...issue.path.filter((p) => p !== 'params').map(String)].join('.');
  const received = /received (\w+)/.exec(issue.message)?.[1];
  const expected = issue.expected && A[issue.expected];
  if (issue.code === 'invalid_type' && expected) {
    const hint = HINTS[`${method} ${where}`] ?? '';
    if (received === 'undefined') return `${where} is missing: it must be ${expected}${hint}`;
    return `${where} must be ${expected}${hint}${received ? `, not ${A[received] ?? received}` : ''}`;
  }
  // Other issues (a wrong enum value, a bad format): zod's own short sentence, after the field.
  return `${where}: ${issue.message.replace(/^Invalid input: /, '')}`.slice(0, 160);
}

function invalidParams(method: string, e: ZodLike): McpError {
  const parts = e.issues.slice(0, 3).map((i) => describeIssue(method, i));
  const message = `Invalid ${method} request: ${parts.join('; ')}${e.issues.length > 3 ? ` (and ${e.issues.length - 3} more)` : ''}`;
  const err = new McpError(ErrorCode.InvalidParams, message);
  // McpError prefixes "MCP error -32602: "; the client adds its own prefix: send the bare message.
  err.message = message;
  return err;
}

/** A request whose envelope is wrong (params not an object): -32600, with its id when it has a usable one. */
export function invalidEnvelope(raw: unknown): (JSONRPCMessage & { error: { code: number; message: string } }) | undefined {
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) return undefined;
  const m = raw as { id?: unknown; method?: unknown; params?: unknown };
  if (m.id === undefined) return undefined; // a notification: nothing to answer
  const id = typeof m.id === 'string' || typeof m.id === 'number' ? m.id : null;
  let message: string | undefined;
  if (typeof m.method !== 'string') message = 'Invalid Request: method must be a string (e.g. "tools/call")';
  else if (m.params !== undefined && (m.params === null || typeof m.params !== 'object' || Array.isArray(m.params)))
    message = `Invalid Request: params must be an object${m.method === 'tools/call' ? ' such as {"name": "crm_list_records", "arguments": {...}}' : ''}, not ${Array.isArray(m.params) ? 'an array' : m.params === null ? 'null' : `${A[typeof m.params] ?? typeof m.params}`}`;
  if (!message) return undefined;
  return { jsonrpc: '2.0', id: id as string | number, error: { code: ErrorCode.InvalidRequest, message } };
}

type Handler = (request: { method: string; params?: unknown }, extra: unknown) => Promise<unknown>;

/**
 * The SDK parses a request against its method's schema inside the handler it registers; a failure
 * escapes as a ZodError and is answered -32603 with the issues as JSON. Wrap every handler (those
 * registered later too) so that failure answers -32602 in words; and answer an unknown method with
 * the method's name. Reaches into the SDK's handler map (no public hook): the malformed-request
 * tests fail if an upgrade changes it.
 */
export function guardMalformedRequests(server: Server): void {
  const handlers = (server as unknown as { _requestHandlers: Map<string, Handler> })._requestHandlers;
  const guard =
    (method: string, handler: Handler): Handler =>
    async (request, extra) => {
      const bad = invalidEnvelope({ ...request, id: 0 });
      if (bad) throw Object.assign(new McpError(ErrorCode.InvalidRequest, bad.error.message), { message: bad.error.message });
      try {
        return await handler(request, extra);
      } catch (e) {
        throw isZodLike(e) ? invalidParams(method, e) : e;
      }
    };
  const set = handlers.set.bind(handlers);
  for (const [method, handler] of handlers) set(method, guard(method, handler));
  handlers.set = (method: string, handler: Handler) => set(method, guard(method, handler));
  server.fallbackRequestHandler = async (request) => {
    const message = `Unknown method '${request.method}': this server answers ${[...handlers.keys()].filter((m) => !m.startsWith('tasks/')).sort().join(', ')}`;
    throw Object.assign(new McpError(ErrorCode.MethodNotFound, message), { message });
  };
}
