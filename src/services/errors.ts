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
  DUPLICATE_RECORD: 409,
  PAYLOAD_TOO_LARGE: 413,
  /**
   * A well-formed read that exceeds a budget (answer size, time): retrying the same request will
   * not help, narrowing it will. 422 rather than 400: the request is valid, just too large to run.
   */
  QUERY_TOO_EXPENSIVE: 422,
  RATE_LIMITED: 429,
  /** The client gave up (MCP notifications/cancelled); the work was rolled back. */
  CANCELLED: 499,
  INTERNAL_ERROR: 500,
  /** The heavy-read lane is full; the answer carries Retry-After. */
  OVERLOADED: 503,
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
