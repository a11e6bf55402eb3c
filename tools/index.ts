import type { ToolDef } from '../src/mcp/tool.js';
import associate from './associate.js';
import batchWrite from './batch-write.js';
import createRecord from './create-record.js';
import deleteRecord from './delete-record.js';
import describeSchema from './describe-schema.js';
import dissociate from './dissociate.js';
import getRecord from './get-record.js';
import search from './search.js';
import updateRecord from './update-record.js';
import whoami from './whoami.js';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type AnyTool = ToolDef<any, any>;

/**
 * Every MCP tool, in the order clients list them. Explicit on purpose: the server, the read-only
 * mode, the tests and the table in docs/mcp.md all read this list.
 */
export const TOOLS: readonly AnyTool[] = [
  describeSchema,
  search,
  getRecord,
  createRecord,
  updateRecord,
  deleteRecord,
  batchWrite,
  associate,
  dissociate,
  whoami,
];
