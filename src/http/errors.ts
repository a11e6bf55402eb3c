import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { CrmError, isCrmError } from '../services/errors.js';

export interface ErrorBody {
  error: true;
  code: string;
  message: string;
  details?: Record<string, unknown>;
}

export function errorBody(e: CrmError): ErrorBody {
  const details = e.details ? Object.fromEntries(Object.entries(e.details).filter(([, v]) => v !== undefined)) : undefined;
  return { error: true, code: e.code, message: e.message, ...(details && Object.keys(details).length ? { details } : {}) };
}

/** Map Fastify's own errors (bad JSON, size limits) into the contract's codes. */
function fromFastify(err: FastifyError): CrmError | null {
  switch (err.code) {
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return new CrmError('VALIDATION_ERROR', `Malformed JSON body: ${err.message}`);
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return new CrmError('VALIDATION_ERROR', `Unsupported Content-Type: send JSON with 'Content-Type: application/json'`);
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return new CrmError('PAYLOAD_TOO_LARGE', 'Request body is too large');
  }
  if (err instanceof SyntaxError || /JSON/.test(err.message ?? '')) return new CrmError('VALIDATION_ERROR', `Malformed JSON body: ${err.message}`);
  if (err.statusCode === 429) return new CrmError('RATE_LIMITED', err.message);
  if (err.statusCode && err.statusCode >= 400 && err.statusCode < 500) return new CrmError('VALIDATION_ERROR', err.message);
  return null;
}

export function errorHandler(err: FastifyError, req: FastifyRequest, reply: FastifyReply) {
  const crm = isCrmError(err) ? err : fromFastify(err);
  if (crm) {
    if (crm.code === 'UNAUTHORIZED') reply.header('WWW-Authenticate', 'Bearer realm="crm-mcp"');
    // A full heavy-read lane (503) or a user's share of it (429) says when to come back.
    if (typeof crm.details?.retryAfterSeconds === 'number') reply.header('Retry-After', String(crm.details.retryAfterSeconds));
    return reply.status(crm.status).send(errorBody(crm));
  }
  // Unknown: log it fully, answer generically (no SQL, no stack on the wire).
  req.log.error({ err }, 'unhandled error');
  return reply.status(500).send({ error: true, code: 'INTERNAL_ERROR', message: 'Internal error; the server log has the details' });
}
