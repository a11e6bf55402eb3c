import { classifyDbError, type DialectAdapter } from '../db/dialect.js';

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
  /**
   * A well-formed read that exceeds a budget (answer size, time): retrying the same request will
   * not help, narrowing it will. 422 rather than 400: the request is valid, just too large to run.
   */
  QUERY_TOO_EXPENSIVE: 422,
  RATE_LIMITED: 429,
  /** HTTP only: answered by Node's parser before any route runs. */
  HEADERS_TOO_LARGE: 431,
  /** The client gave up (MCP notifications/cancelled); the work was rolled back. */
  CANCELLED: 499,
  INTERNAL_ERROR: 500,
  /** Retry after Retry-After seconds: the server is shutting down, or another process held the database's write lock longer than a write may wait. */
  SERVICE_UNAVAILABLE: 503,
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

/** Seconds a client should wait before retrying a write refused because the database was busy. */
export const BUSY_RETRY_AFTER_S = 1;

/** Metadata tables whose unique names a client chooses, by what the client calls them. */
const META_TABLES: Record<string, string> = { workspaces: 'A workspace', objects: 'An object', fields: 'A field', pipelines: 'A pipeline', pipeline_steps: 'A pipeline step', users: 'A user' };

/**
 * A database driver's error the surfaces can answer as the contract's 4xx/503 rather than 500: a
 * unique constraint the service did not check for itself (two concurrent creates of one name: the
 * database is the one place that sees both), or the write lock held by another process past the
 * wait. Null: a bug, answered 500 and logged.
 */
export function fromDatabaseError(e: unknown): CrmError | null {
  const kind = classifyDbError(e);
  if (!kind) return null;
  if (kind.kind === 'busy') return new CrmError('SERVICE_UNAVAILABLE', `The database is busy with another process's writes; retry in ${BUSY_RETRY_AFTER_S} s`, { retryAfter: BUSY_RETRY_AFTER_S });
  // Heavy reads turn their own time limit into QUERY_TOO_EXPENSIVE (runRead); any other is a bug.
  if (kind.kind === 'timeout') return null;
  if (kind.kind === 'value') return new CrmError('VALIDATION_ERROR', `${kind.what}; shorten or change it`);
  // Only where a client's value can collide: a record table (a unique field), a name in the
  // metadata tables, a link between two records. Anywhere else (the search index, the migrations'
  // table, a token's hash, an id the server generated) a duplicate is a bug: 500, logged.
  const meta = kind.table !== null && Object.hasOwn(META_TABLES, kind.table) ? META_TABLES[kind.table]! : null;
  const isRecordTable = kind.table !== null && /^w\d+_/.test(kind.table);
  // (No table named, as for a unique index on an expression: none is internal today; kept as the client's.)
  if (kind.table !== null && !isRecordTable && kind.table !== 'associations' && (!meta || kind.columns.includes('id'))) return null;
  // Named after what the client knows: a record table's columns are its fields' names; the metadata
  // tables' own columns are not shown.
  const cols = isRecordTable || meta ? kind.columns.filter((c) => c !== 'workspace_id' && c !== 'object_id') : [];
  const what = meta ?? 'A record';
  return new CrmError('DUPLICATE_RECORD', `${what} with the same ${cols.length ? cols.join(', ') : 'unique value'} already exists`, cols.length ? { fields: cols } : undefined);
}

/**
 * For `.catch()` on a write that creates a name (a workspace, an object, a field, a pipeline): the
 * service checked the name before, but two concurrent calls can both pass that check; the
 * database's unique constraint on `table` decides, and the loser answers DUPLICATE_RECORD with
 * `message`. Any other error goes on unchanged.
 */
export function duplicateOn(adapter: DialectAdapter, table: string, message: string): (e: unknown) => never {
  return (e) => {
    const kind = adapter.classifyError(e);
    if (kind?.kind === 'unique' && kind.table === table) throw new CrmError('DUPLICATE_RECORD', message);
    throw e;
  };
}
