/**
 * The error catalogue. Services throw CrmError; each surface maps it once
 * (HTTP: status + {error, code, message}; MCP: isError + message).
 */
export const ERROR_STATUS = {
  INVALID_OBJECT: 400,
  MISSING_REQUIRED_FIELD: 400,
  VALIDATION_ERROR: 400,
  UNAUTHORIZED: 401,
  PERMISSION_DENIED: 403,
  RECORD_NOT_FOUND: 404,
  NOT_FOUND: 404,
  /** The client took too long to send its request (HTTP only: header or body timeout). */
  REQUEST_TIMEOUT: 408,
  DUPLICATE_RECORD: 409,
  PAYLOAD_TOO_LARGE: 413,
  /** A path segment (id, object name) longer than any the API uses (HTTP only). */
  URI_TOO_LONG: 414,
  UNSUPPORTED_MEDIA_TYPE: 415,
  RATE_LIMITED: 429,
  /** HTTP only: answered by Node's parser before any route runs. */
  HEADERS_TOO_LARGE: 431,
  /** The client gave up (MCP notifications/cancelled); the work was rolled back. */
  CANCELLED: 499,
  INTERNAL_ERROR: 500,
  /** The server is shutting down (or cannot take more work now): retry, after Retry-After seconds. */
  SERVICE_UNAVAILABLE: 503,
} as const;

export type ErrorCode = keyof typeof ERROR_STATUS;

export class CrmError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  /** Machine-readable extras (valid fields, allowed values, per-row errors). Safe to expose. */
  readonly details: Record<string, unknown> | undefined;

  constructor(code: ErrorCode, message: string, details?: Record<string, unknown>) {
    super(message);
    this.name = 'CrmError';
    this.code = code;
    this.status = ERROR_STATUS[code];
    this.details = details;
  }
}

export const isCrmError = (e: unknown): e is CrmError => e instanceof CrmError;

export function validationError(message: string, details?: Record<string, unknown>): CrmError {
  return new CrmError('VALIDATION_ERROR', message, details);
}
