import { type CallToolResult, ErrorCode, McpError } from '@modelcontextprotocol/sdk/types.js';
import type { Log } from '../services/context.js';
import { type CrmError, fromDatabaseError, isCrmError } from '../services/errors.js';

const GENERIC = 'Internal error in the CRM server; the server log has the details. Retrying will not help until it is fixed.';

interface RowError {
  index: number;
  code: string;
  message: string;
}

/** The service's message already names the fix (valid fields, allowed values, limits); batches add every failing row. */
function describe(e: CrmError): string {
  let text = `${e.code}: ${e.message}`;
  const rows = e.details?.errors as RowError[] | undefined;
  if (Array.isArray(rows) && rows.length > 1) {
    const shown = rows.slice(0, 100).map((r) => `#${r.index} ${r.code}: ${r.message}`);
    text += `\nFailing rows:\n${shown.join('\n')}${rows.length > 100 ? `\n... and ${rows.length - 100} more` : ''}`;
  }
  return text;
}

/** A tool's failure as the model should see it: isError with the fix, never a stack or SQL. */
export function toolError(e: unknown, log: Log, tool: string): CallToolResult {
  e = fromDatabaseError(e) ?? e;
  if (isCrmError(e)) return { isError: true, content: [{ type: 'text', text: describe(e) }] };
  log.error({ err: e, tool }, 'MCP tool failed');
  return { isError: true, content: [{ type: 'text', text: GENERIC }] };
}

/**
 * McpError prefixes its message with "MCP error <code>: ", and the client's McpError prefixes the
 * message it receives again: send the bare message, so the client shows the prefix once.
 */
function bare(err: McpError, message: string): McpError {
  err.message = message;
  return err;
}

/** Resources and prompts answer JSON-RPC errors instead of tool results. */
export function protocolError(e: unknown, log: Log, what: string): McpError {
  e = fromDatabaseError(e) ?? e;
  if (isCrmError(e)) {
    const notFound = e.code === 'INVALID_OBJECT' || e.code === 'RECORD_NOT_FOUND' || e.code === 'NOT_FOUND';
    // -32002: the MCP spec's code for a resource that does not exist.
    return bare(new McpError(notFound ? -32002 : ErrorCode.InvalidParams, describe(e), e.details), describe(e));
  }
  log.error({ err: e, what }, 'MCP request failed');
  return bare(new McpError(ErrorCode.InternalError, GENERIC), GENERIC);
}
