import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { FastifyBaseLogger, FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { CrmError, fromDatabaseError, isCrmError } from '../services/errors.js';

export interface ErrorBody {
  error: true;
  code: string;
  message: string;
  details?: Record<string, unknown>;
}

/**
 * Headers on every answer, errors included: a JSON API is never to be sniffed as HTML, framed,
 * cached by a shared cache (answers carry workspace data) or leak its URL (ids) as a referrer.
 */
export const SECURITY_HEADERS: Record<string, string> = {
  'X-Content-Type-Options': 'nosniff',
  'Cache-Control': 'no-store',
  'X-Frame-Options': 'DENY',
  'Content-Security-Policy': "default-src 'none'; frame-ancestors 'none'",
  'Referrer-Policy': 'no-referrer',
};

export function errorBody(e: CrmError): ErrorBody {
  const details = e.details ? Object.fromEntries(Object.entries(e.details).filter(([, v]) => v !== undefined)) : undefined;
  return { error: true, code: e.code, message: e.message, ...(details && Object.keys(details).length ? { details } : {}) };
}

/** Map Fastify's own errors (bad JSON, size limits, router limits) into the contract's codes. */
function fromFastify(err: FastifyError): CrmError | null {
  switch (err.code) {
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return new CrmError('VALIDATION_ERROR', `Malformed JSON body: ${err.message}`);
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return new CrmError('UNSUPPORTED_MEDIA_TYPE', `Unsupported Content-Type: send JSON with 'Content-Type: application/json'`);
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return new CrmError('PAYLOAD_TOO_LARGE', 'Request body is too large');
    // The router refuses a path segment over maxParamLength (100) before any route runs: no id or name is that long.
    case 'FST_ERR_MAX_PARAM_LENGTH':
      return new CrmError('URI_TOO_LONG', 'A path segment is longer than 100 characters; ids and object names are shorter');
    case 'FST_ERR_BAD_URL':
      return new CrmError('VALIDATION_ERROR', 'Malformed URL: a path segment is not valid percent-encoding');
  }
  if (err instanceof SyntaxError || /JSON/.test(err.message ?? '')) return new CrmError('VALIDATION_ERROR', `Malformed JSON body: ${err.message}`);
  if (err.statusCode === 429) return new CrmError('RATE_LIMITED', err.message);
  if (err.statusCode === 408) return new CrmError('REQUEST_TIMEOUT', 'The request took too long to arrive');
  if (err.statusCode && err.statusCode >= 400 && err.statusCode < 500) return new CrmError('VALIDATION_ERROR', err.message);
  return null;
}

/** What an error means in the contract's catalogue; null: a bug (answered 500, logged). */
export function crmErrorOf(err: FastifyError): CrmError | null {
  return isCrmError(err) ? err : (fromDatabaseError(err) ?? fromFastify(err));
}

/**
 * An error that says when to come back (a full heavy-read lane, a user's share of it, the failed-auth
 * throttle) carries details.retryAfterSeconds; any other 503 (shutting down, a database busy with
 * another process: its details.retryAfter is that same second) is worth a retry after a second.
 */
export function setRetryAfter(reply: FastifyReply, crm: CrmError): void {
  const s = crm.details?.retryAfterSeconds;
  if (typeof s === 'number') reply.header('Retry-After', String(s));
  else if (crm.status === 503) reply.header('Retry-After', '1');
}

/**
 * The status, headers and body of the answer to `err`: a CrmError as the contract says; anything
 * else logged fully and answered generically (no SQL, no stack on the wire).
 */
function errorAnswer(err: unknown, req: FastifyRequest, reply: FastifyReply): object {
  const crm = crmErrorOf(err as FastifyError);
  if (!crm) {
    req.log.error({ err }, 'unhandled error');
    reply.status(500);
    return { error: true, code: 'INTERNAL_ERROR', message: 'Internal error; the server log has the details' };
  }
  if (crm.code === 'UNAUTHORIZED') reply.header('WWW-Authenticate', 'Bearer realm="crm-mcp"');
  setRetryAfter(reply, crm);
  reply.status(crm.status);
  return errorBody(crm);
}

/**
 * The error answer as an onSend hook gives it (a hook that refuses an answer already made: the error
 * handler is not called again for a reply it has answered): status, headers and the JSON body.
 */
export function errorPayload(err: unknown, req: FastifyRequest, reply: FastifyReply): string {
  reply.header('content-type', 'application/json; charset=utf-8');
  reply.removeHeader('content-disposition');
  return JSON.stringify(errorAnswer(err, req, reply));
}

export function errorHandler(err: FastifyError, req: FastifyRequest, reply: FastifyReply) {
  // Errors answered outside the hooks (router limits) have not had these yet.
  reply.headers(SECURITY_HEADERS);
  return reply.send(errorAnswer(err, req, reply));
}

/** Fastify's router errors (over-long or malformed path), answered before any hook: same shape as the rest. */
export function frameworkErrorHandler(err: FastifyError, req: FastifyRequest, reply: FastifyReply) {
  const crm = fromFastify(err) ?? new CrmError('VALIDATION_ERROR', 'Malformed request');
  req.log.info({ method: req.method, status: crm.status, code: crm.code }, 'request');
  return errorHandler(crm as unknown as FastifyError, req, reply);
}

/**
 * Node's HTTP parser answers some requests before Fastify sees them: headers too large (431), a
 * request not fully received in time (408), unparsable bytes (400). Answer those in the contract's
 * shape too, on the raw socket, then drop the connection (its state is unknown).
 */
export function clientErrorHandler(this: { log: FastifyBaseLogger } | undefined, err: NodeJS.ErrnoException, socket: Socket) {
  if (err.code === 'ECONNRESET' || socket.destroyed) return;
  const crm =
    err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
      ? new CrmError('REQUEST_TIMEOUT', 'The request (headers and body) took too long to arrive; send it faster or in smaller parts')
      : err.code === 'HPE_HEADER_OVERFLOW'
        ? new CrmError('HEADERS_TOO_LARGE', 'Request headers are too large (over 16 KB in all)')
        : new CrmError('VALIDATION_ERROR', 'Malformed HTTP request');
  // As Node itself does: write only when no answer to this connection's request has started.
  const pending = (socket as Socket & { _httpMessage?: { headersSent?: boolean; statusCode: number } })._httpMessage;
  // One access-log line either way, so slow or broken clients (slowloris) show in the log. A request
  // Fastify already has (a body too slow) is logged by its own line when the connection closes: give
  // it the status sent. Otherwise (headers too slow, too large, unparsable) no request exists: log
  // here, with the address it came from (Fastify binds `this` to the instance).
  if (pending && !pending.headersSent) pending.statusCode = crm.status;
  else if (!pending) this?.log.info({ status: crm.status, code: crm.code, reason: err.code, remote: socket.remoteAddress }, 'request');
  if (socket.writable && !pending?.headersSent) {
    const body = JSON.stringify(errorBody(crm));
    const headers = { 'Content-Type': 'application/json; charset=utf-8', 'Content-Length': String(Buffer.byteLength(body)), Connection: 'close', ...SECURITY_HEADERS };
    socket.write(
      `HTTP/1.1 ${crm.status} ${STATUS_TEXT[crm.status] ?? 'Error'}\r\n${Object.entries(headers)
        .map(([k, v]) => `${k}: ${v}`)
        .join('\r\n')}\r\n\r\n${body}`,
    );
  }
  socket.destroy();
}

/**
 * Node answers a request with an Expect header other than 100-continue itself, with an empty 417
 * and none of the headers above, unless the server handles 'checkExpectation'. Answer it in the
 * contract's shape, log it like any request, and close (the client may be sending a body or not).
 */
export function expectationHandler(log: FastifyBaseLogger) {
  return (req: IncomingMessage, res: ServerResponse) => {
    const started = performance.now();
    // An HTTP-only status, as 408/414/431: no service ever raises it, so it is not in the catalogue.
    const body = JSON.stringify({
      error: true,
      code: 'EXPECTATION_FAILED',
      message: `Unsupported 'Expect: ${String(req.headers.expect).slice(0, 40)}': the only expectation this server meets is 100-continue; send the request without it`,
    } satisfies ErrorBody);
    res.writeHead(417, { 'Content-Type': 'application/json; charset=utf-8', 'Content-Length': String(Buffer.byteLength(body)), Connection: 'close', ...SECURITY_HEADERS });
    res.end(body);
    log.info(
      {
        method: req.method,
        route: (req.url ?? '').split('?')[0]!.slice(0, 200),
        status: 417,
        code: 'EXPECTATION_FAILED',
        ms: Math.round((performance.now() - started) * 10) / 10,
        remote: req.socket.remoteAddress,
      },
      'request',
    );
  };
}

const STATUS_TEXT: Record<number, string> = { 400: 'Bad Request', 408: 'Request Timeout', 431: 'Request Header Fields Too Large' };
