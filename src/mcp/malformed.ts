import { randomUUID } from 'node:crypto';
import type { Server } from '@modelcontextprotocol/sdk/server/index.js';
import { ErrorCode, type JSONRPCMessage, McpError } from '@modelcontextprotocol/sdk/types.js';

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
const isZodLike = (e: unknown): e is ZodLike => !!e && typeof e === 'object' && /ZodError/.test(String((e as { name?: unknown }).name)) && Array.isArray((e as ZodLike).issues);

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

const isRequestId = (v: unknown): v is string | number => typeof v === 'string' || (typeof v === 'number' && Number.isInteger(v));
const isPlainObject = (v: unknown): v is Record<string, unknown> => !!v && typeof v === 'object' && !Array.isArray(v);

/** A value as the client wrote it, for a message saying what it sent. */
function described(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (typeof v === 'number') return String(v);
  if (typeof v === 'string') return JSON.stringify(v.length > 20 ? `${v.slice(0, 20)}…` : v);
  return A[typeof v] ?? typeof v;
}

export type InvalidAnswer = JSONRPCMessage & { id: string | number | null; error: { code: number; message: string } };

/**
 * A message whose envelope is wrong, answered -32600 with the field named: not an object, jsonrpc
 * not "2.0", an id that is not a string or an integer (MCP allows no null id), a method that is not a
 * string, params or params._meta not an object, a progress token that is not a string or an
 * integer. The transports would call all of these a parse error (-32700), though the JSON parsed.
 * The answer carries the message's id when it has a usable one, else null (JSON-RPC's rule); an
 * invalid notification is answered too (it is no valid notification; JSON-RPC answers it with id null).
 */
export function invalidEnvelope(raw: unknown): InvalidAnswer | undefined {
  const answer = (id: string | number | null, message: string): InvalidAnswer =>
    ({ jsonrpc: '2.0', id, error: { code: ErrorCode.InvalidRequest, message: `Invalid Request: ${message}` } }) as InvalidAnswer;
  if (!isPlainObject(raw)) return answer(null, `a JSON-RPC message must be an object such as {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, not ${described(raw)}`);
  const m = raw as { jsonrpc?: unknown; id?: unknown; method?: unknown; params?: unknown; result?: unknown; error?: unknown };
  const id = isRequestId(m.id) ? m.id : null;
  if (m.jsonrpc !== '2.0') return answer(id, `jsonrpc must be "2.0"${m.jsonrpc === undefined ? ' and is missing' : `, not ${described(m.jsonrpc)}`}`);
  if ('id' in m && !isRequestId(m.id)) return answer(null, `id must be a string or an integer, not ${described(m.id)}`);
  // A client's answer to a server request (no method): the SDK checks the rest.
  if (m.method === undefined && 'id' in m && ('result' in m || 'error' in m)) return undefined;
  if (typeof m.method !== 'string') return answer(id, 'method must be a string (e.g. "tools/call")');
  if (m.params !== undefined && !isPlainObject(m.params))
    return answer(id, `params must be an object${m.method === 'tools/call' ? ' such as {"name": "crm_list_records", "arguments": {...}}' : ''}, not ${described(m.params)}`);
  const meta = (m.params as { _meta?: unknown } | undefined)?._meta;
  if (meta !== undefined && !isPlainObject(meta)) return answer(id, `params._meta must be an object, not ${described(meta)}`);
  const token = (meta as { progressToken?: unknown } | undefined)?.progressToken;
  if (token !== undefined && !isRequestId(token)) return answer(id, `params._meta.progressToken must be a string or an integer, not ${described(token)}`);
  return undefined;
}

/**
 * A batch's invalid member is handed to the SDK in its place as a request of this method (unguessable,
 * so no client can call it), whose handler answers the member's -32600: the SDK's transport answers a
 * batch as one stream, and this lets the valid members run and be answered beside it.
 */
export const INVALID_MEMBER_METHOD = `crm/invalid-member/${randomUUID()}`;

/** The stand-in for invalid batch member `index`: its id when usable, else one naming its place. */
export function invalidMemberStandIn(answer: InvalidAnswer, index: number): JSONRPCMessage {
  const id = answer.id ?? `invalid-batch-member-${index}`;
  return { jsonrpc: '2.0', id, method: INVALID_MEMBER_METHOD, params: { message: answer.error.message } } as JSONRPCMessage;
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
      const bad = invalidEnvelope({ jsonrpc: '2.0', ...request, id: 0 });
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
    if (request.method === INVALID_MEMBER_METHOD) {
      const message = String((request.params as { message?: unknown } | undefined)?.message);
      throw Object.assign(new McpError(ErrorCode.InvalidRequest, message), { message });
    }
    const message = `Unknown method '${request.method}': this server answers ${[...handlers.keys()]
      .filter((m) => !m.startsWith('tasks/'))
      .sort()
      .join(', ')}`;
    throw Object.assign(new McpError(ErrorCode.MethodNotFound, message), { message });
  };
}
